"""``mlp validate``: every spec, param and source mistake is one line, in seconds, exit 2."""

import time
from dataclasses import replace

import numpy as np
import pytest

from tasks.cli import main
from tasks.data.idx import write_idx
from tasks.spec import catalog
from tasks.steps.validate import ValidationError, ensure_valid, validate


def fields(problems):
    return [p.field.split(" ")[-1] for p in problems]


def test_every_shipped_use_case_validates_its_spec():
    for name in catalog.names():
        spec = catalog.get(name)
        # Source files are checked separately, a registered parent model by its own test;
        # the spec itself must be consistent.
        problems = [p for p in validate(spec, {}, "/nonexistent")
                    if p.field != "source" and not p.field.endswith("model.parent")]
        assert problems == [], (name, problems)


def test_breast_cancer_with_its_bundled_source_is_valid():
    assert validate(catalog.get("breast_cancer"), {"epochs": 3}) == []


def test_wrong_label_stratify_and_feature_columns_are_named():
    spec = catalog.get("breast_cancer")
    bad = replace(spec, preprocess=replace(spec.preprocess, label="diagnosis"),
                  split=replace(spec.split, stratify_by="klass"))
    problems = validate(bad, {})
    assert fields(problems)[:2] == ["preprocess.label", "split.stratify_by"]
    assert "'diagnosis' is not a column" in str(problems[0])
    assert "target" in str(problems[0])  # the fix: the columns it could be
    assert str(problems[0]).startswith("models/breast_cancer.py preprocess.label:")


def test_unknown_wrongly_typed_and_out_of_bounds_params():
    spec = catalog.get("mnist")
    problems = validate(spec, {"foo": 1, "epoch": 3, "epochs": 500, "batch_size": "big",
                               "variant": "rnn", "learning_rate": 0.0}, "/nonexistent")
    text = [str(p) for p in problems]
    assert text[0].startswith("--param foo: unknown run param; known: ")
    assert "did you mean 'epochs'?" in text[1]
    assert "--param epochs: 500 is above the maximum 200" in text
    assert any(t.startswith("--param batch_size: 'big' is not of type integer") for t in text)
    assert "--param variant: 'rnn' is not one of ['softmax', 'dnn', 'cnn']" in text
    assert "--param learning_rate: 0.0 is below the minimum 1e-06" in text
    # a boolean is not an integer in JSON schema
    assert validate(spec, {"epochs": True}, "/nonexistent")[0].field == "--param epochs"


def test_gate_metric_must_be_one_the_objective_produces():
    spec = catalog.get("breast_cancer")
    bad = replace(spec, gate=replace(spec.gate, metric="test_rmse"))
    (p,) = validate(bad, {})
    assert p.field.endswith("gate.metric")
    assert "'test_rmse' is not a metric the 'binary' objective produces" in p.message
    assert "test_roc_auc" in p.message


def test_gate_baseline_must_be_a_metric_the_objective_produces():
    spec = catalog.get("ptb_lm")
    bad = replace(spec, gate=replace(spec.gate, baseline="baseline_kn_ppl"))
    # the source is another check (Debian's text packages may not be installed yet)
    (p,) = [q for q in validate(bad, {}) if q.field != "source"]
    assert p.field.endswith("gate.baseline") and "'baseline_kn_ppl'" in p.message
    # declared extra metrics count (taxi_fare's fitted slope)
    taxi = catalog.get("taxi_fare")
    ok = replace(taxi, gate=replace(taxi.gate, metric="slope_error_pct"))
    assert [q for q in validate(ok, {}, "/x") if q.field != "source"] == []


def test_class_names_must_match_the_label_classes(mnist_dir):
    spec = catalog.get("mnist")
    bad = replace(spec, model=replace(spec.model, class_names=("a", "b", "c")))
    (p,) = validate(bad, {}, str(mnist_dir))
    assert p.field.endswith("model.class_names")
    assert "3 names but the label 'label' has 10 classes" in p.message


def test_missing_and_malformed_source_files_are_named(mnist_dir, tmp_path):
    spec = catalog.get("mnist")
    assert validate(spec, {}, str(mnist_dir)) == []
    (p,) = validate(spec, {}, str(tmp_path / "nowhere"))
    assert p.field == "source" and "source directory does not exist" in p.message
    assert "--source DIR" in p.message
    # image dims wrong: read from the IDX header only
    write_idx(mnist_dir / "t10k-images-idx3-ubyte.gz", np.zeros((100, 20, 20), np.uint8))
    (p,) = validate(spec, {}, str(mnist_dir))
    assert "t10k-images-idx3-ubyte.gz: image dims [20, 20] differ from expected [28, 28]" \
        in p.message
    # label count differs from image count
    write_idx(mnist_dir / "t10k-images-idx3-ubyte.gz", np.zeros((99, 28, 28), np.uint8))
    (p,) = validate(spec, {}, str(mnist_dir))
    assert "label count 100 does not match image count 99" in p.message


