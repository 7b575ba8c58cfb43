"""``mlp validate``: check a use case's spec against its source and run params, in seconds.

Runs before anything heavy (no Airflow, TensorFlow or Beam): by ``mlp validate``, at the
start of ``mlp run``/``mlp retrain`` and in the DAG's first task. Every problem is one
:class:`Problem` naming the field and the fix; all problems are reported at once.

Checks:

- params: known names only, JSON-schema type, bounds and choices of each
  :class:`~tasks.spec.RunParam`;
- source: the files exist and their headers/structure fit (``source.check``: CSV or
  Parquet headers, IDX headers), without reading the data;
- columns: the features, the label, ``stratify_by`` and the model's input/label keys
  name columns the source yields;
- model: the objective is a known kind, the class names match the label's classes,
  the gate metric is one the objective (or the use case's declared extra metrics)
  produces;
- transforms: each feature's transform takes its column's type (a number transform on
  a text column is refused with the fix: a categorical transform);
- rows (:func:`check_rows`, by ``mlp validate``/``mlp run`` before anything starts):
  the source's own row checks over its files (:func:`tasks.data.rows.scan_rows`: empty
  cells, non-numbers, out-of-range and unknown values, with file, line and field),
  sampled for big files; more bad rows than ``max_bad_fraction`` is a problem, fewer are
  reported as the rows the run will quarantine.
- search space (tuning): each ``RunParam.search`` is a known distribution inside the
  param's bounds and choices (:func:`tasks.spec.search.problems`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasks import objectives
from tasks.core.errors import PermanentError
from tasks.data.tfrecord import PACKED
from tasks.spec import SpecError, UseCaseSpec

# Params every DAG has besides the use case's own (see orchestration.dag_factory).
PLATFORM_PARAMS = {
    "source_dir": "directory (or synthetic:/bundled: location) of the raw input files",
    "force_deploy": "deploy even if the gate fails (needs force_reason)",
    "force_reason": "why the gate is overridden",
    "require_approval": "wait for an operator's approval after a passing gate (mlp approve)",
    "max_bad_fraction": "largest fraction of bad rows quarantined instead of refused "
                        "(0 to 1)",
    "rollout": "champion (serve at once) or shadow (challenger until mlp promote)",
    "force_drift": "train even if the new data drifted past a fail threshold (needs "
                   "force_drift_reason)",
    "force_drift_reason": "why training proceeds despite drift (kept in the model card)",
}
ROLLOUTS = ("champion", "shadow")
CLASSIFIERS = ("classification",)


@dataclass(frozen=True)
class Problem:
    """One mistake: the field it is in and what to do about it."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ValidationError(SpecError):
    """A use case does not validate; ``str()`` is one line per problem."""

    def __init__(self, use_case: str, problems: list[Problem]) -> None:
        self.use_case, self.problems = use_case, problems
        super().__init__("\n".join(f"{use_case} {p}" for p in problems))


_TYPES = {"integer": int, "number": (int, float), "string": str, "boolean": bool}


def check_params(spec: UseCaseSpec, conf: Mapping[str, Any]) -> list[Problem]:
    """Unknown names, wrong types, out-of-bounds values and unknown choices of run params."""
    problems = []
    known = {**{k: p.description for k, p in spec.params.items()}, **PLATFORM_PARAMS}
    for key, value in conf.items():
        if key not in known:
            import difflib

            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(Problem(f"--param {key}", f"unknown run param; {hint}known: "
                                                      f"{', '.join(sorted(known))}"))
            continue
        if key == "max_bad_fraction" and (isinstance(value, bool) or not isinstance(
                value, int | float) or not 0 <= value <= 1):
            problems.append(Problem(f"--param {key}", f"{value!r} is not a fraction in "
                                                      "[0, 1]; e.g. --param "
                                                      "max_bad_fraction=0.01"))
            continue
        if key == "rollout" and value not in ROLLOUTS:
            problems.append(Problem(f"--param {key}", f"{value!r} is not one of "
                                                      f"{', '.join(ROLLOUTS)}"))
            continue
        if key in PLATFORM_PARAMS:
            continue
        p = spec.params[key]
        want = _TYPES.get(p.type)
        if want is not None and (not isinstance(value, want) or (
                isinstance(value, bool) and p.type != "boolean")):
            problems.append(Problem(f"--param {key}", f"{value!r} is not of type {p.type}; "
                                                      f"e.g. --param {key}={p.default!r}"))
            continue
        if p.enum is not None and value not in p.enum:
            problems.append(Problem(f"--param {key}", f"{value!r} is not one of "
                                                      f"{list(p.enum)}"))
        if p.minimum is not None and value < p.minimum:
            problems.append(Problem(f"--param {key}", f"{value!r} is below the minimum "
                                                      f"{p.minimum:g}"))
        if p.maximum is not None and value > p.maximum:
            problems.append(Problem(f"--param {key}", f"{value!r} is above the maximum "
                                                      f"{p.maximum:g}"))
    return problems


