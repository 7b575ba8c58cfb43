"""The REST server: validation (400/404), versions, metadata, b64, and hot reload.

A real uvicorn server serves real MLflow-registered Keras models from the test store
(request parsing alone: ``test_codec.py``).
"""

import base64
import json
import threading
import time

import httpx
import numpy as np
import pytest

from tests.tasks.conftest import RunningServer, predict_local

IMG = np.arange(784, dtype=np.float32).reshape(28, 28) % 256


def body(obj):
    return json.dumps(obj).encode()


# -- the server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(reg_settings, served_registry):
    with RunningServer(reg_settings) as srv:
        yield srv


def post(srv, path, obj=None, content=None):
    return httpx.post(f"{srv.base}{path}", content=content if content is not None else body(obj),
                      headers={"Content-Type": "application/json"}, timeout=60)


def test_predict_matches_the_logged_model(server, served_registry, reg_settings, digits):
    images, _ = digits
    batch = images[:3].astype(np.float32)
    r = post(server, "/v1/models/mnist:predict", {"instances": batch.tolist()})
    assert r.status_code == 200, r.text
    assert r.headers["x-model-version"] == "1"
    preds = np.array(r.json()["predictions"])
    reference = predict_local(reg_settings, served_registry["mnist"]["1"].model_uri, batch)
    np.testing.assert_allclose(preds, reference, rtol=1e-4, atol=1e-6)
    cols = post(server, "/v1/models/mnist:predict", {"inputs": {"pixels": batch.tolist()}})
    np.testing.assert_allclose(np.array(cols.json()["outputs"]), preds, rtol=1e-5)


@pytest.mark.parametrize(("payload", "fragment"), [
    (b'{"instances": [1, 2', "malformed JSON"),
    (body({"instances": [[1, 2]]}), "shape [28, 28]"),
    (body({"instances": [[["a"] * 28] * 28]}), "got strings"),
    (body({"instances": [{"b64": "AAAA"}]}), "uint8 and string inputs only"),
])
def test_http_400_with_message(server, payload, fragment):
    r = post(server, "/v1/models/mnist:predict", content=payload)
    assert r.status_code == 400
    assert fragment in r.json()["error"]


def test_unknown_model_version_and_route(server):
    r = post(server, "/v1/models/nope:predict", {"instances": [IMG.tolist()]})
    assert r.status_code == 404 and "model 'nope' is not served" in r.json()["error"]
    assert httpx.get(f"{server.base}/v1/models/nope").status_code == 404
    r = post(server, "/v1/models/mnist/versions/99:predict", {"instances": [IMG.tolist()]})
    assert r.status_code == 404 and "has no version 99" in r.json()["error"]
    r = post(server, "/v1/models/mnist/versions/latest:predict", {"instances": [IMG.tolist()]})
    assert r.status_code == 400 and "positive integer" in r.json()["error"]
    r = httpx.get(f"{server.base}/v2/whatever")
    assert r.status_code == 404 and "error" in r.json()


