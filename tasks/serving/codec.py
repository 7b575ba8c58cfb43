"""Request codec: decode and validate a predict body against a signature, encode answers.

Pure functions of bytes and a :class:`~tasks.serving.signature.Signature` (no TensorFlow,
no HTTP), so they are tested alone and can run in any thread or process.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import warnings
from typing import Any

import numpy as np
import orjson

from tasks.serving.signature import SIGNATURE_NAME, Signature, shape_text

MAX_INSTANCES = 4096
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
# Registered model names the server answers for: no path separators, no "..", no spaces or
# control characters; MLflow and every use case name fit.
_MODEL_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,126}[A-Za-z0-9_])?")
_VERSION = re.compile(r"[0-9]{1,9}")


class BadRequest(ValueError):
    """The request cannot be served (HTTP 400); the message goes back to the client."""


# -- path parts ---------------------------------------------------------------------------


def model_name(raw: str) -> str:
    """A model name from the URL, checked before it reaches the registry.

    Raises:
        BadRequest: Not 1-128 ASCII letters, digits, ``_``, ``.``, ``-`` (starting with a
            letter or digit, not ending with ``.`` or ``-``), or containing ``..``.

    """
    if not _MODEL_NAME.fullmatch(raw) or ".." in raw:
        shown = raw if len(raw) <= 80 else raw[:80] + "..."
        raise BadRequest(f"model name {shown!r} is invalid: use 1-128 ASCII letters, digits, "
                         "'_', '.' or '-', starting with a letter or digit")
    return raw


def version_number(raw: str) -> str:
    """A version from the URL as the registry writes it (``"007"`` -> ``"7"``).

    Raises:
        BadRequest: Not a positive integer of at most 9 ASCII digits.

    """
    if not _VERSION.fullmatch(raw) or int(raw) < 1:
        shown = raw if len(raw) <= 20 else raw[:20] + "..."
        raise BadRequest(f"version must be a positive integer of at most 9 digits, "
                         f"got {shown!r}")
    return str(int(raw))


def dumps(obj: Any) -> bytes:
    """JSON bytes of ``obj``; NumPy arrays are serialised natively."""
    return orjson.dumps(obj, option=_NUMPY)


# -- binary values ------------------------------------------------------------------------


def _named(value: Any, sig: Signature, where: str) -> Any:
    """Unwrap ``{"<input name>": tensor}``; anything else is returned as is."""
    if not isinstance(value, dict) or "b64" in value:
        return value
    if set(value) != {sig.input_name}:
        raise BadRequest(f"{where} names inputs {sorted(value)}; the model has one input "
                         f"{sig.input_name!r}")
    return value[sig.input_name]


def _has_b64(data: Any) -> bool:
    if isinstance(data, dict):
        return "b64" in data
    return isinstance(data, list) and any(_has_b64(x) for x in data)


def b64_bytes(value: Any) -> bytes:
    """The bytes of a ``{"b64": "..."}`` value.

    Raises:
        BadRequest: Not exactly ``{"b64": str}``, or invalid base64.

    """
    if set(value) != {"b64"} or not isinstance(value["b64"], str):
        raise BadRequest('a binary value must be {"b64": "<base64 string>"}')
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"invalid base64 value: {exc}") from exc


def _decode_strings(data: Any) -> Any:
    if isinstance(data, dict):
        raw = b64_bytes(data)
        if raw.startswith((_PNG, _JPEG)):
            check_encoded_image(raw)
        return raw
    if isinstance(data, list):
        return [_decode_strings(x) for x in data]
    return data


_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
# Pillow modes per channel count: what an image is converted to before it becomes a tensor.
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


# Encoded images a model decodes itself (string inputs, e.g. faces' JPEG crops) are bounded
# before they reach it: a 25-megapixel photo is the largest a client plausibly sends; a
# small PNG declaring 60000x60000 pixels (a decompression bomb) would take gigabytes.
MAX_ENCODED_IMAGE_PIXELS = 25_000_000


def _open_image(raw: bytes) -> Any:
    """A Pillow image of which only the header has been read.

    Raises:
        BadRequest: Not a readable PNG/JPEG, or Pillow's decompression-bomb limit.

    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # over the limit's half: our own bound decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(raw), formats=("PNG", "JPEG"))
    except Image.DecompressionBombError as exc:
        raise BadRequest(f"the image is too large to decode: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadRequest(f"b64 value is not a readable PNG or JPEG image: {exc}") from exc


def check_encoded_image(raw: bytes) -> None:
    """Refuse a PNG/JPEG whose header declares more than the pixels a model may decode.

    Raises:
        BadRequest: Unreadable header, or more than :data:`MAX_ENCODED_IMAGE_PIXELS`.

    """
    width, height = _open_image(raw).size
    if width * height > MAX_ENCODED_IMAGE_PIXELS:
        raise BadRequest(f"the image is {width}x{height} ({width * height:,} pixels); at "
                         f"most {MAX_ENCODED_IMAGE_PIXELS:,} pixels are decoded: scale it "
                         "down before sending")


def _image_text(shape: tuple[int, ...]) -> str:
    channels = {1: "grayscale", 3: "RGB", 4: "RGBA"}[shape[2] if len(shape) == 3 else 1]
    return f"{shape[1]}x{shape[0]} (width x height) {channels}"


def decode_image(raw: bytes, sig: Signature) -> np.ndarray:
    """A PNG or JPEG image -> an array of the input's shape and dtype (never resized).

    The image is converted to the input's channels (grayscale, RGB or RGBA); pixel values
    stay 0-255, as the raw pixels a model is trained on.

    Raises:
        BadRequest: Not a readable PNG/JPEG, or its size differs from the input's.

    """
    shape = sig.image_shape
    assert shape is not None
    img = _open_image(raw)
    # Only the header has been read: check the size before decoding any pixel.
    if img.size != (shape[1], shape[0]):
        raise BadRequest(f"the image is {img.size[0]}x{img.size[1]}; input "
                         f"{sig.input_name!r} expects {_image_text(shape)}: resize it "
                         "before sending (the server never resizes)")
    try:
        pixels = np.asarray(img.convert(_MODES[shape[2] if len(shape) == 3 else 1]))
    except (OSError, ValueError) as exc:  # a truncated or corrupt pixel stream
        raise BadRequest(f"b64 value is not a readable PNG or JPEG image: {exc}") from exc
    return pixels.reshape(shape).astype(sig.input_dtype, copy=False)


def _decode_instance(item: dict, sig: Signature) -> np.ndarray:
    """One ``{"b64": ...}`` instance: raw uint8 bytes of the exact size, or an image."""
    raw = b64_bytes(item)
    shape = sig.input_shape
    defined = not any(d is None for d in shape)
    if sig.input_dtype == "uint8" and defined and len(raw) == math.prod(shape):
        return np.frombuffer(raw, dtype=np.uint8).reshape(shape)
    if sig.image_shape is not None and raw.startswith((_PNG, _JPEG)):
        return decode_image(raw, sig)
    image = (f" or a PNG/JPEG image of {_image_text(sig.image_shape)}"
             if sig.image_shape is not None else "")
    if sig.input_dtype == "uint8" and not defined:
        raise BadRequest(f"b64 instances need a fully defined input shape; "
                         f"{sig.input_name!r} is {shape_text(shape)}")
    if sig.input_dtype == "uint8":
        raise BadRequest(f"b64 instance decodes to {len(raw)} bytes; input "
                         f"{sig.input_name!r} {shape_text(shape)} uint8 needs "
                         f"{math.prod(shape)}{image}")
    raise BadRequest(f'binary {{"b64": ...}} values are accepted for uint8 and string '
                     f"inputs only, and as PNG/JPEG images for image inputs; input "
                     f"{sig.input_name!r} ({sig.input_dtype}) takes numbers{image}")


# -- element types ------------------------------------------------------------------------


def _typed_float(arr: np.ndarray, want: np.dtype, label: str) -> np.ndarray:
    if arr.dtype.kind not in "iuf":
        raise BadRequest(f"{label} takes numbers, got {arr.dtype.name} values")
    with np.errstate(over="ignore"):  # overflow becomes inf, rejected just below
        arr = arr.astype(want, copy=False)
    if not np.isfinite(arr).all():
        raise BadRequest(f"{label}: values are NaN, infinite or out of float range")
    return arr


def _typed_int(arr: np.ndarray, want: np.dtype, label: str) -> np.ndarray:
    kind = arr.dtype.kind
    if kind == "f":
        if not np.isfinite(arr).all() or (arr != np.floor(arr)).any():
            raise BadRequest(f"{label} takes integers, got fractional values")
    elif kind not in "iu":
        raise BadRequest(f"{label} takes integers, got {arr.dtype.name} values")
    info = np.iinfo(want)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise BadRequest(f"{label}: values must lie in [{info.min}, {info.max}]")
    return arr.astype(want, copy=False)


def _typed(arr: np.ndarray, data: Any, sig: Signature) -> np.ndarray:
    """Check the parsed array's element type against the input dtype and convert."""
    kind = arr.dtype.kind
    label = f"input {sig.input_name!r} ({sig.input_dtype})"
    if sig.input_dtype == "string":
        bad = [v for v in arr.flat if not isinstance(v, str | bytes)][:1]
        if bad:  # (a list: a null is a bad value too, so None cannot mean "none found")
            raise BadRequest(f"{label} takes strings, got {type(bad[0]).__name__} values")
        return arr
    if kind == "O" and _has_b64(data):
        raise BadRequest(f'binary {{"b64": ...}} values are accepted for uint8 and string '
                         f"inputs only; {label} takes numbers")
    if kind in "USO":
        got = "strings" if kind in "US" else "non-numeric values (null, objects or mixed)"
        raise BadRequest(f"{label} takes numbers, got {got}")
    want = np.dtype(sig.input_dtype)
    if want.kind == "f":
        return _typed_float(arr, want, label)
    if want.kind in "iu":
        return _typed_int(arr, want, label)
    if want.kind == "b" and kind == "b":
        return arr
    raise BadRequest(f"{label} cannot take {arr.dtype.name} values")


# -- the request --------------------------------------------------------------------------


def _instances(payload: Any, sig: Signature) -> tuple[list[Any], str]:
    """The list of instances (batch first) and the response key, from the parsed body."""
    if not isinstance(payload, dict):
        raise BadRequest("the body must be a JSON object with 'instances' or 'inputs'")
    if ("instances" in payload) == ("inputs" in payload):
        raise BadRequest("the body must have exactly one of 'instances' (row format) or "
                         "'inputs' (columnar format)")
    name = payload.get("signature_name", SIGNATURE_NAME)
    if name != SIGNATURE_NAME:
        shown = name if not isinstance(name, str) or len(name) <= 80 else name[:80] + "..."
        raise BadRequest(f"unknown signature_name {shown!r}: the model has one signature, "
                         f"{SIGNATURE_NAME!r} (omit the field to use it)")
    if "instances" in payload:
        key, data = "predictions", payload["instances"]
        if not isinstance(data, list) or not data:
            raise BadRequest("'instances' must be a non-empty list of instances")
        if isinstance(data[0], dict):
            data = [_named(x, sig, "an instance") for x in data]
    else:
        key, data = "outputs", _named(payload["inputs"], sig, "'inputs'")
        if not isinstance(data, list) or not data:
            raise BadRequest("'inputs' must be a non-empty list (batch dimension first)")
    if len(data) > MAX_INSTANCES:
        raise BadRequest(f"at most {MAX_INSTANCES} instances per request, got {len(data)}")
    return data, key


def _decode_binary(data: list[Any], sig: Signature) -> list[Any]:
    """Replace ``{"b64": ...}`` values by what they encode, where the input takes them.

    ``string`` inputs take bytes anywhere; ``uint8`` inputs take one whole instance of raw
    bytes; image inputs (see :attr:`Signature.image_shape`) take a PNG or JPEG instance.
    """
    if sig.input_dtype == "string":
        return _decode_strings(data)
    if not any(isinstance(x, dict) for x in data):
        return data
    if sig.input_dtype == "uint8" or sig.image_shape is not None:
        return [_decode_instance(x, sig) if isinstance(x, dict) else x for x in data]
    return data  # _typed rejects the b64 values with its message


def _check_shape(arr: np.ndarray, sig: Signature) -> None:
    shape = arr.shape[1:]
    if len(shape) != len(sig.input_shape) or any(
            want is not None and got != want for got, want in zip(shape, sig.input_shape,
                                                                    strict=False)):
        raise BadRequest(f"each instance of {sig.input_name!r} must have shape "
                         f"{shape_text(sig.input_shape)}, got {list(shape)}")


def parse_request(body: bytes, sig: Signature) -> tuple[np.ndarray, str]:
    """Decode and validate a predict request against the model's signature.

    Args:
        body: Raw request body.
        sig: The served version's signature.

    Returns:
        The batch, typed as the model input, and the response key (``predictions`` for row
        format, ``outputs`` for columnar).

    Raises:
        BadRequest: Malformed JSON, missing or duplicate ``instances``/``inputs``, unknown
            input names, wrong element type, ragged arrays, a shape that does not match the
            signature, NaN/infinity, or ``b64`` values for a numeric float input.

    """
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from exc
    data, key = _instances(payload, sig)
    data = _decode_binary(data, sig)
    try:
        arr = np.asarray(data, dtype=object if sig.input_dtype == "string" else None)
    except (ValueError, TypeError) as exc:  # ragged nesting
        raise BadRequest(f"instances of {sig.input_name!r} must all have shape "
                         f"{shape_text(sig.input_shape)}; the arrays are ragged") from exc
    arr = _typed(arr, data, sig)
    _check_shape(arr, sig)
    return arr, key


def encode_outputs(out: Any, key: str) -> bytes:
    """The response body ``{key: out}``.

    Named outputs (a dict) in row format become one object per instance, as TF Serving does.
    """
    if isinstance(out, dict) and key == "predictions":
        out = [dict(zip(out, values, strict=True)) for values in zip(*out.values(),
                                                                     strict=True)]
    return dumps({key: out})
