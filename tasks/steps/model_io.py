"""Between a source's columns and a served model's inputs, read from the model's signature.

Batch scoring feeds source batches to the served model (:func:`served_inputs`); the
monitor turns the server's logged request inputs back into source columns
(:func:`source_columns`) to compare them with the training data. Both follow the served
model's own input signature, never hard-coded names:

- a model whose inputs are named after source columns (one input per raw column) gets
  one array per input, cast to the input's dtype;
- a model with one packed input (``inputs``: the tabular features in
  :attr:`~tasks.spec.PreprocessSpec.packed` order) gets the stacked float32 matrix;
- a raw-media front end (``ModelSpec.serving_input``) gets bytes: the front end's
  ``encode`` of the decoded training-form column (a face crop's JPEG) or the file itself
  (a WAV clip);
- any other single input gets the model's input column (``ModelSpec.input_key``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.tfrecord import PACKED, pack_raw
from tasks.spec import UseCaseSpec


class InputMismatch(ValueError):
    """The data does not hold what the served model takes; the message says what."""


def model_inputs(model: Any) -> list[tuple[str, str, tuple[int | None, ...]]]:
    """(name, dtype, shape without batch) of every input of a Keras model."""
    return [(str(getattr(t, "name", "") or "input").split(":")[0], str(t.dtype),
             tuple(None if d is None else int(d) for d in t.shape[1:])) for t in model.inputs]


def _cast(values: Any, dtype: str) -> np.ndarray:
    if dtype == "string":
        return np.asarray([v if isinstance(v, bytes) else str(v).encode()
                           for v in np.asarray(values, object).ravel()], object)
    return np.asarray(values).astype(dtype, copy=False)


def served_inputs(spec: UseCaseSpec, model: Any, cols: Mapping[str, Any]) -> Any:
    """The served model's input for a batch of source columns (see the module docstring).

    Raises:
        InputMismatch: A column the model takes is missing from the batch.

    """
    mk = spec.model
    inputs = model_inputs(model)
    si = mk.serving_input
    if si is not None and len(inputs) == 1 and inputs[0][1] == "string":
        if hasattr(si, "encode") and mk.input_key in cols:
            return np.asarray(si.encode(cols[mk.input_key]), object)
        if "_path" in cols:
            return np.asarray([Path(p).read_bytes() for p in cols["_path"]], object)
        raise InputMismatch(f"{spec.name}: the served model takes media files; the input "
                            "holds neither the files nor decoded media")
    names = [name for name, _, _ in inputs]
    if len(inputs) > 1 or (names[0] in cols and names[0] != mk.input_key):
        missing = [n for n in names if n not in cols]
        if missing:
            raise InputMismatch(f"{spec.name}: the served model takes {names}; the data has "
                                f"no {missing}")
        return {name: _cast(cols[name], dtype) for name, dtype, _ in inputs}
    name, dtype, _ = inputs[0]
    if mk.input_key == PACKED:
        return pack_raw(spec.preprocess, cols).astype(dtype, copy=False)
    if mk.input_key not in cols:
        raise InputMismatch(f"{spec.name}: the served model's input {name!r} comes from "
                            f"column {mk.input_key!r}, which the data does not hold")
    return _cast(cols[mk.input_key], dtype)


def source_columns(spec: UseCaseSpec, inputs: Mapping[str, Any],
                   input_names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Source columns from a served model's inputs by input name (logged requests).

    The inverse of :func:`served_inputs` where there is one: named inputs are source
    columns already; a packed vector is split into the packed features; a single other
    input is the model's input column. Media bytes have no source columns (empty).
    """
    mk = spec.model
    names = list(inputs) if input_names is None else input_names
    packed = [f.name for f in spec.preprocess.packed]
    if len(names) == 1 and mk.serving_input is not None and mk.input_key != PACKED:
        return {}
    if len(names) == 1 and names[0] not in packed and mk.input_key == PACKED:
        x = np.asarray(inputs[names[0]], np.float64)
        if x.ndim == 2 and x.shape[1] == len(packed):
            return {f: x[:, i] for i, f in enumerate(packed)}
        return {}
    if len(names) == 1 and names[0] not in packed:
        return {mk.input_key: np.asarray(inputs[names[0]])}
    return {n: np.asarray(inputs[n]) for n in names}
