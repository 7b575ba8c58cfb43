"""Two-worker training of mnist by configuration (MultiWorkerMirroredStrategy on loopback).

``MLP_DISTRIBUTE=multi_worker`` with ``MLP_TRAIN_WORKERS=2``: the train task starts two
worker processes on free loopback ports. The test kills the non-chief worker with SIGKILL
while it trains: the task must fail with a message naming the worker, Airflow's retry must
train again and register one model, whose test accuracy must be within tolerance of
single-process training with the same global batch size and seed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

pytestmark = pytest.mark.slow

# The smallest budget that still learns (0.89 test accuracy in one process): 8 steps of a
# global batch of 32 (16 per worker) per epoch.
CONF = {"variant": "softmax", "epochs": 8, "batch_size": 32, "learning_rate": 0.01,
        "validation_size": 50}


def _worker(index):
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "tasks.steps.train" in " ".join(proc.info["cmdline"] or []) and json.loads(
                    proc.environ().get("TF_CONFIG", "{}")).get("task", {}).get("index") == index:
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def test_two_workers_train_like_one_and_a_killed_worker_fails_the_task_until_the_retry(
        airflow_db, own_mlflow, mnist_dir, tmp_path):
    import numpy as np

    from tasks.core import progress
    from tasks.core.run import RunLayout, Snapshot, run_key
    from tasks.data.tfrecord import DatasetReader
    from tasks.spec import catalog
    from tasks.steps.train import train
    from tasks.tracking import configure

    progress_file = tmp_path / "run.progress"
    # MLP_RETRY_DELAY: the retry of the killed attempt starts after 1 s rather than 30.
    when = datetime(2026, 8, 1, tzinfo=UTC)
    env = {**os.environ, progress.ENV: str(progress_file), "MLP_DISTRIBUTE": "multi_worker",
           "MLP_TRAIN_WORKERS": "2", "MLP_RETRY_DELAY": "1"}
    # As `mlp run` starts it (Airflow's task runner needs its own main thread).
    child = subprocess.Popen(
        [sys.executable, "-m", "tasks.operations.local", "mnist",
         json.dumps({**CONF, "source_dir": str(mnist_dir)}), when.isoformat()],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = None
    try:
        deadline = time.monotonic() + 600
        while killed is None and child.poll() is None:
            assert time.monotonic() < deadline, "the two workers did not train in time"
            text = progress_file.read_text() if progress_file.exists() else ""
            if "epoch 2/" in text and (worker := _worker(1)) is not None:
                worker.kill()
                killed = worker.pid
            time.sleep(0.2)
        assert killed is not None, "the run ended before a worker could be killed"
        assert child.wait(900) == 0
    finally:
        if child.poll() is None:
            child.kill()
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == "mnist",
                                           DagRun.logical_date == when).one()
        assert str(run.state) == "success"
        train_ti = session.query(TaskInstance).filter(
            TaskInstance.run_id == run.run_id, TaskInstance.dag_id == "mnist",
            TaskInstance.task_id == "train").one()
        assert train_ti.try_number == 2  # the killed attempt failed, its retry trained
    text = progress_file.read_text()
    assert f"worker 1 of 2 (pid {killed}) was killed by SIGKILL" in text
    assert "nothing was registered" in text

    # One model registered; the chief alone logged one finished training run per attempt.
    client = configure()
    key = run_key(when)
    (version,) = client.search_model_versions("name='mnist'")
    run = client.get_run(version.run_id)
    two_workers = run.data.metrics["test_accuracy"]
    runs = client.search_runs([run.info.experiment_id], f"tags.run_key = '{key}'")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]  # killed + retry

    # Single-process training, same data, global batch and seed.
    layout = RunLayout.of("mnist", key)
    spec = catalog.get("mnist")
    params = {**{k: p.default for k, p in spec.params.items()}, **CONF}
    snapshot = Snapshot(key, str(layout.raw_dir), "single")
    single = train(spec, params, layout.dataset_dir, tmp_path / "single", snapshot)
    import keras

    model = keras.saving.load_model(single.trained_path)
    reader = DatasetReader.open(layout.dataset_dir)
    x, y = reader.raw_rows("test", "image", "label", None)
    one_worker = float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))
    assert two_workers > 0.8 and one_worker > 0.8
    assert abs(two_workers - one_worker) <= 0.05, (two_workers, one_worker)
