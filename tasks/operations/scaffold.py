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

from tasks.orchestration import build_dag

dag = build_dag("{name}")
'''


class ScaffoldError(ValueError):
    """The new use case cannot be written; the message says why and what to do."""


@dataclass(frozen=True)
class InferredColumn:
    """What the data says about one column."""

    name: str
    dtype: str
    min: float | None
    max: float | None
    values: tuple[Any, ...] | None
    distinct: int

    def source(self) -> str:
        """The ``Column(...)`` expression proposing this column's schema."""
        args = [_q(self.name)]
        if self.dtype != "float64":
            args.append(f"dtype={_q(self.dtype)}")
        if self.values is not None:
            args.append(f"values={_tuple(self.values)}")
        elif self.min is not None:
            args += [f"min={self.min!r}", f"max={self.max!r}"]
        return f"Column({', '.join(args)})"


def _q(value: Any) -> str:
    """A Python literal with double quotes for strings (the project's style)."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _tuple(values: Any) -> str:
    items = ", ".join(_q(v) for v in values)
    return f"({items},)" if len(values) == 1 else f"({items})"


def infer_columns(path: Path) -> list[InferredColumn]:
    """Infer each column's dtype, observed range and (low cardinality) allowed values.

    Raises:
        ScaffoldError: The file cannot be read as CSV or has fewer than two columns.

    """
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ScaffoldError(f"{path}: cannot read as CSV ({exc})") from None
    if frame.shape[1] < 2 or frame.empty:
        raise ScaffoldError(f"{path}: need a header, at least two columns and one row")
    out = []
    for name in frame.columns:
        if not str(name).isidentifier():
            raise ScaffoldError(f"{path}: column {name!r} is not a Python identifier; "
                                "rename it in the header (e.g. spaces to underscores)")
        col = frame[name].dropna()
        distinct = int(col.nunique())
        if pd.api.types.is_integer_dtype(col):
            dtype = "int64"
            values = tuple(int(v) for v in sorted(col.unique())) \
                if distinct <= LOW_CARDINALITY else None
        elif pd.api.types.is_numeric_dtype(col):
            dtype, values = "float64", None
        else:
            dtype = "string"
            values = tuple(str(v) for v in sorted(col.astype(str).unique())) \
                if distinct <= LOW_CARDINALITY else None
        lo = hi = None
        if dtype != "string":
            lo, hi = float(col.min()), float(col.max())
        out.append(InferredColumn(str(name), dtype, lo, hi, values, distinct))
    return out


def _objective(label: InferredColumn) -> tuple[str, tuple[str, ...]]:
    """The objective the label suggests and its class names."""
    if label.dtype == "int64" and label.values is not None \
            and label.values == tuple(range(len(label.values))):
        if len(label.values) == 2:
            return "binary", ()
        return "classification", tuple(str(v) for v in label.values)
    if label.dtype == "string":
        raise ScaffoldError(f"label column {label.name!r} holds text; encode the classes as "
                            "integers 0..k-1 in the file (the label is a class index)")
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


def render_module(name: str, description: str, columns: list[InferredColumn], location: str,
                  file_name: str, generator: str = "",
                  class_names: tuple[str, ...] | None = None) -> str:
    """The source of ``models/<name>.py`` for a tabular use case (last column = label)."""
    *features, label = columns
    objective, guessed = _objective(label)
    class_names = class_names or guessed
    cols = ",\n".join(f"    {c.source()}" for c in columns)
    feats = ",\n".join(
        f'    Feature({_q(c.name)}, "onehot")' if c.dtype == "string"
        else f'    Feature({_q(c.name)}, "zscore")' for c in features)
    head, loss, metrics = HEAD[objective]
    label_dtype = "float32" if objective == "regression" else "int64"
    stratify = f"stratify_by={_q(label.name)}, " if objective != "regression" else ""
    imports = "from pathlib import Path\n" if generator else ""
    gen_arg = "\n        generator=export_bundled," if generator else ""
    names_line = (f"CLASS_NAMES = {_tuple(class_names)}\n" if objective == "classification"
                  else "")
    class_arg = ", class_names=CLASS_NAMES" if objective == "classification" else ""
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
from tasks.features.transforms import output_width
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

# The raw columns, as inferred from the data: dtype, observed range, allowed values.
# Rows outside these bounds are quarantined with a reason, never dropped silently.
COLUMNS = (
{cols},
)
# Model inputs and their transforms (zscore, minmax, clip, onehot, vocab, identity).
FEATURES = (
{feats},
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
    x = keras.layers.Dense(int(params["hidden_units"]), activation="relu")(inp)
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
        default_location=DATA,{gen_arg}
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
                 root: Path = REPO_ROOT) -> list[Path]:
    """Write ``models/<name>.py`` and ``dags/<name>.py``; return their paths.

    Raises:
        ScaffoldError: Bad or taken name, unknown template use case, unreadable CSV.

    """
    module, dag = _targets(name, root)
    if from_use_case and from_csv:
        raise ScaffoldError("give --from or --from-csv, not both")
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
        text = render_module(name, f"A model of {csv.name}; the columns below were inferred "
                             "from the file by `mlp new --from-csv`.", infer_columns(csv),
                             str(csv.parent), csv.name)
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
