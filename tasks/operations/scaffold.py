"""``mlp new``: start a use case from a commented template, an existing one, or a CSV.

Writes exactly two files, ``models/<name>.py`` (the spec) and ``dags/<name>.py`` (the
three-line DAG file Airflow reads), and nothing else. The new use case passes ``mlp
validate`` and runs as written:

- ``mlp new NAME``: a commented tabular classifier on scikit-learn's iris data (real,
  150 rows, bundled with scikit-learn), to edit into the author's own;
- ``mlp new NAME --from USE_CASE``: a copy of an existing use case under the new name;
- ``mlp new NAME --from-csv FILE``: the ``Column`` list inferred from the file (dtype,
  observed min/max, allowed values of low-cardinality columns), the last column as the
  label, the objective guessed from it (classification, binary or regression).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.config import REPO_ROOT
from tasks.spec import catalog

LOW_CARDINALITY = 20  # distinct values up to which a column lists its allowed values
DAG_TEMPLATE = '''"""Airflow DAG: {name} (spec in models/{name}.py)."""

from tasks.orchestration import build_dag, wanted

if wanted("{name}"):  # Airflow parsing for another DAG skips this one
    dag = build_dag("{name}")
'''


class ScaffoldError(ValueError):
    """The new use case cannot be written; the message says why and what to do."""


CATEGORY_INTS = 10  # integer columns with at most this many values are categories
TOP_K = 20  # text columns with more values keep their TOP_K most frequent (one-hot)
# Names of a row-number column (R's write.csv, pandas' to_csv with its index)
ROW_ID_NAMES = {"", "rownames", "unnamed: 0", "index", "id", "row", "row_id", "rowid"}


@dataclass(frozen=True)
class InferredColumn:
    """What the data says about one column.

    ``name`` is an identifier (the spec's); ``header`` the file's own name when it is
    not one (``"petal width (cm)"``), which the served model takes.
    """

    name: str
    dtype: str
    min: float | None
    max: float | None
    values: tuple[Any, ...] | None
    distinct: int
    header: str | None = None
    empty: int = 0
    row_id: bool = False

    def source(self) -> str:
        """The ``Column(...)`` expression proposing this column's schema."""
        args = [_q(self.name)]
        if self.dtype != "float64":
            args.append(f"dtype={_q(self.dtype)}")
        if self.row_id:
            pass  # new rows bring new row numbers: no bounds
        elif self.values is not None:
            args.append(f"values={_tuple(self.values)}")
        elif self.min is not None:
            if self.dtype == "int64":
                args += [f"min={int(self.min)}", f"max={int(self.max)}"]
            else:
                args += [f"min={self.min!r}", f"max={self.max!r}"]
        if self.header is not None:
            args.append(f"header={_q(self.header)}")
        return f"Column({', '.join(args)})"

    def feature(self) -> str:
        """The ``Feature(...)`` proposed for it: categories one-hot, numbers z-scored."""
        if self.row_id:
            return f"# {_q(self.name)}: a row number (1..n, all distinct), not a feature"
        if self.dtype == "string":
            top = f", top_k={TOP_K}" if self.distinct > TOP_K else ""
            return f'Feature({_q(self.name)}, "onehot"{top})'
        if self.dtype == "int64" and self.distinct <= CATEGORY_INTS:
            return f'Feature({_q(self.name)}, "onehot")'
        return f'Feature({_q(self.name)}, "zscore")'


def _q(value: Any) -> str:
    """A Python literal with double quotes for strings (the project's style)."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _tuple(values: Any) -> str:
    items = ", ".join(_q(v) for v in values)
    return f"({items},)" if len(values) == 1 else f"({items})"


def identifier(name: str, taken: set[str]) -> str:
    """A Python identifier for a column name (``petal width (cm)`` -> ``petal_width_cm``).

    Names that already are identifiers are kept; others are lower-cased, with runs of
    other characters as ``_``, ``col_`` before a leading digit, ``_`` after a keyword,
    and ``_2``, ``_3``... on a clash.
    """
    import keyword

    out = name if name.isidentifier() else (
        re.sub(r"\W+", "_", name.strip()).strip("_").lower() or "col")
    if out[0].isdigit():
        out = f"col_{out}"
    if keyword.iskeyword(out):
        out += "_"
    base, i = out, 2
    while out in taken:
        out, i = f"{base}_{i}", i + 1
    taken.add(out)
    return out


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _first_lines(path: Path, skip_rows: int, n: int = 3) -> list[list[str]]:
    import csv as pycsv

    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        for _ in range(skip_rows):
            fh.readline()
        reader = pycsv.reader(fh)
        return [row for _, row in zip(range(n), reader, strict=False)]


def check_header(path: Path, skip_rows: int = 0) -> None:
    """Refuse a first line that is not a header, saying how to name the columns.

    Raises:
        ScaffoldError: The file is empty, its first line looks like data (all numbers),
            or it has another number of fields than the data rows (a count line, as
            scikit-learn's files start with).

    """
    rows = _first_lines(path, skip_rows)
    if not rows or not any(f.strip() for f in rows[0]):
        raise ScaffoldError(f"{path}: the file is empty" + (
            f" after the {skip_rows} skipped lines" if skip_rows else ""))
    head, data = rows[0], rows[1:]
    line = skip_rows + 1
    shown = ",".join(head)[:60]
    if data and len(head) != len(data[0]):
        width = len(data[0])
        names = ",".join(f"c{i}" for i in range(1, width + 1))
        raise ScaffoldError(
            f"{path}: line {line} ({shown!r}) has {len(head)} fields but the data rows "
            f"have {width}: it is not a header row (scikit-learn's CSV files start with a "
            f"count line like this). Skip it and name the {width} columns, the label "
            f"last: --skip-rows {skip_rows + 1} --columns {names} (with your names)")
    if all(_number(f) for f in head if f.strip()):
        names = ",".join(f"c{i}" for i in range(1, len(head) + 1))
        raise ScaffoldError(
            f"{path}: line {line} ({shown!r}) looks like data, not a header: the file has "
            f"no header row. Name its {len(head)} columns, the label last: --columns "
            f"{names} (with your names)")


def infer_columns(path: Path, columns: list[str] | None = None,
                  skip_rows: int = 0) -> list[InferredColumn]:
    """Infer each column's dtype, observed range and (low cardinality) allowed values.

    Args:
        path: The CSV file.
        columns: The column names of a file without a header row (None: the file's
            header, checked by :func:`check_header`).
        skip_rows: Lines before the header (or before the data, with ``columns``).

    Raises:
        ScaffoldError: The file cannot be read as CSV, has no header row (with the fix),
            fewer than two columns, or no data row.

    """
    import pandas as pd

    if columns is None:
        check_header(path, skip_rows)
    try:
        if columns is None:
            frame = pd.read_csv(path, skiprows=skip_rows, dtype=str, keep_default_na=False)
        else:
            frame = pd.read_csv(path, skiprows=skip_rows, header=None, names=columns,
                                dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise ScaffoldError(f"{path}: cannot read as CSV ({exc})") from None
    if frame.shape[1] < 2 or frame.empty:
        raise ScaffoldError(f"{path}: need a header, at least two columns and one row")
    taken: set[str] = set()
    out = []
    for raw_name in frame.columns:
        name = identifier(str(raw_name), taken)
        text = frame[raw_name].str.strip()
        empty = int((text == "").sum())
        col = text[text != ""]
        distinct = int(col.nunique())
        numbers = pd.to_numeric(col, errors="coerce")
        if len(col) and numbers.notna().all():
            if col.str.fullmatch(r"[+-]?\d+").all():
                dtype = "int64"
                ints = sorted(int(v) for v in numbers.unique())
                values = tuple(ints) if distinct <= LOW_CARDINALITY else None
            else:
                dtype, values = "float64", None
            lo, hi = float(numbers.min()), float(numbers.max())
        else:
            dtype, lo, hi = "string", None, None
            values = tuple(sorted(col.unique())) if distinct <= LOW_CARDINALITY else None
        # A running row number (R's "rownames", pandas' index) predicts nothing.
        row_id = (str(raw_name).strip().lower() in ROW_ID_NAMES and dtype == "int64"
                  and distinct == len(frame) and not empty
                  and hi is not None and lo is not None and hi - lo == len(frame) - 1)
        out.append(InferredColumn(name, dtype, lo, hi, values, distinct,
                                  None if name == str(raw_name) else str(raw_name), empty,
                                  row_id))
    return out


def _objective(label: InferredColumn) -> tuple[str, tuple[str, ...]]:
    """The objective the label suggests and its class names.

    Integer classes ``0..k-1`` and text (class names, in sorted order: their index is
    the written label) are classes: two of them a binary model, more a softmax; other
    numbers are a regression target.
    """
    if label.dtype == "int64" and label.values is not None \
            and label.values == tuple(range(len(label.values))):
        if len(label.values) == 2:
            return "binary", ()
        return "classification", tuple(str(v) for v in label.values)
    if label.dtype == "string":
        if label.values is None:
            raise ScaffoldError(f"label column {label.name!r} holds text with {label.distinct} "
                                f"distinct values; more than {LOW_CARDINALITY} classes are "
                                "not proposed: list them in Column(values=...) by hand")
        if len(label.values) < 2:
            raise ScaffoldError(f"label column {label.name!r} holds one class only "
                                f"({label.values[0]!r}): nothing to learn")
        return ("binary" if len(label.values) == 2 else "classification"), tuple(
            str(v) for v in label.values)
    return "regression", ()


HEAD = {
    "classification": ('keras.layers.Dense(len(CLASS_NAMES), activation="softmax", '
                       'name="probabilities")', '"sparse_categorical_crossentropy"',
                       '["accuracy"]'),
    "binary": ('keras.layers.Dense(1, activation="sigmoid", name="probability")',
               '"binary_crossentropy"', '["accuracy"]'),
    "regression": ('keras.layers.Dense(1, name="prediction")', '"mse"',
                   '[keras.metrics.RootMeanSquaredError(name="rmse")]'),
}
GATE = {
    "classification": 'GateSpec(metric="test_accuracy", min_value=0.8, max_regression=0.02)',
    "binary": 'GateSpec(metric="test_accuracy", min_value=0.8, max_regression=0.02)',
    "regression": 'GateSpec(metric="rmse_improvement_over_baseline", min_value=0.0, '
                  'max_regression=0.05)',
}


def _line(text: str) -> str:
    return text + "  # noqa: E501" if len(text) > 100 else text


def render_module(name: str, description: str, columns: list[InferredColumn], location: str,
                  file_name: str, generator: str = "",
                  class_names: tuple[str, ...] | None = None, *, has_header: bool = True,
                  skip_rows: int = 0) -> str:
    """The source of ``models/<name>.py`` for a tabular use case (last column = label)."""
    *features, label = columns
    objective, guessed = _objective(label)
    class_names = class_names or guessed
    cols = "\n".join(_line(f"    {c.source()},") for c in columns)
    feats = "\n".join(_line(f"    {c.feature()}" + ("" if c.row_id else ","))
                      for c in features)
    layout_args = ("" if has_header else "\n        has_header=False,") + (
        f"\n        skip_rows={skip_rows}," if skip_rows else "")
    head, loss, metrics = HEAD[objective]
    label_dtype = "float32" if objective == "regression" else "int64"
    stratify = f"stratify_by={_q(label.name)}, " if objective != "regression" else ""
    imports = "from pathlib import Path\n" if generator else ""
    gen_arg = "\n        generator=export_bundled," if generator else ""
    named = objective == "classification" or bool(class_names)
    names_line = _line(f"CLASS_NAMES = {_tuple(class_names)}") + "\n" if named else ""
    class_arg = ", class_names=CLASS_NAMES" if named else ""
    import textwrap

    description = textwrap.fill(description, 92)
    location_line = f"DATA = {_q(location)}"
    if len(location_line) > 100:
        location_line += "  # noqa: E501"
    return f'''"""{name}: a tabular {objective} use case written by `mlp new`.

{description}

Written by `mlp new`: edit freely. Check it with `mlp validate {name}`, run it with
`mlp run {name}`. Every part is explained in ARCHITECTURE.md ("Adding a use case").
"""

from __future__ import annotations

from collections.abc import Mapping
{imports}from typing import Any

from tasks.data.sources import Column, TabularSource
from tasks.features.transforms import embedded, output_width
from tasks.spec import (
    RATIO,
    Feature,
    GateSpec,
    ModelSpec,
    PreprocessSpec,
    RunParam,
    SmokeTest,
    SplitSpec,
    UseCaseSpec,
)

# The raw columns, as inferred from the data: dtype, observed range, allowed values
# (header=: the file's own name, which clients send, when it is not an identifier).
# Rows outside these bounds are quarantined with a reason, never dropped silently.
COLUMNS = (
{cols}
)
# Model inputs and their transforms: numbers zscore, minmax, clip, identity; categories
# (text, or integer codes) onehot, or vocab (embedded by the model below); top_k keeps
# the most frequent values.
FEATURES = (
{feats}
)
LABEL = {_q(label.name)}
{names_line}# Where the raw file lives: a directory holding {file_name} (`--source DIR` overrides).
{location_line}
{generator}

def build_model(params: Mapping[str, Any], stats: Mapping[str, Any]) -> Any:
    """A small dense network on the transformed features (compiled)."""
    import keras

    width = output_width(FEATURES, stats["train"])
    inp = keras.Input(shape=(width,), name="features")
    x = embedded(inp, FEATURES, stats["train"])  # "vocab" features: learned embeddings
    x = keras.layers.Dense(int(params["hidden_units"]), activation="relu")(x)
    out = {head}(x)
    model = keras.Model(inp, out, name="{name}_dnn")
    model.compile(optimizer=keras.optimizers.Adam(float(params["learning_rate"])),
                  loss={loss}, metrics={metrics})
    return model


SPEC = UseCaseSpec(
    name={_q(name)},
    description=__doc__ or "",
    source=TabularSource(
        columns=COLUMNS,
        layout={{"all": {_q(file_name)}}},
        default_location=DATA,{gen_arg}{layout_args}
    ),
    preprocess=PreprocessSpec(features=FEATURES, label=LABEL, label_dtype={_q(label_dtype)}),
    # One file, dealt 60/20/20 into train/validation/test (per class when stratified).
    split=SplitSpec({stratify}partition_to_split={{"all": RATIO}},
                    ratios={{"train": 0.6, "validation": 0.2, "test": 0.2}}, seed=42,
                    shards={{"train": 1, "validation": 1, "test": 1}}),
    model=ModelSpec(build=build_model, input_key="features", label_key=LABEL,
                    objective={_q(objective)}{class_arg}),
    # The gate: the metric must be one the objective produces (mlp validate checks it).
    gate={GATE[objective]},
    params={{
        "epochs": RunParam(60, "integer", "Training epochs", minimum=1, maximum=1000),
        "batch_size": RunParam(16, "integer", "Mini-batch size", minimum=1, maximum=4096),
        "learning_rate": RunParam(0.01, "number", "Adam learning rate", minimum=1e-6,
                                  maximum=1.0),
        "hidden_units": RunParam(16, "integer", "Width of the hidden layer", minimum=1,
                                 maximum=1024),
    }},
    # The tiny end-to-end test's run (tests/e2e/test_use_cases.py discovers it).
    smoke=SmokeTest(DATA, {{"epochs": 10}}),
    tags=("tabular", {_q(objective)}),
)
'''


IRIS_GENERATOR = '''

def export_bundled(out_dir: Path, rows: int, seed: int) -> None:
    """Write scikit-learn's iris data (150 real flowers) as ``iris.csv``."""
    import pandas as pd
    from sklearn.datasets import load_iris

    data = load_iris()
    frame = pd.DataFrame(data.data, columns=[c[:-5].replace(" ", "_")
                                             for c in data.feature_names])
    frame["species"] = data.target
    frame.to_csv(Path(out_dir) / "iris.csv", index=False)
'''


def iris_columns() -> list[InferredColumn]:
    """The template's columns, inferred from scikit-learn's iris like any CSV."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ns: dict[str, Any] = {"Path": Path}
        exec(IRIS_GENERATOR, ns)  # noqa: S102 - our own constant, the same code the module gets
        ns["export_bundled"](Path(tmp), 150, 0)
        return infer_columns(Path(tmp) / "iris.csv")


def _targets(name: str, root: Path) -> tuple[Path, Path]:
    if not name.isidentifier() or name.startswith("_"):
        raise ScaffoldError(f"use-case name {name!r} must be a Python identifier not starting "
                            "with '_' (e.g. iris, churn_v2)")
    module, dag = root / "models" / f"{name}.py", root / "dags" / f"{name}.py"
    for path in (module, dag):
        if path.exists():
            raise ScaffoldError(f"{path.relative_to(root)} already exists; choose another "
                                "name or remove it")
    return module, dag


def new_use_case(name: str, from_use_case: str | None = None, from_csv: str | None = None,
                 root: Path = REPO_ROOT, *, columns: list[str] | None = None,
                 skip_rows: int = 0, notes: Any = None) -> list[Path]:
    """Write ``models/<name>.py`` and ``dags/<name>.py``; return their paths.

    Args:
        name: The use case's name.
        from_use_case: Copy this use case.
        from_csv: Infer a tabular use case from this CSV (the last column is the label).
        root: The repository.
        columns: ``from_csv``: the names of a file without a header row.
        skip_rows: ``from_csv``: lines before the header (or the data).
        notes: ``notes(line)`` is called with what the user should know (renamed
            columns, empty cells).

    Raises:
        ScaffoldError: Bad or taken name, unknown template use case, unreadable CSV, a
            file without a header row (with the fix).

    """
    module, dag = _targets(name, root)
    if from_use_case and from_csv:
        raise ScaffoldError("give --from or --from-csv, not both")
    if (columns or skip_rows) and not from_csv:
        raise ScaffoldError("--columns and --skip-rows go with --from-csv")
    if skip_rows < 0:
        raise ScaffoldError(f"--skip-rows must be >= 0, got {skip_rows}")
    if from_use_case:
        catalog.get(from_use_case)  # UnknownUseCase lists the known ones
        text = (root / "models" / f"{from_use_case}.py").read_text(encoding="utf-8")
        text, count = re.subn(rf'name=(["\']){from_use_case}\1', f'name="{name}"', text)
        if count != 1:
            raise ScaffoldError(f"models/{from_use_case}.py: expected one name="
                                f"\"{from_use_case}\" in its SPEC, found {count}")
        text = f'# Copied from models/{from_use_case}.py by `mlp new {name} --from ' \
               f'{from_use_case}`.\n' + text
    elif from_csv:
        csv = Path(from_csv).resolve()
        if not csv.is_file():
            raise ScaffoldError(f"{from_csv}: no such file")
        inferred = infer_columns(csv, columns, skip_rows)
        for c in inferred:
            if c.row_id and notes:
                notes(f"column {c.header or c.name!r} is a row number (1..n, all distinct): "
                      "kept in the columns, left out of the features")
            if c.header is not None and notes:
                notes(f"column {c.header!r} is named {c.name!r} in the spec (requests "
                      f"still use {c.header!r})")
            if c.empty and notes:
                notes(f"column {c.header or c.name!r} has {c.empty} empty cell"
                      f"{'s' if c.empty > 1 else ''}: those rows are quarantined; see "
                      f"`mlp validate {name}`, and --param max_bad_fraction to accept them")
        text = render_module(name, f"A model of {csv.name}; the columns below were inferred "
                             "from the file by `mlp new --from-csv`.", inferred,
                             str(csv.parent), csv.name, has_header=columns is None,
                             skip_rows=skip_rows)
    else:
        text = render_module(
            name, "Started from `mlp new`'s template: scikit-learn's iris (150 real flowers, 4 "
            "measurements in cm, 3 species), to replace with your own data.",
            iris_columns(), "bundled:150:0", "iris.csv", IRIS_GENERATOR,
            class_names=("setosa", "versicolor", "virginica"))
    compile(text, str(module), "exec")  # a template bug fails here, not at import
    module.write_text(text, encoding="utf-8")
    dag.write_text(DAG_TEMPLATE.format(name=name), encoding="utf-8")
    return [module, dag]