def test_tabular_header_mismatch_is_named(tmp_path):
    spec = catalog.get("taxi_fare")
    (tmp_path / "taxi.csv").write_text("distance,fare\n1.0,2000\n")
    (p,) = validate(spec, {}, str(tmp_path))
    assert "taxi.csv: columns do not match the schema: missing ['distance_km']" in p.message


def test_ensure_valid_raises_one_line_per_problem():
    spec = catalog.get("breast_cancer")
    with pytest.raises(ValidationError) as err:
        ensure_valid(spec, {"foo": 1, "epochs": 0})
    assert str(err.value).splitlines() == [
        "breast_cancer --param foo: unknown run param; known: batch_size, epochs, "
        "force_deploy, force_drift, force_drift_reason, force_reason, learning_rate, "
        "max_bad_fraction, require_approval, rollout, source_dir",
        "breast_cancer --param epochs: 0 is below the minimum 1",
    ]


@pytest.mark.parametrize("argv, expected", [
    (["run", "breast_cancer", "--param", "foo=1"], "mlp run: --param foo: unknown run param"),
    (["retrain", "breast_cancer", "--param", "foo=1"],
     "mlp retrain: --param foo: unknown run param"),
    (["run", "breast_cancer", "--param", "foo"], "mlp run: --param 'foo': expected KEY=VALUE"),
    (["run", "breast_cancer", "--logical-date", "yesterday"],
     "mlp run: --logical-date 'yesterday': expected an ISO date"),
    (["run", "breast_cancr"], "did you mean 'breast_cancer'?"),
    (["run", "mnist", "--epochs", "500"], "mlp run: --param epochs: 500 is above the maximum"),
    (["run", "mnist", "--source", "/nonexistent"], "mlp run: source: /nonexistent: source "
                                                   "directory does not exist"),
    (["validate", "mnist", "--param", "variant=rnn"], "mlp validate: --param variant: 'rnn'"),
    (["validate", "nosuch"], "unknown use case 'nosuch'"),
])
def test_cli_user_errors_are_one_line_exit_2_in_seconds(argv, expected, capsys, monkeypatch):
    def must_not_start(*args, **kwargs):
        raise AssertionError("a run started despite a user error")

    # retrain first: importing it binds local.run_pipeline, which must be the real one then.
    monkeypatch.setattr("tasks.operations.retrain.retrain", must_not_start)
    monkeypatch.setattr("tasks.operations.local.run_pipeline", must_not_start)
    started = time.perf_counter()
    assert main(argv) == 2
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err
    assert all(line.startswith(f"mlp {argv[0]}: ") for line in err.splitlines())
    assert seconds < 10, seconds  # nothing started: no Airflow, no TensorFlow


def test_cli_validate_ok(mnist_dir, capsys):
    assert main(["validate", "mnist", "--source", str(mnist_dir), "--param", "epochs=1"]) == 0
    assert "mnist: valid" in capsys.readouterr().out


def test_missing_or_skipped_dag_file_is_named(tmp_path, monkeypatch):
    from tasks.steps import validate as v

    spec = catalog.get("breast_cancer")
    monkeypatch.setattr("tasks.core.config.REPO_ROOT", tmp_path)
    (tmp_path / "dags").mkdir()
    (p,) = v.check_dag_file(spec)
    assert p.field == "dags/breast_cancer.py" and p.message.startswith("missing (Airflow")
    # Without the word "airflow" Airflow's safe mode never parses the file.
    (tmp_path / "dags" / "breast_cancer.py").write_text(
        'from tasks.orchestration import build_dag\n\ndag = build_dag("breast_cancer")\n')
    (p,) = v.check_dag_file(spec)
    assert "a DAG file must contain the word 'airflow'" in p.message
    (tmp_path / "dags" / "breast_cancer.py").write_text(
        '"""Airflow DAG."""\nfrom tasks.orchestration import build_dag\n\n'
        'dag = build_dag("breast_cancer")\n')
    assert v.check_dag_file(spec) == []
    # The parsing-context guard must name the same use case, or Airflow's workers skip it.
    (tmp_path / "dags" / "breast_cancer.py").write_text(
        '"""Airflow DAG."""\nfrom tasks.orchestration import build_dag, wanted\n\n'
        'if wanted("breast_cancr"):\n    dag = build_dag("breast_cancer")\n')
    (p,) = v.check_dag_file(spec)
    assert 'write `if wanted("breast_cancer"):`' in p.message
    from tasks.operations.scaffold import DAG_TEMPLATE

    (tmp_path / "dags" / "breast_cancer.py").write_text(
        DAG_TEMPLATE.format(name="breast_cancer"))
    assert v.check_dag_file(spec) == []

    # The file is parsed: a call in a comment is no call, quoting does not matter, and a
    # syntax error is named by its line.
    (tmp_path / "dags" / "breast_cancer.py").write_text(
        '"""Airflow DAG."""\n# dag = build_dag("breast_cancer")\n')
    (p,) = v.check_dag_file(spec)
    assert p.message.startswith('does not call build_dag("breast_cancer")')
    (tmp_path / "dags" / "breast_cancer.py").write_text(
        "\"\"\"Airflow DAG.\"\"\"\nfrom tasks.orchestration import build_dag, wanted\n\n"
        "if wanted('breast_cancer'):  # not wanted(\"other\")\n"
        "    dag = build_dag('breast_cancer')\n")
    assert v.check_dag_file(spec) == []
    (tmp_path / "dags" / "breast_cancer.py").write_text(
        '"""Airflow DAG."""\nif wanted("breast_cancer")\n    dag = build_dag("breast_cancer")\n')
    (p,) = v.check_dag_file(spec)
    assert p.message.startswith("line 2: ") and "Airflow cannot import it" in p.message


