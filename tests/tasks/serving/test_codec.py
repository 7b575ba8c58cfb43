"""Request parsing as a pure function: formats, every client mistake, b64 values."""

import base64
import json

import numpy as np
import pytest

from tasks.serving.codec import BadRequest, parse_request
from tasks.serving.signature import Signature

FLOAT = Signature("pixels", (28, 28), "float32", "probabilities", (10,), "float32")
U8 = Signature("raw", (2, 2), "uint8", "probs", (10,), "float32")
TEXT = Signature("text", (), "string", "score", (1,), "float32")
IMG = np.arange(784, dtype=np.float32).reshape(28, 28) % 256


def body(obj):
    return json.dumps(obj).encode()


# -- parsing (pure) -----------------------------------------------------------------------


def test_row_and_columnar_formats_parse_to_the_same_batch():
    rows, key = parse_request(body({"instances": [IMG.tolist(), IMG.tolist()]}), FLOAT)
    assert key == "predictions" and rows.shape == (2, 28, 28) and rows.dtype == np.float32
    named, _ = parse_request(body({"instances": [{"pixels": IMG.tolist()}]}), FLOAT)
    cols, key = parse_request(body({"inputs": {"pixels": [IMG.tolist()]}}), FLOAT)
    assert key == "outputs"
    np.testing.assert_array_equal(named, cols)
    np.testing.assert_array_equal(rows[0], IMG)


@pytest.mark.parametrize(("payload", "message"), [
    (b"{not json", "malformed JSON"),
    (b"", "malformed JSON"),
    (b"[1, 2]", "JSON object"),
    (body({"data": []}), "exactly one of 'instances'"),
    (body({"instances": [], "inputs": []}), "exactly one of 'instances'"),
    (body({"instances": []}), "non-empty list"),
    (body({"instances": [[1, 2]]}), "must have shape [28, 28], got [2]"),
    (body({"instances": [[[1] * 28] * 27]}), "must have shape [28, 28], got [27, 28]"),
    (body({"instances": [[["x"] * 28] * 28]}), "takes numbers, got strings"),
    (body({"instances": [[[None] * 28] * 28]}), "takes numbers, got non-numeric"),
    (body({"instances": [[[True] * 28] * 28]}), "takes numbers, got bool"),
    (body({"instances": [IMG.tolist(), [[1, 2]]]}), "ragged"),
    (body({"instances": [[[1e39] * 28] * 28]}), "out of float range"),
    (body({"instances": [{"image": IMG.tolist()}]}), "model has one input 'pixels'"),
    (body({"instances": [{"b64": "AAAA"}]}), 'binary {"b64": ...} values are accepted for '
                                             "uint8 and string inputs only"),
    (body({"inputs": {"pixels": 3}}), "'inputs' must be a non-empty list"),
])
def test_client_mistakes_are_bad_requests(payload, message):
    with pytest.raises(BadRequest) as err:
        parse_request(payload, FLOAT)
    assert message in str(err.value)


def test_b64_decodes_whole_uint8_instances():
    raw = bytes([0, 7, 128, 255])
    batch, _ = parse_request(body({"instances": [
        {"b64": base64.b64encode(raw).decode()}, [[1, 2], [3, 4]]]}), U8)
    assert batch.dtype == np.uint8
    np.testing.assert_array_equal(batch, [[[0, 7], [128, 255]], [[1, 2], [3, 4]]])
    with pytest.raises(BadRequest, match="decodes to 3 bytes; input 'raw' \\[2, 2\\] uint8 "
                                         "needs 4"):
        parse_request(body({"instances": [{"b64": base64.b64encode(raw[:3]).decode()}]}), U8)
    with pytest.raises(BadRequest, match="invalid base64"):
        parse_request(body({"instances": [{"b64": "not base64!"}]}), U8)
    with pytest.raises(BadRequest, match=r"values must lie in \[0, 255\]"):
        parse_request(body({"instances": [[[0, 1], [2, 300]]]}), U8)
    with pytest.raises(BadRequest, match="takes integers, got fractional"):
        parse_request(body({"instances": [[[0, 1], [2, 0.5]]]}), U8)


def test_b64_decodes_string_values():
    batch, _ = parse_request(body({"instances": [
        {"b64": base64.b64encode(b"\x00\xffbytes").decode()}, "plain"]}), TEXT)
    assert list(batch) == [b"\x00\xffbytes", "plain"]
    with pytest.raises(BadRequest, match="takes strings"):
        parse_request(body({"instances": [1.5]}), TEXT)
