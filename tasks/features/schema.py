"""The input schema of a tabular model: named typed fields, their limits, readable answers.

One :class:`InputSchema` per exported tabular model, built at training time from the
source's declared columns and the training split's statistics (:func:`input_schema`),
logged with the model (MLflow model metadata ``mlp``) and read back by the server.
Everything here is pure Python and numpy, shared by

- the server (:mod:`tasks.serving.codec`): request instances -> the model's input
  columns (:func:`to_model_inputs`), schema checks with per-instance warnings, or a
  refusal in strict mode; readable answers (:func:`readable_answers`);
- evaluation: the same checks over the test rows (:func:`check_columns`), counted in
  the gate report and the model card;
- batch scoring and request logging (other workers): the same decoding as the server.

Checks per field: a number outside the declared range (``Column.min``/``max``) or the
range seen in training, a category the training vocabulary does not hold (it maps to
the out-of-vocabulary bucket) or the declared values exclude, and a missing field (null
or absent: filled with the training mean, or a value in the out-of-vocabulary bucket).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

PROBLEMS = ("missing", "out_of_range", "unseen_category")
KEY = "mlp"  # the MLflow model metadata key holding the schema


class InputError(ValueError):
    """A request the model cannot take (HTTP 400); the message names field and instance.

    A refusal in strict mode carries the schema warnings it found (``counts``, over
    ``instances`` instances), so that refused requests are counted too.
    """

    def __init__(self, message: str, counts: dict[str, dict[str, int]] | None = None,
                 instances: int = 0) -> None:
        super().__init__(message)
        self.counts = counts or {}
        self.instances = instances


@dataclass(frozen=True)
class InputField:
    """One named input of a tabular model.

    Attributes:
        name: The name clients send (the file's column name).
        key: The model's input name (the spec's identifier for the column).
        dtype: ``float32``, ``int64`` or ``string``.
        category: Whether a vocabulary lookup consumes it (else a number transform).
        min: Declared smallest value (the spec's ``Column.min``), if any.
        max: Declared largest value, if any.
        values: Declared allowed values, if any.
        train_min: Smallest value seen in the training split (numbers).
        train_max: Largest value seen in the training split (numbers).
        vocab: The training vocabulary (categories); others are out of vocabulary.
        fill: What a missing value is replaced by when the request is not refused.

    """

    name: str
    key: str
    dtype: str
    category: bool = False
    min: float | None = None
    max: float | None = None
    values: tuple[Any, ...] | None = None
    train_min: float | None = None
    train_max: float | None = None
    vocab: tuple[Any, ...] = ()
    fill: Any = None

    def describe(self) -> dict[str, Any]:
        """The declared and training limits, as ``/metadata`` lists them."""
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype,
                               "kind": "category" if self.category else "number"}
        if self.key != self.name:
            out["model_input"] = self.key
        if self.min is not None or self.max is not None:
            out["declared_range"] = [self.min, self.max]
        if self.values is not None:
            out["allowed_values"] = list(self.values)
        if self.train_min is not None:
            out["training_range"] = [self.train_min, self.train_max]
        if self.category:
            out["vocabulary"] = list(self.vocab)
        return out


@dataclass(frozen=True)
class InputSchema:
    """A tabular model's named inputs and how its answers read.

    Attributes:
        fields: The inputs, in the order of the bare vector form (the spec's features).
        objective: The model kind (``classification``, ``binary``, ``regression``,
            ``anomaly``...), which decides the readable answer.
        class_names: Class names (classification, binary; index order).
        threshold: The decision threshold shipped with the model (binary, anomaly).
        label: The label column the model predicts.
        strict: Refuse (400) instances with warnings instead of answering them.

    """

    fields: tuple[InputField, ...]
    objective: str = ""
    class_names: tuple[str, ...] = ()
    threshold: float | None = None
    label: str | None = None
    strict: bool = False
    _index: dict[str, InputField] = field(default_factory=dict, compare=False, repr=False)
    _plan: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for f in self.fields:  # clients may use either the served name or the identifier
            self._index.setdefault(f.key, f)
        for f in self.fields:
            self._index[f.name] = f
        # What the checks need per request, computed once: the number fields, their
        # limits as arrays, which of them are integers.
        numbers = [f for f in self.fields if f.dtype != "string"]
        ranged = [f for f in numbers if not f.category]
        self._plan.update(
            numbers=numbers, ranged=ranged,
            ints=[i for i, f in enumerate(numbers) if f.dtype == "int64"],
            floats=[i for i, f in enumerate(numbers) if f.dtype == "float32"],
            limits=np.array([_limits(f) for f in ranged], np.float64).reshape(-1, 2).T,
            order={f.name: i for i, f in enumerate(self.fields)})

    def lookup(self, name: str) -> InputField | None:
        """The field a request names (served name or model input name)."""
        return self._index.get(name)

    @property
    def names(self) -> list[str]:
        """The served names, in order."""
        return [f.name for f in self.fields]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the MLflow model metadata)."""
        out = asdict(self)
        out.pop("_index")
        out.pop("_plan")
        out["fields"] = [{k: list(v) if isinstance(v, tuple) else v for k, v in f.items()}
                         for f in out["fields"]]
        out["class_names"] = list(self.class_names)
        return out

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> InputSchema:
        """The schema :meth:`to_dict` wrote."""
        fields = tuple(InputField(**{**f, "values": None if f.get("values") is None
                                     else tuple(f["values"]),
                                     "vocab": tuple(f.get("vocab") or ())})
                       for f in doc["fields"])
        return cls(fields, doc.get("objective", ""), tuple(doc.get("class_names") or ()),
                   doc.get("threshold"), doc.get("label"), bool(doc.get("strict", False)))

    def describe(self) -> dict[str, Any]:
        """What ``/metadata`` shows: every input and how answers read."""
        return {"inputs": [f.describe() for f in self.fields], "objective": self.objective,
                "class_names": list(self.class_names), "threshold": self.threshold,
                "label": self.label, "strict": self.strict}


# -- building the schema (training) -------------------------------------------------------

SERVED_DTYPES = {"float64": "float32", "int64": "int64", "string": "string"}


def input_schema(features: Sequence[Any], columns: Mapping[str, Mapping[str, Any]],
                 train: Mapping[str, Any], *, objective: str = "",
                 class_names: Sequence[str] = (), threshold: float | None = None,
                 label: str | None = None, strict: bool = False) -> InputSchema:
    """The schema of a tabular model from its features, source columns and training stats.

    Args:
        features: The packed features (:attr:`PreprocessSpec.packed`), in order.
        columns: The source schema (column -> dtype, header, min, max, values).
        train: The training split's statistics (:meth:`Analyzer.finish`).
        objective: The model kind.
        class_names: Class names in index order.
        threshold: Decision threshold shipped with the model.
        label: The label column.
        strict: Refuse instances with warnings.

    """
    by_column: dict[str, dict[str, Any]] = {}
    for f in features:
        col = columns[f.name]
        entry = by_column.setdefault(f.name, {
            "name": str(col.get("header") or f.name), "key": f.name,
            "dtype": SERVED_DTYPES[col["dtype"]], "min": col.get("min"),
            "max": col.get("max"),
            "values": None if col.get("values") is None else tuple(col["values"])})
        st = train.get("features", {}).get(f.name, {})
        if f.transform in ("vocab", "onehot"):
            entry["category"] = True
            vocab = list(st.get("vocab", []))
            if entry["dtype"] == "int64":
                vocab = [int(v) for v in vocab]
            elif entry["dtype"] == "float32":
                vocab = [float(v) for v in vocab]
            entry["vocab"] = tuple(vocab)
        elif "min" in st:
            lo, hi, mean = st["min"], st["max"], st["mean"]
            if f.log1p:  # the statistics are of log1p(x)
                lo, hi, mean = math.expm1(lo), math.expm1(hi), math.expm1(mean)
            entry["train_min"], entry["train_max"] = float(lo), float(hi)
            entry.setdefault("mean", float(mean))
    fields = []
    for entry in by_column.values():
        mean = entry.pop("mean", None)
        if entry.get("category"):
            fill = _outside(entry["vocab"], entry["dtype"])
        elif entry["dtype"] == "int64":
            fill = int(round(mean or 0.0))
        else:
            fill = float(mean or 0.0)
        fields.append(InputField(**entry, fill=fill))
    return InputSchema(tuple(fields), objective, tuple(str(c) for c in class_names),
                       threshold, label, strict)


def _outside(vocab: Sequence[Any], dtype: str) -> Any:
    """A value no vocabulary entry equals (it lands in the out-of-vocabulary bucket)."""
    if dtype == "string":
        return ""
    return (min(vocab, default=0) - 1) if dtype == "int64" else float("nan")


# -- decoding requests --------------------------------------------------------------------

_MISSING = object()


def _rows(instances: list[Any], schema: InputSchema) -> tuple[dict[str, list[Any]], bool]:
    """Column -> values of row-form instances (named objects, or bare positional lists).

    Returns the columns and whether the instances were bare vectors.
    """
    fields, names = schema.fields, schema.names
    if all(isinstance(x, dict) for x in instances):
        if all(set(x) == {"inputs"} for x in instances):  # the old single named input
            return _rows([x["inputs"] for x in instances], schema)[0], True
        wanted = set(names)
        rows = [inst if inst.keys() == wanted else _renamed(inst, i, schema)
                for i, inst in enumerate(instances)]
        return {f.key: [inst.get(f.name, _MISSING) for inst in rows] for f in fields}, False
    if all(isinstance(x, list) for x in instances):
        for i, inst in enumerate(instances):
            if len(inst) != len(fields):
                raise InputError(
                    f"instance {i} has {len(inst)} values; the bare vector form takes "
                    f"{len(fields)} values in the order {names}, or send named fields "
                    f"({{\"{names[0]}\": ...}})")
        return {f.key: [inst[j] for inst in instances] for j, f in enumerate(fields)}, True
    raise InputError(f"instances must all be objects naming the fields {names} (or all "
                     "lists of values in that order)")


def _renamed(inst: Mapping[str, Any], i: int, schema: InputSchema) -> dict[str, Any]:
    """An instance keyed by served names (identifiers accepted); unknown names refused."""
    out: dict[str, Any] = {}
    for k, v in inst.items():
        f = schema.lookup(k) if isinstance(k, str) else None
        if f is None:
            import difflib

            close = difflib.get_close_matches(str(k), schema.names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"instance {i}: unknown field {k!r}{hint}; the model takes "
                             f"{schema.names}")
        if f.name in out:
            raise InputError(f"instance {i} gives field {f.name!r} twice")
        out[f.name] = v
    return out


def _columnar(inputs: Any, schema: InputSchema) -> tuple[dict[str, list[Any]], bool]:
    """Column -> values of the columnar form (named lists, or a batch of bare vectors)."""
    if isinstance(inputs, dict):
        if set(inputs) == {"inputs"} and schema.lookup("inputs") is None:
            return _columnar(inputs["inputs"], schema)
        lengths = set()
        cols: dict[str, list[Any]] = {}
        for k, v in inputs.items():
            f = schema.lookup(k)
            if f is None:
                raise InputError(f"'inputs' names unknown field {k!r}; the model takes "
                                 f"{schema.names}")
            if not isinstance(v, list):
                raise InputError(f"'inputs' field {k!r} must be a list (one value per "
                                 "instance)")
            cols[f.key] = v
            lengths.add(len(v))
        if len(lengths) > 1:
            raise InputError(f"the columns of 'inputs' differ in length: {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        if not n:
            raise InputError("'inputs' must hold at least one instance")
        return {f.key: cols.get(f.key, [_MISSING] * n) for f in schema.fields}, False
    if isinstance(inputs, list) and inputs:
        return _rows(inputs, schema)
    raise InputError("'inputs' must be an object of named columns or a non-empty list")


def _typed(f: InputField, values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """One column as the model's dtype, and the mask of missing values (null or absent).

    Raises:
        InputError: A value of the wrong type (text for a number, a fraction for an
            integer, a number for a text field).

    """
    missing = np.fromiter((v is None or v is _MISSING for v in values), bool, len(values))
    if f.dtype == "string":
        bad = next((i for i, v in enumerate(values) if not missing[i]
                    and not isinstance(v, str)), None)
        if bad is not None:
            raise InputError(f"field {f.name!r} takes text, got {values[bad]!r} (instance "
                             f"{bad}); send it as a JSON string")
        arr = np.array([f.fill if m else v for v, m in zip(values, missing, strict=True)],
                       dtype=object)
        return arr, missing
    filled = [f.fill if m else v for v, m in zip(values, missing, strict=True)]
    bad = next((i for i, v in enumerate(filled) if isinstance(v, bool)
                or not isinstance(v, int | float)), None)
    if bad is not None:
        what = "integers" if f.dtype == "int64" else "numbers"
        raise InputError(f"field {f.name!r} takes {what}, got {values[bad]!r} (instance "
                         f"{bad})")
    arr = np.asarray(filled, dtype=np.float64)
    if not np.isfinite(arr[~missing]).all():
        raise InputError(f"field {f.name!r}: values are NaN, infinite or out of range")
    if f.dtype == "int64":
        if (arr[~missing] != np.floor(arr[~missing])).any():
            i = int(np.flatnonzero(~missing & (arr != np.floor(arr)))[0])
            raise InputError(f"field {f.name!r} takes integers, got {values[i]!r} "
                             f"(instance {i})")
        if np.abs(arr[~missing]).max(initial=0) > 2**62:
            raise InputError(f"field {f.name!r}: integer out of range")
        return arr.astype(np.int64), missing
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    if not np.isfinite(out[~missing]).all():
        raise InputError(f"field {f.name!r}: values out of float32 range")
    return out, missing


def _typed_numbers(schema: InputSchema, raw: Mapping[str, list[Any]]
                   ) -> dict[str, np.ndarray]:
    """All number fields at once, when every value is a present int or float.

    The common case costs one array conversion instead of one per field; any other
    value (a missing one, text, a boolean, a fraction for an integer, a huge number)
    leaves every number field to :func:`_typed`, which names the problem.
    """
    plan = schema._plan
    fields = plan["numbers"]
    columns = [raw[f.key] for f in fields]
    if not fields or not all(type(v) in (int, float) for col in columns for v in col):
        return {}
    x = np.array(columns, dtype=np.float64)
    ints, floats = plan["ints"], plan["floats"]
    with np.errstate(over="ignore"):
        narrow = x[floats].astype(np.float32)
    if not np.isfinite(narrow).all() or not np.isfinite(x).all():
        return {}
    if ints:
        whole = x[ints]
        if (whole != np.floor(whole)).any() or np.abs(whole).max() > 2**62:
            return {}
    out = {fields[i].key: row for i, row in zip(floats, narrow, strict=True)}
    out.update({fields[i].key: x[i].astype(np.int64) for i in ints})
    return out


def _range_text(lo: Any, hi: Any) -> str:
    return f"[{_num(lo)}, {_num(hi)}]"


def _num(v: Any) -> str:
    if v is None:
        return "-inf"
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _limits(f: InputField) -> tuple[float, float]:
    """The range a number is checked against: declared and training ranges intersected."""
    lows = [v for v in (f.min, f.train_min) if v is not None]
    highs = [v for v in (f.max, f.train_max) if v is not None]
    return (max(lows) if lows else -np.inf), (min(highs) if highs else np.inf)


def _range_problem(f: InputField) -> str:
    parts = []
    if (f.min, f.max) != (None, None):
        parts.append(f"declared range {_range_text(f.min, f.max)}")
    if f.train_min is not None:
        parts.append(f"training range {_range_text(f.train_min, f.train_max)}")
    return f"outside the {' and '.join(parts)}"


def check_columns(cols: Mapping[str, np.ndarray], schema: InputSchema,
                  missing: Mapping[str, np.ndarray] | None = None
                  ) -> tuple[list[list[dict[str, Any]]], dict[str, dict[str, int]]]:
    """The schema's checks over typed columns: per-instance warnings and counts per field.

    Numbers are checked all fields at once (one array operation), categories per field;
    warnings are only built for the values that fail.

    Args:
        cols: Model input name -> values (one entry per instance).
        schema: The model's input schema.
        missing: Model input name -> mask of values that were missing (filled).

    Returns:
        ``warnings[i]``: ``{"field", "value", "problem", "kind"}`` for instance ``i``
        (``kind`` in :data:`PROBLEMS`), in field order, and ``{field: {kind: count}}``
        (only non-zero).

    """
    n = len(next(iter(cols.values()))) if cols else 0
    warnings: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    counts: dict[str, dict[str, int]] = {}
    plan = schema._plan
    flagged = False

    def flag(mask: np.ndarray, f: InputField, kind: str, problem: str) -> None:
        nonlocal flagged
        hits = np.flatnonzero(mask)
        if not len(hits):
            return
        flagged = True
        counts.setdefault(f.name, {})[kind] = counts.get(f.name, {}).get(kind, 0) + len(hits)
        values = cols[f.key]
        for i in hits.tolist():
            v = None if kind == "missing" else values[i]
            v = v.item() if hasattr(v, "item") else v
            warnings[i].append({"field": f.name, "value": v, "kind": kind,
                                "problem": problem})

    gone = {k: np.asarray(m, bool) for k, m in (missing or {}).items()}
    none = np.zeros(n, bool)
    for f in schema.fields if gone else ():
        if f.key in gone:
            how = ("filled with the out-of-vocabulary bucket" if f.category else
                   f"filled with the training mean {_num(f.fill)}")
            flag(gone[f.key], f, "missing", f"missing value; {how}")
    numeric = plan["ranged"]
    if numeric and n:
        x = np.array([cols[f.key] for f in numeric], np.float64)
        lo, hi = plan["limits"]
        bad = (x < lo[:, None]) | (x > hi[:, None])
        for i in np.flatnonzero(bad.any(axis=1)).tolist():
            f = numeric[i]
            flag(bad[i] & ~gone.get(f.key, none), f, "out_of_range", _range_problem(f))
        for i, f in enumerate(numeric):
            if f.values is not None:
                ok = np.isin(x[i], np.asarray(f.values, np.float64))
                flag(~ok & ~gone.get(f.key, none), f, "out_of_range",
                     f"not one of {_shown(f.values)}")
    for f in schema.fields:
        if not f.category:
            if f.dtype == "string" and f.values is not None:
                allowed_set = set(f.values)
                ok = np.fromiter((v in allowed_set for v in cols[f.key].tolist()), bool, n)
                flag(~ok & ~gone.get(f.key, none), f, "out_of_range",
                     f"not one of {_shown(f.values)}")
            continue
        x = cols[f.key]
        if f.dtype == "string":
            vocab = set(f.vocab)
            seen = np.fromiter((v in vocab for v in x.tolist()), bool, n)
        else:
            seen = np.isin(x, np.asarray(f.vocab, dtype=x.dtype))
        allowed = (f" (allowed: {_shown(f.values)})" if f.values is not None else
                   f" (training vocabulary: {_shown(f.vocab)})")
        flag(~seen & ~gone.get(f.key, none), f, "unseen_category",
             f"category not seen in training{allowed}; answered as the "
             "out-of-vocabulary bucket")
    if flagged:
        for found in warnings:
            if len(found) > 1:
                found.sort(key=lambda w: plan["order"][w["field"]])
    return warnings, counts


def _shown(values: Sequence[Any] | None, limit: int = 12) -> str:
    values = list(values or [])
    if len(values) <= limit:
        return str(values)
    return f"{values[:limit]} ... ({len(values)} values)"


@dataclass
class Decoded:
    """Request instances as the model's inputs, with what the schema checks found.

    Attributes:
        inputs: Model input name -> typed values (one per instance).
        warnings: Per instance, ``{"field", "value", "problem", "kind"}`` dicts.
        counts: ``{field: {kind: count}}`` over the batch.
        bare: The instances came as bare positional vectors (the old form).

    """

    inputs: dict[str, np.ndarray]
    warnings: list[list[dict[str, Any]]]
    counts: dict[str, dict[str, int]]
    bare: bool

    def __len__(self) -> int:
        return len(self.warnings)


def to_model_inputs(instances: Any, schema: InputSchema, *, columnar: bool = False,
                    strict: bool | None = None) -> Decoded:
    """Turn request instances into the model's input columns, checked against the schema.

    Args:
        instances: Row form: a list of objects naming the fields (served names or model
            input names), or of bare lists in field order. Columnar form (``columnar``):
            an object of named lists, or a list of bare lists.
        schema: The model's input schema.
        columnar: ``instances`` is the columnar ``inputs`` value.
        strict: Refuse an instance with any warning (default: the schema's own setting).

    Returns:
        The model inputs, per-instance warnings and counts per field.

    Raises:
        InputError: Unknown or duplicate fields, wrong types, ragged columns; in strict
            mode, the first warning (naming the field and the allowed values or range).

    """
    if columnar:
        raw, bare = _columnar(instances, schema)
    else:
        if not isinstance(instances, list) or not instances:
            raise InputError("'instances' must be a non-empty list of instances")
        raw, bare = _rows(instances, schema)
    inputs = _typed_numbers(schema, raw)
    missing: dict[str, np.ndarray] = {}
    for f in schema.fields:
        if f.key not in inputs:  # text fields, and numbers that need the careful path
            inputs[f.key], gone = _typed(f, raw[f.key])
            if gone.any():
                missing[f.key] = gone
    warnings, counts = check_columns(inputs, schema, missing)
    if schema.strict if strict is None else strict:
        for i, found in enumerate(warnings):
            if found:
                w = found[0]
                f = schema.lookup(w["field"])
                assert f is not None
                raise InputError(f"instance {i}: field {w['field']!r} {_refusal(w, f)} "
                                 "(strict inputs: values outside the schema are refused)",
                                 counts, len(warnings))
    return Decoded(inputs, warnings, counts, bare)


def _refusal(w: Mapping[str, Any], f: InputField) -> str:
    """Why strict mode refuses a value, naming the allowed values or range."""
    if w["kind"] == "missing":
        return "is missing"
    if w["kind"] == "unseen_category":
        known = f.values if f.values is not None else f.vocab
        return (f"= {w['value']!r} is a category not seen in training; allowed values: "
                f"{_shown(known)}")
    return f"= {w['value']!r} is {w['problem']}"


# -- answers ------------------------------------------------------------------------------


def readable_answers(outputs: Any, schema: InputSchema) -> list[dict[str, Any]] | None:
    """Per instance, the answer a person reads; None when the kind has no readable form.

    - classification: ``{"label", "classes", "scores"}`` (class names and probabilities);
    - binary: ``{"label", "probability", "threshold"}`` (the decision at the shipped
      threshold; ``label`` is the class name when the classes have names);
    - regression: ``{"value"}``;
    - anomaly: ``{"anomaly", "score", "threshold"}``.
    """
    kind = schema.objective
    names = list(schema.class_names)
    if kind == "classification":
        proba = np.asarray(outputs, np.float64)
        names = names or [str(i) for i in range(proba.shape[1])]
        top = proba.argmax(axis=1)
        return [{"label": names[j], "classes": names, "scores": p.tolist()}
                for j, p in zip(top.tolist(), proba, strict=True)]
    if kind == "binary":
        p = np.asarray(outputs, np.float64).reshape(-1)
        t = 0.5 if schema.threshold is None else float(schema.threshold)
        decide = (p > t).astype(int).tolist()
        return [{"label": names[d] if len(names) == 2 else d, "probability": float(q),
                 "threshold": t} for d, q in zip(decide, p.tolist(), strict=True)]
    if kind == "regression":
        v = np.asarray(outputs, np.float64).reshape(len(outputs), -1)[:, 0]
        return [{"value": float(x)} for x in v.tolist()]
    if kind == "anomaly" and isinstance(outputs, dict):
        score = np.asarray(outputs["score"], np.float64).reshape(-1)
        flag = np.asarray(outputs["flag"]).reshape(-1)
        return [{"anomaly": bool(f), "score": float(s), "threshold": schema.threshold}
                for s, f in zip(score.tolist(), flag.tolist(), strict=True)]
    return None