def test_a_missing_parent_model_is_reported_before_any_data_is_landed(own_mlflow, capsys):
    assert main(["validate", "object_detection"]) == 2
    err = capsys.readouterr().err
    assert "model.parent" in err and "run `mlp run cifar10`" in err, err
    assert "Traceback" not in err  # reported by mlp validate, before any data is landed
    # Built from scratch, the detector needs no parent.
    assert main(["validate", "object_detection", "--param", "backbone=scratch"]) == 0


def _shop(tmp_path, features, label_values=("browser", "buyer"), objective="binary"):
    from tasks.data.sources import Column, TabularSource
    from tasks.spec import Feature, PreprocessSpec

    spec = catalog.get("breast_cancer")
    (tmp_path / "shop.csv").write_text("minutes,region,outcome\n3.5,north,buyer\n"
                                       ",south,browser\n4.0,east,buyer\n")
    source = TabularSource(columns=(Column("minutes"), Column("region", dtype="string"),
                                    Column("outcome", dtype="string", values=label_values)),
                           layout={"all": "shop.csv"}, default_location=str(tmp_path))
    return replace(spec, name="shop", source=source,
                   preprocess=PreprocessSpec(features=tuple(Feature(*f) for f in features),
                                             label="outcome"),
                   split=replace(spec.split, stratify_by=None),
                   model=replace(spec.model, label_key="outcome", objective=objective,
                                 class_names=tuple(label_values)))


def test_a_number_transform_on_a_text_column_is_refused_with_the_fix(tmp_path):
    spec = _shop(tmp_path, [("minutes", "zscore"), ("region", "zscore")])
    (p,) = validate(spec, {}, dag_file=False)
    assert str(p) == ("models/shop.py preprocess.features: Feature('region', 'zscore'): the "
                      "column holds text; a number transform cannot take it: use "
                      "Feature('region', \"onehot\") (or \"vocab\" for an embedding), or make "
                      "the column numeric")
    assert validate(_shop(tmp_path, [("minutes", "zscore"), ("region", "onehot")]), {},
                    dag_file=False) == []
    wrong = _shop(tmp_path, [("minutes", "zscore")], objective="regression")
    assert any("holds text (class names)" in str(p) for p in validate(wrong, {},
                                                                      dag_file=False))


def test_dirty_rows_are_found_in_seconds_and_max_bad_fraction_is_a_run_param(tmp_path,
                                                                             capsys):
    from tasks.steps.validate import check_rows

    spec = _shop(tmp_path, [("minutes", "zscore"), ("region", "onehot")])
    started = time.perf_counter()
    problems, notes = check_rows(spec, {})
    assert time.perf_counter() - started < 5
    assert str(problems[0]) == (
        f"source rows: 1 of 3 rows are bad (max_bad_fraction 0); first: {tmp_path}/shop.csv "
        "line 3 field 'minutes': missing value (value ''). Fix the file, or quarantine the "
        "bad rows with --param max_bad_fraction=0.4")
    assert str(problems[1]).endswith("field 'minutes': missing value: 1 row (line 3)")
    problems, notes = check_rows(spec, {"max_bad_fraction": 0.4})
    assert problems == [] and notes[0] == "1 of 3 rows will be quarantined " \
                                          "(max_bad_fraction 0.4):"
    assert [str(p) for p in validate(spec, {"max_bad_fraction": "lots"}, dag_file=False)] == [
        "--param max_bad_fraction: 'lots' is not a fraction in [0, 1]; e.g. --param "
        "max_bad_fraction=0.01"]