def check_model(spec: UseCaseSpec, schema: Mapping[str, Mapping[str, Any]] | None = None
                ) -> list[Problem]:
    """Objective kind, gate metric and class names (pure: no I/O)."""
    mk, gate, where = spec.model, spec.gate, f"models/{spec.name}.py"
    if mk is None or gate is None:
        return []
    try:
        objective = objectives.get(mk.objective)
    except SpecError as exc:
        return [Problem(f"{where} model.objective", str(exc))]
    produced = (*objective.metrics, *mk.extra_metric_names)
    problems = []
    if gate.metric not in produced:
        extra = "" if mk.extra_metrics is None else (
            "; a metric of extra_metrics must be declared in ModelSpec.extra_metric_names")
        problems.append(Problem(f"{where} gate.metric",
                                f"{gate.metric!r} is not a metric the {mk.objective!r} "
                                f"objective produces; choose one of {list(produced)}{extra}"))
    if gate.baseline is not None and gate.baseline not in produced:
        problems.append(Problem(f"{where} gate.baseline",
                                f"{gate.baseline!r} is not a metric the {mk.objective!r} "
                                f"objective produces; choose one of {list(produced)}"))
    if mk.class_names and mk.objective not in (*CLASSIFIERS, "binary"):
        problems.append(Problem(f"{where} model.class_names",
                                f"class names are for classification, not {mk.objective!r}; "
                                "remove them"))
    if mk.class_names and mk.objective == "binary" and len(mk.class_names) != 2:
        problems.append(Problem(f"{where} model.class_names",
                                f"a binary model has 2 classes, got {len(mk.class_names)} "
                                "names"))
    label = (schema or {}).get(spec.preprocess.label or "", {})
    if label.get("dtype") == "string":
        if mk.objective not in (*CLASSIFIERS, "binary", "anomaly"):
            problems.append(Problem(f"{where} preprocess.label",
                                    f"the label {spec.preprocess.label!r} holds text (class "
                                    f"names); a {mk.objective!r} model needs numbers: use "
                                    'objective="classification" or make the label numeric'))
        if spec.preprocess.label_dtype != "int64":
            problems.append(Problem(f"{where} preprocess.label_dtype",
                                    "a text label is written as its class index: use "
                                    'label_dtype="int64"'))
        values = label.get("values")
        if values is not None and mk.class_names and tuple(mk.class_names) != tuple(
                str(v) for v in values):
            problems.append(Problem(f"{where} model.class_names",
                                    f"{list(mk.class_names)} differ from the label's values "
                                    f"{list(values)} (its classes, in index order): use "
                                    "the same names in the same order"))
    classes = label.get("num_classes")
    if classes is None and label.get("values") is not None:
        classes = len(label["values"])
    if mk.objective in CLASSIFIERS and mk.class_names and classes is not None \
            and classes != len(mk.class_names):
        problems.append(Problem(f"{where} model.class_names",
                                f"{len(mk.class_names)} names but the label "
                                f"{spec.preprocess.label!r} has {classes} classes (the "
                                "model's output width): give one name per class"))
    return problems


def check_search_space(spec: UseCaseSpec) -> list[Problem]:
    """The tuning search space declared on the run params (pure: no I/O)."""
    from tasks.spec.search import DIRECTIONS, problems

    where = f"models/{spec.name}.py"
    out = [Problem(f"{where} params[{name!r}].search", text)
           for name, p in spec.params.items() for text in problems(name, p)]
    tune = spec.tune
    if tune is not None and getattr(tune, "direction", None) not in DIRECTIONS:
        out.append(Problem(f"{where} tune.direction", f"{tune.direction!r} is not one of "
                                                      f"{list(DIRECTIONS)}"))
    return out


