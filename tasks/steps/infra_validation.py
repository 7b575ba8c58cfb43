"""Infra validation: the candidate must load and answer as served before ``champion`` moves.

The registered version is loaded exactly as the REST server loads it
(:func:`tasks.tracking.loader.load_registered`) and asked its own serving example (the
input example logged with the model: raw inputs as a client sends them). Its answer must
have the logged output signature's shape (batch = example rows) and finite values.
A failure stops the deploy before any alias moves, so the old champion keeps serving;
the reason goes to the task log, the candidate's MLflow run and the version's tags.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.config import Settings
from tasks.core.errors import PermanentError
from tasks.core.files import write_json
from tasks.tracking import configure
from tasks.tracking.loader import load_registered

log = logging.getLogger(__name__)


class InfraValidationError(PermanentError, RuntimeError):
    """The candidate cannot serve; the deploy stopped before the alias moved."""


SERVING_EXAMPLE = "serving_example.json"  # the run's example, as the served model takes it


def write_serving_example(example: Any, path: Path) -> dict[str, Any]:
    """Keep the example the served model was exported with (bytes as base64); returns it.

    A tabular model's example is named columns: ``{"columns": {name: {dtype, values}}}``.
    """
    if isinstance(example, dict):
        doc: dict[str, Any] = {"columns": {
            k: {"dtype": "string" if np.asarray(v).dtype == object else str(np.asarray(v).dtype),
                "values": [str(x) for x in v.tolist()] if np.asarray(v).dtype == object
                else np.asarray(v).tolist()} for k, v in example.items()}}
        write_json(path, doc)
        return doc
    if example.dtype == object:
        values = [{"b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else str(v)
                  for v in example.tolist()]
        doc = {"dtype": "string", "values": values}
    else:
        doc = {"dtype": str(example.dtype), "values": example.tolist()}
    write_json(path, doc)
    return doc


def read_serving_example(doc: dict[str, Any]) -> Any:
    """The array (or named columns) :func:`write_serving_example` kept."""
    if "columns" in doc:
        return {k: np.array(c["values"], dtype=object) if c["dtype"] == "string"
                else np.asarray(c["values"], dtype=c["dtype"]) for k, c in doc["columns"].items()}
    if doc["dtype"] == "string":
        return np.array([base64.b64decode(v["b64"]) if isinstance(v, dict) else v.encode()
                         for v in doc["values"]], dtype=object)
    return np.asarray(doc["values"], dtype=doc["dtype"])


def serving_example(name: str, version: str, model: Any, run_id: str | None = None
                    ) -> tuple[Any, dict[str, tuple]]:
    """The version's serving example and its logged output shapes (batch dim dropped).

    The example is the one the training run exported the model with
    (:data:`SERVING_EXAMPLE`, raw media and text included), else MLflow's input example;
    models logged without either get a zero batch of a numeric input's shape.
    """
    import mlflow
    from mlflow.models import Model

    local = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}")
    meta = Model.load(local)
    example = None
    if run_id:
        try:
            example = read_serving_example(
                mlflow.artifacts.load_dict(f"runs:/{run_id}/{SERVING_EXAMPLE}"))
        except Exception:  # noqa: BLE001 - runs logged before the example was kept
            example = None
    if example is None and meta.saved_input_example_info:
        example = meta.load_input_example(local)
        if not isinstance(example, dict):
            example = np.asarray(example)
    inp = model.inputs[0]
    if isinstance(example, dict):  # named inputs, typed as the model's
        dtypes = {t.name.split(":")[0]: str(t.dtype) for t in model.inputs}
        example = {k: np.asarray(v, dtype=object if dtypes.get(k) == "string"
                                 else dtypes.get(k)) for k, v in example.items()}
    elif example is None:
        example = np.zeros((1, *[d or 1 for d in inp.shape[1:]]), dtype=str(inp.dtype))
    elif example.dtype.kind in "biuf":  # numbers in the input's dtype; text/bytes as is
        example = np.asarray(example, dtype=str(inp.dtype))
    shapes: dict[str, tuple] = {}
    if meta.signature is not None and meta.signature.outputs is not None:
        for i, spec in enumerate(meta.signature.outputs.inputs):
            shape = getattr(spec, "shape", None)
            if shape is not None:
                shapes[spec.name or f"output_{i}"] = tuple(shape[1:])
    return example, shapes


def check_answer(out: Any, rows: int, shapes: dict[str, tuple]) -> list[str]:
    """What is wrong with a model's answer to ``rows`` example rows (empty: nothing)."""
    named = out if isinstance(out, dict) else {"output": out}
    problems = []
    expected = list(shapes.values())
    for i, (key, value) in enumerate(named.items()):
        arr = np.asarray(value)
        if arr.shape[:1] != (rows,):
            problems.append(f"output {key!r} has {arr.shape[:1]} rows for {rows} example rows")
        want = shapes.get(key) or (expected[i] if len(expected) == len(named) else None)
        if want is not None and (len(want) != arr.ndim - 1 or any(
                w not in (-1, None) and w != d for w, d in zip(want, arr.shape[1:], strict=False))):
            problems.append(f"output {key!r} has shape {arr.shape[1:]}, its signature "
                            f"says {want}")
        if np.issubdtype(arr.dtype, np.number) and not np.isfinite(arr).all():
            problems.append(f"output {key!r} has {int((~np.isfinite(arr)).sum())} non-finite "
                            f"of {arr.size} values")
    return problems


def validate(name: str, version: str, run_id: str, s: Settings | None = None,
             alias: str = "champion") -> dict[str, Any]:
    """Load version ``version`` of ``name`` as served and make it answer its example.

    ``alias`` is the one that moves only if it passes (named in the failure message).

    Returns:
        ``{"rows", "outputs"}``: what the example gave (shapes).

    Raises:
        InfraValidationError: It does not load, fails to answer, or answers with the wrong
            shape or non-finite values; recorded on the run and the version first.

    """
    import mlflow

    client = configure(s)
    try:
        loaded = load_registered(name, version, s)
        example, shapes = serving_example(name, version, loaded.model, run_id)
        out = loaded.predict(example)
        rows = len(next(iter(example.values()))) if isinstance(example, dict) else len(example)
        problems = check_answer(out, rows, shapes)
    except Exception as exc:  # noqa: BLE001 - any failure to load or answer is the verdict
        problems = [f"{type(exc).__name__}: {str(exc).splitlines()[0][:500] if str(exc) else ''}"]
        out = None
    if problems:
        reason = (f"{name} version {version} failed infra validation (loaded as the server "
                  f"loads it, asked its own serving example): " + "; ".join(problems)
                  + f"; the {alias} alias did not move")
        log.error(reason)
        client.set_model_version_tag(name, version, "infra_validation", "failed")
        client.set_model_version_tag(name, version, "infra_validation_reason", reason[:5000])
        with mlflow.start_run(run_id=run_id):
            mlflow.set_tags({"infra_validation": "failed",
                             "infra_validation.reason": reason[:5000]})
        raise InfraValidationError(reason)
    named = out if isinstance(out, dict) else {"output": out}
    result = {"rows": rows,
              "outputs": {k: list(np.asarray(v).shape) for k, v in named.items()}}
    client.set_model_version_tag(name, version, "infra_validation", "passed")
    log.info("%s version %s answered its serving example as served: %s", name, version,
             result)
    return result
