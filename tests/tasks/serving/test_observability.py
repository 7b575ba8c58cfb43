"""A real ``mlp serve`` process with a challenger: /metrics, request logs, shadow, promote.

The registry is real (the test store of ``reg_settings``): ``shadowed`` version 1 (a good
digits classifier) is the champion and version 2 (a weak one) the challenger. Concurrent
clients must get only the champion's answers (micro-batched, each its own), the
challenger's agreement must reach /metrics and its MLflow run with the value computed
here from both models, sampled requests must land in the request log in the contract's
format, and ``mlp promote`` must move the aliases with history while the server follows.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.tasks.conftest import predict_local, register
from tests.tasks.serving.conftest import ServerProcess

N = 40
MODEL = "shadowed"


@pytest.fixture(scope="module")
def shadow_registry(reg_settings, logged_models):
    from tasks.tracking.challenger import set_challenger

    register(reg_settings, MODEL, logged_models["good"])
    register(reg_settings, MODEL, logged_models["weak"], alias=None)
    set_challenger(MODEL, "2", reg_settings, why="test: shadow the weak model")
    return {"1": logged_models["good"], "2": logged_models["weak"]}


@pytest.fixture(scope="module")
def server(reg_settings, shadow_registry, tmp_path_factory):
    log = tmp_path_factory.mktemp("obs") / "serve.log"
    with ServerProcess(reg_settings, "--model", MODEL, "--log-requests", f"{MODEL}=1",
                       log=log, MLP_SERVE_SHADOW_LOG_SECONDS="0.5",
                       MLP_SERVE_LOG_FILE_SECONDS="1",
                       # An idle model waits up to 50 ms for a batch to fill: the test's
                       # client threads are slow to send, and batches must form.
                       MLP_SERVE_BATCH_TIMEOUT_MICROS="50000") as srv:
        yield srv


@pytest.fixture(scope="module")
def answered(server, digits):
    """N single-image requests from 8 client threads at once: (images, responses)."""
    images = digits[0][:N].astype(np.float32)

    def ask(i):
        return httpx.post(f"{server.base}/v1/models/{MODEL}:predict", timeout=60,
                          json={"instances": [images[i].tolist()]})

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(ask, range(N)))
    return images, responses


def metrics(server) -> dict[str, list]:
    r = httpx.get(f"{server.base}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def value(fams, family, sample, **labels) -> float | None:
    for s in fams.get(family, []):
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


def poll(check, timeout=30.0):
    deadline = time.time() + timeout
    while True:
        got = check()
        if got or time.time() > deadline:
            return got
        time.sleep(0.2)


def test_every_answer_is_the_champions_own_and_the_challenger_is_shadow_scored(
        server, answered, shadow_registry, reg_settings):
    images, responses = answered
    assert [r.status_code for r in responses] == [200] * N
    assert {r.headers["x-model-version"] for r in responses} == {"1"}  # 100% champion
    got = np.array([r.json()["predictions"][0] for r in responses])
    champion = predict_local(reg_settings, shadow_registry["1"].model_uri, images)
    challenger = predict_local(reg_settings, shadow_registry["2"].model_uri, images)
    np.testing.assert_allclose(got, champion, rtol=1e-4, atol=1e-6)  # each its own answer
    expected = float((champion.argmax(1) == challenger.argmax(1)).mean())
    assert 0.0 < expected < 1.0  # the weak model disagrees on some digits

    labels = {"model": MODEL, "version": "1", "challenger_version": "2"}

    def scored():
        fams = metrics(server)
        count = value(fams, "mlp_serving_shadow_instances",
                      "mlp_serving_shadow_instances_total", **labels)
        return fams if count == N else None

    fams = poll(scored)
    assert fams, "the challenger did not score every request"
    assert value(fams, "mlp_serving_shadow_agreement", "mlp_serving_shadow_agreement",
                 measure="same_class_rate", **labels) == pytest.approx(expected)
    assert value(fams, "mlp_serving_shadow_agreement_value",
                 "mlp_serving_shadow_agreement_value_total", **labels) == pytest.approx(
        expected * N)

    from tasks.tracking import configure

    client = configure(reg_settings)
    run_id = shadow_registry["2"].run_id

    def logged():
        run = client.get_run(run_id)
        return run if run.data.metrics.get("shadow_instances") == N else None

    run = poll(logged)
    assert run is not None, "the shadow figures did not reach the challenger's MLflow run"
    assert run.data.metrics["shadow_same_class_rate"] == pytest.approx(expected)
    assert run.data.tags["shadow.champion_version"] == "1"
    assert run.data.tags["shadow.measure"] == "same_class_rate"


def test_metrics_parse_and_hold_counters_and_histograms_per_model_and_version(
        server, answered):
    r = httpx.post(f"{server.base}/v1/models/{MODEL}:predict", json={"instances": [[1, 2]]})
    assert r.status_code == 400
    assert httpx.post(f"{server.base}/v1/models/nope:predict",
                      json={"instances": [[1]]}).status_code == 404
    one = {"model": MODEL, "version": "1"}
    fams = metrics(server)
    assert value(fams, "mlp_serving_requests", "mlp_serving_requests_total", code="200",
                 **one) == N
    assert value(fams, "mlp_serving_requests", "mlp_serving_requests_total", code="400",
                 **one) == 1
    assert value(fams, "mlp_serving_requests", "mlp_serving_requests_total", code="404",
                 model="_unknown") == 1
    duration = "mlp_serving_request_duration_seconds"
    assert value(fams, duration, f"{duration}_count", **one) == N + 1
    assert value(fams, duration, f"{duration}_bucket", le="+Inf", **one) == N + 1
    assert value(fams, "mlp_serving_requests_in_flight", "mlp_serving_requests_in_flight",
                 **one) == 0
    assert value(fams, "mlp_serving_request_instances", "mlp_serving_request_instances_sum",
                 **one) == N
    assert value(fams, "mlp_serving_request_body_bytes",
                 "mlp_serving_request_body_bytes_count", **one) == N + 1
    calls = value(fams, "mlp_serving_batch_requests", "mlp_serving_batch_requests_count",
                  **one)
    merged = value(fams, "mlp_serving_batch_requests", "mlp_serving_batch_requests_sum", **one)
    assert merged == N and calls < N  # concurrent requests shared model calls
    assert value(fams, "mlp_serving_model_loads", "mlp_serving_model_loads_total",
                 alias="champion", outcome="ok", **one) == 1
    assert value(fams, "mlp_serving_model_loads", "mlp_serving_model_loads_total",
                 model=MODEL, version="2", alias="challenger", outcome="ok") == 1
    assert value(fams, "mlp_serving_model_version", "mlp_serving_model_version",
                 model=MODEL, alias="challenger") == 2
    assert value(fams, "mlp_serving_model_load_seconds", "mlp_serving_model_load_seconds_count",
                 model=MODEL) == 2
    assert "process_cpu_seconds" in fams


def test_sampled_requests_land_in_closed_jsonl_files_in_the_contract_format(
        server, answered, reg_settings):
    images, responses = answered
    r = httpx.post(f"{server.base}/v1/models/{MODEL}/versions/2:predict",
                   json={"instances": [images[0].tolist()]})
    assert r.status_code == 200 and r.headers["x-model-version"] == "2"
    folder = reg_settings.root / "requests" / MODEL

    def records():
        lines = [json.loads(x) for p in sorted(folder.glob("requests-*.jsonl"))
                 for x in p.read_text().splitlines()]
        return lines if len(lines) >= N + 1 else None

    lines = poll(records)
    assert lines is not None and len(lines) == N + 1, "request log lines missing"
    assert all(set(x) == {"ts", "model", "version", "status", "latency_ms", "n", "inputs",
                          "outputs"} for x in lines)
    assert sorted(x["version"] for x in lines) == ["1"] * N + ["2"]
    assert all(x["status"] == 200 and x["n"] == 1 and x["latency_ms"] > 0 for x in lines)
    assert all(x["ts"].endswith("Z") and len(x["ts"]) == 24 for x in lines)
    logged = {json.dumps(x["inputs"]["pixels"][0]): x["outputs"]["probabilities"][0]
              for x in lines if x["version"] == "1"}
    for image, response in zip(images, responses, strict=True):
        np.testing.assert_allclose(logged[json.dumps(image.tolist())],
                                   response.json()["predictions"][0], rtol=1e-6)
    fams = metrics(server)
    assert value(fams, "mlp_serving_request_log_records",
                 "mlp_serving_request_log_records_total", model=MODEL) == N + 1


def test_promote_moves_the_aliases_with_history_and_the_server_follows(
        server, answered, reg_settings, monkeypatch, capsys):
    from tasks.cli import main
    from tasks.tracking.registry import alias_history

    monkeypatch.setenv("MLP_HOME", str(reg_settings.root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", reg_settings.tracking_uri)
    assert main(["promote", MODEL, "--reason", "agrees enough"]) == 0
    out = capsys.readouterr().out
    assert "shadow same_class_rate:" in out and f"over {N} instances" in out
    assert "champion is now version 2 (previous is now version 1" in out
    moves = [(m["action"], m["alias"], m["from"], m["version"])
             for m in alias_history(MODEL, reg_settings)]
    assert moves[-2:] == [("promote", "champion", "1", "2"),
                          ("promote", "challenger", "2", "-")]

    def serves(version):
        r = httpx.post(f"{server.base}/v1/models/{MODEL}:predict",
                       json={"instances": [answered[0][0].tolist()]})
        return r.status_code == 200 and r.headers["x-model-version"] == version

    assert poll(lambda: serves("2")), "the server did not pick the promoted champion up"
    fams = metrics(server)
    assert value(fams, "mlp_serving_model_version", "mlp_serving_model_version",
                 model=MODEL, alias="champion") == 2
    assert value(fams, "mlp_serving_model_version", "mlp_serving_model_version",
                 model=MODEL, alias="challenger") == 0
    assert main(["rollback", MODEL]) == 0
    assert poll(lambda: serves("1")), "the server did not follow the rollback"

    server.__exit__(None, None, None)  # a stopped server leaves only closed files
    folder = reg_settings.root / "requests" / MODEL
    assert not list(folder.glob("*.open")) and list(folder.glob("*.jsonl"))
