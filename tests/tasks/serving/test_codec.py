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
    (body({"signature_name": "nope", "instances": [IMG.tolist()]}),
     "unknown signature_name 'nope': the model has one signature, 'serving_default'"),
    (body({"signature_name": 7, "inputs": [IMG.tolist()]}), "unknown signature_name 7"),
])
def test_client_mistakes_are_bad_requests(payload, message):
    with pytest.raises(BadRequest) as err:
        parse_request(payload, FLOAT)
    assert message in str(err.value)


def test_the_default_signature_name_may_be_given():
    batch, _ = parse_request(body({"signature_name": "serving_default",
                                   "instances": [IMG.tolist()]}), FLOAT)
    assert batch.shape == (1, 28, 28)


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


# -- images -------------------------------------------------------------------------------

RGB = Signature("image", (4, 6, 3), "uint8", "probs", (3,), "float32")
GRAY = Signature("pixels", (28, 28), "float32", "probabilities", (10,), "float32")


def encoded(pixels, fmt="PNG", mode=None):
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(out, format=fmt)
    return {"b64": base64.b64encode(out.getvalue()).decode()}


def test_png_instances_decode_to_the_image_input():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    batch, _ = parse_request(body({"instances": [encoded(img), img.tolist()]}), RGB)
    assert batch.shape == (2, 4, 6, 3) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[0], img)
    np.testing.assert_array_equal(batch[1], img)
    # A float grayscale input gets the 0-255 pixel values as floats.
    digit = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    batch, key = parse_request(body({"inputs": {"pixels": [encoded(digit)]}}), GRAY)
    assert key == "outputs" and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0], digit.astype(np.float32))
    # RGBA and grayscale images are converted to the input's channels.
    rgba = np.dstack([img, np.full((4, 6), 255, np.uint8)])
    batch, _ = parse_request(body({"instances": [encoded(rgba)]}), RGB)
    np.testing.assert_array_equal(batch[0], img)


def test_jpeg_instances_decode_like_pillow_does():
    import io

    from PIL import Image

    img = np.tile(np.linspace(0, 255, 6, dtype=np.uint8)[None, :, None], (4, 1, 3))
    value = encoded(img, "JPEG")
    expected = np.asarray(Image.open(io.BytesIO(base64.b64decode(value["b64"]))).convert("RGB"))
    batch, _ = parse_request(body({"instances": [value]}), RGB)
    np.testing.assert_array_equal(batch[0], expected)
    assert np.abs(batch[0].astype(int) - img).max() < 40  # lossy, but the same picture


def test_image_of_another_size_is_refused_not_resized():
    big = np.zeros((6, 4, 3), np.uint8)  # height and width swapped
    with pytest.raises(BadRequest, match=r"the image is 4x6; input 'image' expects 6x4 "
                                         r"\(width x height\) RGB: resize it before "
                                         r"sending \(the server never resizes\)"):
        parse_request(body({"instances": [encoded(big)]}), RGB)
    with pytest.raises(BadRequest, match="expects 28x28 .* grayscale"):
        parse_request(body({"instances": [encoded(np.zeros((27, 28), np.uint8))]}), GRAY)


def test_broken_or_raw_bytes_are_explained():
    png = base64.b64decode(encoded(np.zeros((4, 6, 3), np.uint8))["b64"])
    truncated = {"b64": base64.b64encode(png[:40]).decode()}
    with pytest.raises(BadRequest, match="not a readable PNG or JPEG image"):
        parse_request(body({"instances": [truncated]}), RGB)
    # Raw bytes of the exact size stay raw pixels; other sizes name both options.
    raw = bytes(range(72))
    batch, _ = parse_request(body({"instances": [{"b64": base64.b64encode(raw).decode()}]}),
                             RGB)
    np.testing.assert_array_equal(batch[0].ravel(), list(raw))
    with pytest.raises(BadRequest, match=r"decodes to 5 bytes; input 'image' \[4, 6, 3\] "
                                         r"uint8 needs 72 or a PNG/JPEG image of 6x4"):
        parse_request(body({"instances": [{"b64": base64.b64encode(b"12345").decode()}]}),
                      RGB)
    with pytest.raises(BadRequest, match="takes numbers or a PNG/JPEG image of 28x28"):
        parse_request(body({"instances": [{"b64": "AAAA"}]}), GRAY)


def png_header_only(width: int, height: int) -> dict:
    """A PNG that declares ``width x height`` pixels: a decompression bomb's header.

    Only the header matters (it is all the server may read); a real bomb's few hundred
    kilobytes of compressed zeros would decode to the same gigabytes.
    """
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    idat = zlib.compress(b"\0" * (width + 1) * 4)  # the first rows of zeros
    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
    return {"b64": base64.b64encode(raw + chunk(b"IEND", b"")).decode()}


@pytest.mark.parametrize("side", [9000, 13000, 20000, 60000])
def test_decompression_bombs_are_refused_from_the_header(side):
    """Issue 19: a 20000x20000 PNG was a 500 (Pillow's DecompressionBombError)."""
    with pytest.raises(BadRequest, match=rf"the image is (too large to decode|{side}x{side};"
                                         r" input 'pixels' expects 28x28)"):
        parse_request(body({"instances": [png_header_only(side, side)]}), GRAY)
    # A model that decodes images itself (a string input) gets none over the bound.
    with pytest.raises(BadRequest, match=r"the image is (too large to decode|\d+x\d+ \()"):
        parse_request(body({"instances": [png_header_only(side, side)]}), TEXT)


def test_string_inputs_take_images_up_to_the_bound_and_other_bytes_as_they_are():
    ok, _ = parse_request(body({"instances": [png_header_only(4000, 3000)]}), TEXT)
    assert ok[0].startswith(b"\x89PNG")
    with pytest.raises(BadRequest, match=r"the image is 6000x6000 \(36,000,000 pixels\); at "
                                         r"most 25,000,000 pixels are decoded"):
        parse_request(body({"instances": [png_header_only(6000, 6000)]}), TEXT)
    wav = {"b64": base64.b64encode(b"RIFF\0\0\0\0WAVE").decode()}
    assert parse_request(body({"instances": [wav]}), TEXT)[0][0] == b"RIFF\0\0\0\0WAVE"
