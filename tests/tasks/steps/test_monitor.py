"""Logged requests -> a skew report against the champion's training data, in MLflow."""

import numpy as np

from models.creditcard_fraud import SPEC, generate
from tests.tasks.steps import scoring_fixtures

registered = scoring_fixtures.registered  # the fixture


def _log_requests(folder, model, rows, times3):
    """Request-log records as ``mlp serve`` writes them, inputs named by the model."""
    from tasks.data.requestlog import write_requests
    from tasks.steps.model_io import model_inputs, served_inputs

    generate(folder, rows, 5)
    files = SPEC.source.files(str(folder))
    batch = next(iter(SPEC.source.read_batches(files, "all", rows)))
    if times3:
        batch["V3"] = batch["V3"] * 3
    x = served_inputs(SPEC, model, batch)
    names = [n for n, _, _ in model_inputs(model)]
    out = model.predict(x, verbose=0)
    records = []
    for i in range(0, rows, 4):
        sl = slice(i, i + 4)
        inputs = {k: np.asarray(v)[sl].tolist() for k, v in x.items()} if isinstance(
            x, dict) else {names[0]: x[sl].tolist()}
        records.append({"ts": f"2026-06-01T00:00:{i % 60:02d}Z", "model": SPEC.name,
                        "version": "1", "status": 200, "latency_ms": 1.0, "n": len(x[sl]),
                        "inputs": inputs,
                        "outputs": {k: np.asarray(v)[sl].tolist() for k, v in out.items()}})
    return write_requests(folder / "requests-20260601T000000000000Z.jsonl", records)


def test_drifted_requests_flag_the_feature_and_the_report_goes_to_mlflow(registered, tmp_path,
                                                                         monkeypatch):
    from tasks.core.config import settings
    from tasks.data.requestlog import log_dir
    from tasks.steps.monitor import monitor_requests
    from tasks.tracking import configure

    # A data root of its own: the worker's shared root may hold another test's request
    # logs and monitoring watermark for this model.
    monkeypatch.setenv("MLP_HOME", str(tmp_path / "home"))
    logs = log_dir(settings().root, SPEC.name)
    logs.mkdir(parents=True)
    _log_requests(logs, registered, 800, times3=True)
    summary = monitor_requests(SPEC, "m1")
    assert summary["requests"] == 200 and summary["instances"] == 800
    assert [c for c in summary["failing"] if not c.startswith("prediction:")] == ["V3"]
    assert summary["status"] == "fail" and summary["retrain"] is False  # off by default
    run = configure().get_run(summary["run_id"])
    assert run.data.tags["skew.status"] == "fail" and run.data.metrics["instances"] == 800
    assert run.data.metrics["skew_V3_v1"] > 0.25
    arts = {a.path for a in configure().list_artifacts(summary["run_id"], "skew/skew-v1")}
    assert {"skew/skew-v1/report.md", "skew/skew-v1/drift.png"} <= arts
    # The watermark moved: the next run has nothing new to read.
    again = monitor_requests(SPEC, "m2")
    assert again["requests"] == 0 and again["status"] == "no data"


def test_requests_like_the_training_data_flag_nothing(registered, tmp_path):
    from tasks.steps.monitor import monitor_requests

    logs = tmp_path / "logs"
    logs.mkdir()
    path = _log_requests(logs, registered, 800, times3=False)
    summary = monitor_requests(SPEC, "m3", path, advance=False, track=False)
    assert summary["failing"] == [] and summary["status"] == "ok", summary["summary"]
    assert len(summary["reports"]) == 1 and summary["reports"][0]["version"] == "1"
