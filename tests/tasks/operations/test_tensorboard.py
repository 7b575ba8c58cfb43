"""``mlp tensorboard``: which logs it opens, and a real TensorBoard serving weight histograms."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from tasks.operations.tensorboard import NoLogs, logdir

FIT = """
import sys
import keras
import numpy as np

keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="hidden"),
                          keras.layers.Dense(1, name="out")])
model.compile("adam", "mse")
x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
model.fit(x, x[:, :1], epochs=2, verbose=0,
          callbacks=[keras.callbacks.TensorBoard(sys.argv[1], histogram_freq=1)])
"""


def _fit_with_histograms(log_dir: Path) -> None:
    """Two epochs of a tiny model with the training step's TensorBoard callback settings.

    In a child process: TensorBoard's logging handlers would otherwise keep a stream of
    this test that pytest closes, and a later test's TensorFlow warning would write to it.
    """
    done = subprocess.run([sys.executable, "-c", FIT, str(log_dir)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture()
def root(tmp_path):
    from tasks.core.config import settings

    s = replace(settings(), root=tmp_path, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    _fit_with_histograms(tmp_path / "runs" / "digits" / "20260101T000000Z" / "train" /
                         "tensorboard")
    return s


def test_logdir_is_every_run_or_one_run(root):
    assert logdir("digits", None, root) == root.root / "runs" / "digits"
    assert logdir("digits", "20260101T000000Z", root) == (
        root.root / "runs" / "digits" / "20260101T000000Z" / "train")
    with pytest.raises(NoLogs, match=r"no training run with TensorBoard logs.*mlp run other"):
        logdir("other", None, root)
    with pytest.raises(NoLogs, match=r"'nope' is neither a run key .* nor an MLflow run id"):
        logdir("digits", "nope", root)


@pytest.mark.slow
def test_mlp_tensorboard_serves_the_weight_histograms(root):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MLP_HOME": str(root.root)}
    mlp = Path(sys.executable).with_name("mlp")
    proc = subprocess.Popen([str(mlp), "tensorboard", "digits", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, tags = time.monotonic() + 180, {}
        while time.monotonic() < deadline and not tags:  # TensorBoard loads logs lazily
            time.sleep(2)
            try:
                tags = httpx.get(f"http://127.0.0.1:{port}/data/plugin/histograms/tags",
                                 timeout=5).json()
            except (httpx.TransportError, ValueError):
                continue
        (run,) = [r for r in tags if r.startswith("20260101T000000Z")]
        kernels = {t for t in tags[run] if t.endswith("kernel/histogram")}
        assert {t.split("/")[-3] for t in kernels} == {"hidden", "out"}, tags[run]
    finally:
        proc.terminate()  # mlp execs TensorBoard: the signal reaches it, nothing is left
        proc.wait(timeout=30)