def test_version_endpoint_loads_that_version(server, served_registry, reg_settings, digits):
    images, _ = digits
    batch = images[:2].astype(np.float32)
    r = post(server, "/v1/models/mnist/versions/2:predict", {"instances": batch.tolist()})
    assert r.status_code == 200 and r.headers["x-model-version"] == "2"
    weak = predict_local(reg_settings, served_registry["mnist"]["2"].model_uri, batch)
    np.testing.assert_allclose(np.array(r.json()["predictions"]), weak, rtol=1e-4, atol=1e-6)
    status = httpx.get(f"{server.base}/v1/models/mnist/versions/2").json()
    assert status["model_version_status"][0] == {
        "version": "2", "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""}}
    listed = httpx.get(f"{server.base}/v1/models/mnist").json()["model_version_status"]
    assert [v["version"] for v in listed] == ["1", "2"]  # champion first


def test_metadata_describes_the_signature(server):
    meta = httpx.get(f"{server.base}/v1/models/mnist/metadata").json()
    assert meta["model_spec"] == {"name": "mnist", "signature_name": "serving_default",
                                  "version": "1"}
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    (in_name, inp), = sig["inputs"].items()
    (out_name, out), = sig["outputs"].items()
    assert in_name == "pixels" and inp["dtype"] == "DT_FLOAT"
    assert out_name == "probabilities" and out["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in inp["tensor_shape"]["dim"]] == ["-1", "28", "28"]
    assert [d["size"] for d in out["tensor_shape"]["dim"]] == ["-1", "10"]
    v2 = httpx.get(f"{server.base}/v1/models/mnist/versions/2/metadata").json()
    assert v2["model_spec"]["version"] == "2"


def test_uint8_model_takes_b64_and_numbers_alike(server, digits):
    images, _ = digits
    img = images[0]
    b64 = {"b64": base64.b64encode(img.tobytes()).decode()}
    r = post(server, "/v1/models/pixels_u8:predict", {"instances": [b64, img.tolist()]})
    assert r.status_code == 200, r.text
    a, b = np.array(r.json()["predictions"])
    np.testing.assert_allclose(a, b)
    meta = httpx.get(f"{server.base}/v1/models/pixels_u8/metadata").json()
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["raw"]["dtype"] == "DT_UINT8"


def test_openapi_describes_every_api_route(server):
    doc = httpx.get(f"{server.base}/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/v1/models/{name}:predict", "/v1/models/{name}/versions/{version}:predict",
        "/v1/models/{name}", "/v1/models/{name}/versions/{version}",
        "/v1/models/{name}/metadata", "/v1/models/{name}/versions/{version}/metadata",
        "/healthz", "/readyz", "/metrics"}
    op = doc["paths"]["/v1/models/{name}/versions/{version}:predict"]["post"]
    assert [p["name"] for p in op["parameters"]] == ["name", "version"]
    assert {"200", "400", "404", "413"} <= set(op["responses"])
    assert "parameters" not in doc["paths"]["/healthz"]["get"]


def test_health_and_readiness(server):
    assert httpx.get(f"{server.base}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.base}/readyz").json()
    assert ready["status"] == "ready"
    assert ready["models"] == {"mnist": "1", "hot": "1", "pixels_u8": "1",
                               "mnist_autoencoder": "1"}


@pytest.mark.slow
def test_hot_reload_under_load_fails_no_request(server, served_registry, reg_settings, digits):
    """Move ``champion`` 1 -> 2 (deploy-like) and back (rollback) while 4 threads predict."""
    from tasks import tracking
    from tasks.tracking.registry import rollback

    images, _ = digits
    batch = images[:1].astype(np.float32)
    expected = {v: predict_local(reg_settings, lg.model_uri, batch)[0]
                for v, lg in served_registry["hot"].items()}
    payload = body({"instances": batch.tolist()})
    stop = threading.Event()
    seen, failures = [], []

    def hammer():
        with httpx.Client(base_url=server.base, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/models/hot:predict", content=payload)
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")
                    continue
                version = r.headers["x-model-version"]
                if not np.allclose(r.json()["predictions"][0], expected[version], atol=1e-5):
                    failures.append(f"v{version} answered with another version's output")
                seen.append((time.monotonic(), version))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        client = tracking.configure(reg_settings)
        client.set_registered_model_alias("hot", "previous", "1")
        client.set_registered_model_alias("hot", "champion", "2")
        server.wait_for("hot", "2")
        t_promoted = time.monotonic()
        time.sleep(0.5)
        t_rollback = time.monotonic()
        assert rollback("hot", reg_settings)["champion"] == "1"
        server.wait_for("hot", "1")
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert failures == []
    assert len(seen) > 100
    versions = [v for _, v in seen]
    assert versions[0] == "1" and versions[-1] == "1" and "2" in versions
    # Once the server reports the new version, no request is answered by the old one.
    late = [v for ts, v in seen if t_promoted + 0.05 < ts < t_rollback]
    assert late and set(late) == {"2"}
