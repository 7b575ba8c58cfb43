"""The serving signature of a Keras model, and its TF Serving ``signature_def`` form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_TF_DTYPES = {"float16": "DT_HALF", "float32": "DT_FLOAT", "float64": "DT_DOUBLE",
              "int8": "DT_INT8", "int16": "DT_INT16", "int32": "DT_INT32", "int64": "DT_INT64",
              "uint8": "DT_UINT8", "uint16": "DT_UINT16", "bool": "DT_BOOL",
              "string": "DT_STRING"}

Shape = tuple[int | None, ...]
# The one signature every served model has, under TF Serving's default name.
SIGNATURE_NAME = "serving_default"


@dataclass(frozen=True)
class Signature:
    """The serving signature of a single-input model with one or several named outputs.

    Shapes exclude the batch dimension; ``None`` is a dimension of any size. ``outputs``
    lists every output as (name, shape, dtype); the ``output_*`` fields describe the first.
    A model with several outputs answers, as TF Serving does, one object per instance
    (row format) or one list per output (columnar format).
    """

    input_name: str
    input_shape: Shape
    input_dtype: str
    output_name: str
    output_shape: Shape
    output_dtype: str
    outputs: tuple[tuple[str, Shape, str], ...] = ()

    @property
    def image_shape(self) -> Shape | None:
        """(H, W) or (H, W, C) with C in 1, 3, 4 when the input can be an encoded image.

        An image input has a fully defined shape of rank 2 or 3 and a numeric dtype.
        """
        shape, dtype = self.input_shape, self.input_dtype
        if dtype in ("string", "bool") or any(d is None for d in shape):
            return None
        if len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4)):
            return shape
        return None

    def to_tf_serving(self) -> dict[str, Any]:
        """``signature_def`` in TF Serving's metadata format."""
        def tensor(name: str, shape: Shape, dtype: str) -> dict[str, Any]:
            dims = [{"size": "-1", "name": ""}] + [
                {"size": str(-1 if d is None else d), "name": ""} for d in shape]
            return {"dtype": _TF_DTYPES.get(dtype, dtype), "name": name,
                    "tensor_shape": {"dim": dims, "unknown_rank": False}}

        return {"signature_def": {SIGNATURE_NAME: {
            "inputs": {self.input_name: tensor(self.input_name, self.input_shape,
                                               self.input_dtype)},
            "outputs": {n: tensor(n, shape, dtype) for n, shape, dtype in (
                self.outputs or ((self.output_name, self.output_shape, self.output_dtype),))},
            "method_name": "tensorflow/serving/predict",
        }}}


def signature_of(model: Any) -> Signature:
    """Read the serving signature of a Keras model.

    Raises:
        ValueError: The model does not have exactly one input, or its several outputs are
            not named (a dict).

    """
    if len(model.inputs) != 1:
        raise ValueError(f"only single-input models are served; this one has "
                         f"{len(model.inputs)} inputs")
    inp = model.inputs[0]

    def dims(t: Any) -> Shape:
        return tuple(None if d is None else int(d) for d in t.shape[1:])

    def name(t: Any, default: str) -> str:
        return str(getattr(t, "name", "") or default).split(":")[0]

    if isinstance(model.output, dict):  # named outputs, e.g. {"score", "flag"}
        outs = tuple((k, dims(t), str(t.dtype)) for k, t in model.output.items())
        first = outs[0]
        return Signature(name(inp, "input"), dims(inp), str(inp.dtype), *first, outputs=outs)
    if len(model.outputs) != 1:
        raise ValueError(f"a model with {len(model.outputs)} outputs must name them (dict)")
    out = model.outputs[0]
    # Keras names output tensors keras_tensor_N; the producing layer's name is the useful one.
    out_name = (list(getattr(model, "output_names", None) or []) or [name(out, "output")])[0]
    return Signature(name(inp, "input"), dims(inp), str(inp.dtype), out_name, dims(out),
                     str(out.dtype))


def example_batch(sig: Signature) -> np.ndarray:
    """A one-instance batch of zeros (or empty strings) matching the input."""
    shape = (1, *[1 if d is None else d for d in sig.input_shape])
    if sig.input_dtype == "string":
        return np.full(shape, b"", dtype=object)
    return np.zeros(shape, dtype=sig.input_dtype)


def shape_text(shape: Shape) -> str:
    """``[28, 28]``, with ``?`` for a dimension of any size."""
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
