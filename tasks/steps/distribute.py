"""Training that scales out with ``tf.distribute``, by configuration only.

``MLP_DISTRIBUTE`` chooses the strategy of every use case's training, with no edit to its
module:

- unset or ``default``: TensorFlow's default strategy (one process, as before);
- ``mirrored``: ``tf.distribute.MirroredStrategy`` over this host's devices (all GPUs of a
  GPU host; on a CPU-only host one replica);
- ``multi_worker``: ``tf.distribute.MultiWorkerMirroredStrategy`` across worker processes
  described by ``TF_CONFIG``. Without ``TF_CONFIG``, the training task starts
  ``MLP_TRAIN_WORKERS`` (default 2) worker processes itself on free loopback ports
  (:func:`launch_local_cluster`) and supervises them: one killed worker stops the others
  and fails the task with a message naming it, and the task's retry starts training anew.
  With ``TF_CONFIG`` set (one process per host, e.g. pods of a Kubernetes job, or tasks
  pinned to per-host Celery queues), the process is that worker of the cluster.

The chief (worker 0) alone logs to MLflow and writes the model; the other workers only
fit. Each worker reads its own share of the training TFRecord shards (``tf.data``
auto-sharding by file; by record when there are fewer shards than workers); the batch size
is the global batch, split across the replicas, so a run is comparable with one-process
training at the same batch size and seed.

Keras 3's ``Model.fit`` does not run under ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585), so distributed strategies use :func:`fit_loop`: Keras' own
``train_step``/``test_step`` run by ``strategy.run`` in a ``tf.function``, with the same
callbacks and history as ``fit``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV = "MLP_DISTRIBUTE"
WORKERS_ENV = "MLP_TRAIN_WORKERS"
MODES = ("default", "mirrored", "multi_worker")


class WorkerFailed(RuntimeError):
    """A worker of a distributed training died; the task fails and its retry starts again."""


def mode() -> str:
    """The configured strategy (``default``, ``mirrored`` or ``multi_worker``).

    Raises:
        ValueError: An unknown ``MLP_DISTRIBUTE`` value.

    """
    value = (os.environ.get(ENV) or "default").strip().lower().replace("-", "_")
    if value not in MODES:
        raise ValueError(f"{ENV}={value!r}: choose one of {', '.join(MODES)}")
    return value


def tf_config() -> dict[str, Any]:
    """The parsed ``TF_CONFIG`` (empty when unset)."""
    return json.loads(os.environ.get("TF_CONFIG") or "{}")


def is_chief() -> bool:
    """Whether this process logs and writes the model (always, unless a non-chief worker)."""
    if mode() != "multi_worker":
        return True
    task = tf_config().get("task") or {}
    cluster = tf_config().get("cluster") or {}
    if "chief" in cluster:
        return task.get("type") == "chief"
    return int(task.get("index", 0)) == 0


def local_workers() -> int:
    """Worker processes the training task must start itself (0: none, train in-process)."""
    if mode() != "multi_worker" or os.environ.get("TF_CONFIG"):
        return 0
    return max(1, int(os.environ.get(WORKERS_ENV) or "2"))


def strategy() -> Any:
    """The configured ``tf.distribute`` strategy (TensorFlow's default one unless set)."""
    import tensorflow as tf

    chosen = mode()
    if chosen == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if chosen == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_default(strat: Any) -> bool:
    """Whether ``strat`` is TensorFlow's default (no-op) strategy."""
    return strat is None or type(strat).__name__ == "_DefaultDistributionStrategy"


def _sharded(ds: Any, files: int, strat: Any) -> Any:
    """Shard by file when every worker gets one, else by record (tf.data auto-sharding)."""
    import tensorflow as tf

    policy = tf.data.experimental.AutoShardPolicy
    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = (
        policy.FILE if files >= strat.num_replicas_in_sync else policy.DATA)
    return ds.with_options(opts)


def fit_loop(model: Any, train_ds: Any, val_ds: Any, epochs: int, callbacks: Sequence[Any],
             strat: Any, train_files: int = 1) -> dict[str, list[float]]:
    """``Model.fit`` for a distributed strategy: Keras' train/test steps via ``strategy.run``.

    Every worker runs this same sequence (the steps and the metric reads are collective);
    the history has ``fit``'s keys (``loss``, ``val_loss`` and the compiled metrics).
    """
    import keras
    import tensorflow as tf

    first = next(iter(train_ds))
    with strat.scope():
        # What Model.fit does first (a symbolic build of metrics and optimizer variables),
        # on a local batch: Keras' own reduction of a distributed batch fails here.
        model._symbolic_build(data_batch=first)
    dist_train = strat.experimental_distribute_dataset(_sharded(train_ds, train_files, strat))
    dist_val = strat.experimental_distribute_dataset(_sharded(val_ds, 1, strat))

    @tf.function
    def train_step(batch: Any) -> Any:
        return strat.run(model.train_step, args=(batch,))

    @tf.function
    def test_step(batch: Any) -> Any:
        return strat.run(model.test_step, args=(batch,))

    cbs = keras.callbacks.CallbackList(list(callbacks), model=model, epochs=epochs,
                                       verbose=0, steps=None)
    history: dict[str, list[float]] = {}
    model.stop_training = False
    cbs.on_train_begin()
    for epoch in range(epochs):
        cbs.on_epoch_begin(epoch)
        model.reset_metrics()
        for batch in dist_train:
            train_step(batch)
        logs = {k: float(v) for k, v in model.get_metrics_result().items()}
        model.reset_metrics()
        for batch in dist_val:
            test_step(batch)
        logs.update({f"val_{k}": float(v) for k, v in model.get_metrics_result().items()})
        cbs.on_epoch_end(epoch, logs)
        for k, v in logs.items():
            history.setdefault(k, []).append(v)
        if model.stop_training:
            break
    cbs.on_train_end()
    return history


def plain_copy(model: Any, build: Any, params: Mapping[str, Any], strat: Any) -> Any:
    """The trained weights in a model built outside the strategy (what is exported)."""
    if is_default(strat):
        return model
    copy = build(params)
    copy.set_weights(model.get_weights())
    return copy


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def launch_local_cluster(workers: int, job: Mapping[str, Any], out_dir: Path,
                         poll: float = 0.5) -> None:
    """Run one training as ``workers`` processes on loopback; raise if any of them dies.

    Each process runs ``python -m tasks.steps.train JOB_FILE`` with its own ``TF_CONFIG``
    (worker 0 is the chief: it logs to MLflow and writes ``out_dir``). A worker that exits
    abnormally stops the others at once (a peer would otherwise wait in a collective).

    Raises:
        WorkerFailed: A worker exited with an error or a signal; names it and its log.

    """
    ports = _free_ports(workers)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    logs = Path(tempfile.mkdtemp(prefix="mlp-workers-"))
    job_file = logs / "job.json"
    job_file.write_text(json.dumps(dict(job)))
    procs = []
    for index in range(workers):
        env = {**os.environ, "TF_CONFIG": json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}})}
        with open(logs / f"worker-{index}.log", "wb") as fh:
            procs.append(subprocess.Popen([sys.executable, "-m", "tasks.steps.train",
                                           str(job_file)], env=env, stdout=fh,
                                          stderr=subprocess.STDOUT, start_new_session=True))
    log.info("distributed training: %d workers on %s (pids %s, logs in %s)", workers,
             ", ".join(cluster["worker"]), [p.pid for p in procs], logs)
    try:
        while any(p.poll() is None for p in procs):
            for index, p in enumerate(procs):
                if p.poll() not in (None, 0):
                    raise WorkerFailed(_death(index, p, workers, logs))
            time.sleep(poll)
        for index, p in enumerate(procs):
            if p.returncode != 0:
                raise WorkerFailed(_death(index, p, workers, logs))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _death(index: int, proc: subprocess.Popen, workers: int, logs: Path) -> str:
    code = proc.returncode
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
    tail = (logs / f"worker-{index}.log").read_text(errors="replace").strip().splitlines()
    last = next((line for line in reversed(tail) if line.strip()), "")
    return (f"distributed training: worker {index} of {workers} (pid {proc.pid}) {how}; "
            f"the other workers were stopped and nothing was registered. The task's retry "
            f"trains again from the start. Worker logs: {logs}"
            + (f"; its last line: {last[:300]}" if code > 0 and last else ""))
