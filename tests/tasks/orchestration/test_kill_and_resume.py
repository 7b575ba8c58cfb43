"""A pipeline run killed with SIGKILL mid-training, then re-run: nothing is left behind.

The run goes through ``python -m tasks.operations.local`` exactly as ``mlp run`` starts it;
the test kills that process (and with it the in-process task) while it trains.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

pytestmark = pytest.mark.slow

CONF = {"variant": "softmax", "epochs": 40, "batch_size": 8, "learning_rate": 0.003,
        "validation_size": 50}


def test_a_killed_training_leaves_no_running_mlflow_run_temp_folder_or_bare_version(
        airflow_db, own_mlflow, mnist_dir):
    from tasks.core import progress
    from tasks.core.config import settings
    from tasks.core.run import RunLayout, run_key
    from tasks.operations.local import run_pipeline
    from tasks.tracking import configure

    when = datetime(2026, 6, 1, tzinfo=UTC)
    layout = RunLayout.of("mnist", run_key(when))
    conf = {**CONF, "source_dir": str(mnist_dir)}
    progress_file = settings().root / "logs" / "kill-test.progress"
    progress_file.parent.mkdir(parents=True, exist_ok=True)
    progress_file.unlink(missing_ok=True)
    child = subprocess.Popen(
        [sys.executable, "-m", "tasks.operations.local", "mnist", json.dumps(conf),
         when.isoformat()],
        env={**os.environ, progress.ENV: str(progress_file)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "epoch 2/" not in (progress_file.read_text() if progress_file.exists() else ""):
            assert child.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "training did not start in time"
            time.sleep(0.2)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()

    client = configure()
    exp = client.get_experiment_by_name("mnist")
    query = f"tags.run_key = '{layout.key}'"
    (killed,) = client.search_runs([exp.experiment_id], query)
    assert killed.info.status == "RUNNING"  # what the kill left
    assert layout.orphaned_temp_paths(), "the killed training left its temporary folder"

    summary = run_pipeline("mnist", conf, when, echo=lambda line: None)
    assert summary["state"] == "success", summary

    runs = client.search_runs([exp.experiment_id], query)
    assert "RUNNING" not in {r.info.status for r in runs}
    old = client.get_run(killed.info.run_id)
    assert old.info.status == "FAILED" and "killed" in old.data.tags["mlp.orphaned"]
    leftovers = [p for p in settings().root.rglob("*.tmp-*") if layout.key in str(p)]
    assert leftovers == [] and layout.orphaned_temp_paths() == []
    (version,) = client.search_model_versions("name='mnist'")
    assert version.run_id == summary["mlflow_run_id"] != killed.info.run_id
    assert {"run_key", "data_checksum", "preprocessing_stats", "git_commit", "gate_passed",
            "mlflow_run_id"} <= set(version.tags)