def _not_a_column(name: str, cols: list[str]) -> str:
    """``'x' is not a column; did you mean 'y'? columns: ...`` (long lists shortened)."""
    import difflib

    close = difflib.get_close_matches(name, cols, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    shown = ", ".join(cols) if len(cols) <= 12 else (
        f"{', '.join(cols[:5])}, ..., {', '.join(cols[-5:])} ({len(cols)} columns)")
    return f"{name!r} is not a column; {hint}columns of the source: {shown}"


def check_columns(spec: UseCaseSpec, schema: Mapping[str, Mapping[str, Any]]) -> list[Problem]:
    """Features, label, stratify column and model keys against the source's columns."""
    where, cols = f"models/{spec.name}.py", list(schema)
    problems = []
    for f in spec.preprocess.features:
        if f.name not in schema:
            problems.append(Problem(f"{where} preprocess.features",
                                    _not_a_column(f.name, cols)))
    label = spec.preprocess.label
    if label is not None and label not in schema:
        problems.append(Problem(f"{where} preprocess.label", _not_a_column(label, cols)))
    if spec.split.stratify_by and spec.split.stratify_by not in schema:
        problems.append(Problem(f"{where} split.stratify_by",
                                _not_a_column(spec.split.stratify_by, cols)))
    mk = spec.model
    if mk is not None:
        inputs = ([PACKED] if spec.preprocess.packed else []) + [
            f.name for f in (*spec.preprocess.raw, *spec.preprocess.text,
                             *spec.preprocess.detection)]
        if mk.input_key not in inputs:
            problems.append(Problem(f"{where} model.input_key",
                                    f"{mk.input_key!r} is not a model input; the "
                                    f"preprocessed inputs are {inputs}"))
        if mk.label_key != label and mk.objective not in ("autoencoder",):
            problems.append(Problem(f"{where} model.label_key",
                                    f"{mk.label_key!r} differs from preprocess.label "
                                    f"{label!r}; use the same column"))
    return problems


def check_transforms(spec: UseCaseSpec, schema: Mapping[str, Mapping[str, Any]]
                     ) -> list[Problem]:
    """Each feature's transform takes its column's type (what the served model can take)."""
    from tasks.features.transforms import CATEGORICAL, NUMERIC

    where = f"models/{spec.name}.py preprocess.features"
    problems = []
    for f in spec.preprocess.features:
        dtype = schema.get(f.name, {}).get("dtype")
        if dtype == "string" and f.transform in NUMERIC:
            problems.append(Problem(
                where, f"Feature({f.name!r}, {f.transform!r}): the column holds text; a "
                f"number transform cannot take it: use Feature({f.name!r}, \"onehot\") "
                f"(or \"vocab\" for an embedding), or make the column numeric"))
        if f.top_k is not None and f.transform not in CATEGORICAL and \
                f.transform != "tokens":
            problems.append(Problem(where, f"Feature({f.name!r}): top_k is for categorical "
                                           "transforms (vocab, onehot)"))
    return problems


def check_rows(spec: UseCaseSpec, conf: Mapping[str, Any] | None = None,
               location: str | None = None) -> tuple[list[Problem], list[str]]:
    """The source's row checks over its files, in seconds (big files are sampled).

    The same checks preprocessing applies (:func:`tasks.data.rows.scan_rows`), for
    sources with a quick check (tabular files, IDX labels).

    Returns:
        Problems (more bad rows than the run's ``max_bad_fraction``: the first bad row,
        then one line per kind of problem with its count and first rows) and notes (the
        rows the run will quarantine, what was sampled).

    """
    from tasks.data.rows import SAMPLE_BYTES, scan_rows

    conf = dict(conf or {})
    location = location or conf.get("source_dir") or spec.source.default_location
    try:
        files = spec.source.files(str(location))
        scan = scan_rows(spec.source, files, sample_bytes=SAMPLE_BYTES, quick_only=True)
    except (PermanentError, OSError):
        return [], []  # reported by check_source
    fraction = conf.get("max_bad_fraction", spec.preprocess.max_bad_fraction)
    if not isinstance(fraction, int | float) or isinstance(fraction, bool):
        return [], []  # reported by check_params
    refused = scan.refusal(float(fraction))
    details = scan.report()
    if refused:
        return [Problem("source rows", refused),
                *(Problem("source rows", line) for line in details)], scan.notes
    notes = [*scan.notes]
    if scan.bad:
        notes.insert(0, f"{scan.bad} of {scan.rows} rows will be quarantined "
                        f"(max_bad_fraction {float(fraction):g}):")
        notes += details
    return [], notes


def source_schema(spec: UseCaseSpec) -> dict[str, dict[str, Any]]:
    """The source's columns with, for tabular sources, the allowed label values."""
    schema = {k: dict(v) for k, v in spec.source.schema().items()}
    for col in getattr(spec.source, "columns", ()):
        if col.values is not None:
            schema[col.name]["values"] = list(col.values)
    return schema


def check_source(spec: UseCaseSpec, location: str) -> list[Problem]:
    """The source's files exist and their headers fit (cheap: no data is read)."""
    try:
        files = spec.source.files(location)
        check = getattr(spec.source, "check", None)  # sources without one: files only
        if check is not None:
            check(files)
    except (PermanentError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return [Problem("source", f"{first} (pass the directory holding the raw files with "
                                  "--source DIR)")]
    return []


def _string_args(tree: Any, func: str) -> list[str]:
    """The string literals passed first to calls of ``func`` (a name or an attribute)."""
    import ast

    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and (
                getattr(node.func, "id", None) == func
                or getattr(node.func, "attr", None) == func):
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                out.append(first.value)
    return out


def check_dag_file(spec: UseCaseSpec) -> list[Problem]:
    """Airflow schedules and triggers only DAGs it read from ``dags/<name>.py``.

    The file is parsed, not searched: a ``build_dag("<name>")`` in a comment or a string
    does not count, and quoting does not matter.
    """
    import ast

    from tasks.core.config import REPO_ROOT

    rel = f"dags/{spec.name}.py"
    path = REPO_ROOT / rel
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    try:
        tree = ast.parse(text, filename=rel)
    except SyntaxError as exc:
        return [Problem(rel, f"line {exc.lineno}: {exc.msg} (Airflow cannot import it)")]
    if spec.name in _string_args(tree, "build_dag"):
        guards = _string_args(tree, "wanted")
        if guards and spec.name not in guards:
            # A parse for this DAG (a worker running its task) would skip the file.
            return [Problem(rel, f'guards build_dag("{spec.name}") with another name: '
                                 f'write `if wanted("{spec.name}"):`')]
        if "airflow" in text.lower():
            return []
        # DAG discovery safe mode: a file not mentioning both words is never parsed.
        return [Problem(rel, "Airflow skips it: a DAG file must contain "
                        "the word 'airflow'; keep the docstring "
                        f'"""Airflow DAG: {spec.name} (spec in models/{spec.name}.py)."""')]
    how = ("write it with the two lines: `from tasks.orchestration import build_dag` and "
           f'`dag = build_dag("{spec.name}")` (`mlp new` does)')
    if path.is_file():
        return [Problem(rel, f'does not call build_dag("{spec.name}"); {how}')]
    return [Problem(rel, f"missing (Airflow reads DAGs only from files); {how}")]


def check_parent(spec: UseCaseSpec, conf: Mapping[str, Any]) -> list[Problem]:
    """A model built on a registered parent needs that parent's alias to exist now.

    Checked before any data is landed, so a missing parent costs seconds, not an ingest
    and a preprocessing run.
    """
    parent = spec.model.parent if spec.model is not None else None
    if parent is None:
        return []
    params = {**{k: p.default for k, p in spec.params.items()}, **conf}
    if not parent.wanted(params):
        return []
    from tasks.tracking.parents import ParentMissing, resolve_parent

    try:
        resolve_parent(parent.name, parent.alias)
    except ParentMissing as exc:
        return [Problem(f"{spec.name} model.parent", str(exc))]
    return []


def validate(spec: UseCaseSpec, conf: Mapping[str, Any] | None = None,
             location: str | None = None, dag_file: bool = True) -> list[Problem]:
    """Every problem of a use case with these run params and this source location.

    Args:
        spec: The use case.
        conf: Run params as given by the operator (unknown names are problems).
        location: Source directory; default ``conf["source_dir"]``, else the source's
            default location.
        dag_file: Check that ``dags/<name>.py`` exists (not from inside a running DAG).

    Returns:
        The problems, in spec order; empty when the use case is ready to run.

    """
    conf = dict(conf or {})
    location = location or conf.get("source_dir") or spec.source.default_location
    schema = source_schema(spec)
    return [*check_params(spec, conf), *check_columns(spec, schema),
            *check_transforms(spec, schema),
            *check_model(spec, schema), *check_search_space(spec),
            *(check_dag_file(spec) if dag_file else []),
            *check_source(spec, str(location)), *check_parent(spec, conf)]


def ensure_valid(spec: UseCaseSpec, conf: Mapping[str, Any] | None = None,
                 location: str | None = None, dag_file: bool = True) -> None:
    """Raise :class:`ValidationError` listing every problem, if any.

    Raises:
        ValidationError: At least one problem.

    """
    problems = validate(spec, conf, location, dag_file)
    if problems:
        raise ValidationError(spec.name, problems)
