"""Image inputs as base64 PNG/JPEG, end to end: a tiny real colour model logged to MLflow,
registered, served; a PNG of an image answers exactly as its pixels sent as numbers.
"""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.tasks.conftest import RunningServer, _log_run, register

H, W = 12, 10  # not square: height and width cannot be confused


@pytest.fixture(scope="module")
def colour_server(reg_settings, served_registry):
    import keras

    from tasks import tracking

    keras.utils.set_random_seed(0)
    layers = keras.layers
    inp = keras.Input(shape=(H, W, 3), dtype="uint8", name="image")
    h = layers.Conv2D(4, 3, activation="relu")(layers.Rescaling(1 / 255)(inp))
    out = layers.Dense(3, activation="softmax", name="probs")(layers.Flatten()(h))
    model = keras.Model(inp, out)
    example = np.random.default_rng(1).integers(0, 256, (2, H, W, 3), dtype=np.uint8)
    tracking.configure(reg_settings)
    exp_id = tracking.experiment_id("fixtures", reg_settings)
    register(reg_settings, "colour", _log_run(reg_settings, exp_id, "colour", model, None,
                                              None, {}, example))
    with RunningServer(reg_settings, models=("colour",)) as srv:
        yield srv


def b64(pixels: np.ndarray, fmt: str) -> dict:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return {"b64": base64.b64encode(out.getvalue()).decode()}


def predict(srv, instances):
    return httpx.post(f"{srv.base}/v1/models/colour:predict", json={"instances": instances},
                      timeout=60)


def test_png_and_jpeg_images_are_decoded_server_side(colour_server):
    img = np.random.default_rng(2).integers(0, 256, (H, W, 3), dtype=np.uint8)
    as_numbers = predict(colour_server, [img.tolist()])
    as_png = predict(colour_server, [b64(img, "PNG")])
    assert as_numbers.status_code == as_png.status_code == 200, as_png.text
    np.testing.assert_allclose(as_png.json()["predictions"],
                               as_numbers.json()["predictions"], rtol=1e-6)
    jpeg = b64(img, "JPEG")
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(jpeg["b64"]))).convert("RGB"))
    both = predict(colour_server, [jpeg, decoded.tolist()]).json()["predictions"]
    np.testing.assert_allclose(both[0], both[1], rtol=1e-6)
    meta = httpx.get(f"{colour_server.base}/v1/models/colour/metadata").json()
    dims = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"][
        "image"]["tensor_shape"]["dim"]
    assert [d["size"] for d in dims] == ["-1", str(H), str(W), "3"]


def test_an_image_of_another_size_is_a_400_naming_the_expected_size(colour_server):
    r = predict(colour_server, [b64(np.zeros((W, H, 3), np.uint8), "PNG")])
    assert r.status_code == 400
    assert r.json()["error"] == (
        f"the image is {H}x{W}; input 'image' expects {W}x{H} (width x height) RGB: resize "
        "it before sending (the server never resizes)")


def test_a_decompression_bomb_is_a_400_not_a_500(colour_server):
    """Issue 19: a PNG declaring 20000x20000 pixels got a 500 (DecompressionBombError)."""
    from tests.tasks.serving.test_codec import png_header_only

    for side in (20000, 60000):
        r = predict(colour_server, [png_header_only(side, side)])
        assert r.status_code == 400, r.text
        assert "too large to decode" in r.json()["error"]
