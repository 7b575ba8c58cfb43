"""Test session set-up: an isolated data root, exported before Airflow is imported."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path

import numpy as np
import pytest

# Airflow reads its configuration on first import: point everything at a throw-away root
# (Airflow home, SQLite metadata DB, MLflow store) before any test module imports it.
os.environ["MLP_HOME"] = tempfile.mkdtemp(prefix="mlp-test-")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("AIRFLOW_HOME", None)
for _key in [k for k in os.environ if k.startswith("AIRFLOW__")]:
    os.environ.pop(_key)

from tasks.core.config import apply_env  # noqa: E402
from tasks.data.idx import write_idx  # noqa: E402

apply_env()


def digits_as_mnist(n_train: int, n_test: int, seed: int = 0) -> dict[str, np.ndarray]:
    """scikit-learn's real 8x8 digits upscaled to MNIST's 28x28 uint8 format."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(d.images))[: n_train + n_test]
    imgs = np.kron(d.images[order], np.ones((3, 3)))  # 24x24
    imgs = np.pad(imgs, ((0, 0), (2, 2), (2, 2)))
    imgs = np.clip(imgs * (255.0 / 16.0), 0, 255).astype(np.uint8)
    labels = d.target[order].astype(np.uint8)
    return {
        "train_images": imgs[:n_train], "train_labels": labels[:n_train],
        "test_images": imgs[n_train:], "test_labels": labels[n_train:],
    }


def wait_for(what: str, probe, timeout: float, every: float = 1.0):
    """Poll ``probe`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def write_mnist_dir(path: Path, data: dict[str, np.ndarray], gz: bool = True) -> Path:
    """Write arrays with MNIST's file names as IDX files."""
    names = {
        "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
        "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
    }
    path.mkdir(parents=True, exist_ok=True)
    for key, stem in names.items():
        write_idx(path / (stem + (".gz" if gz else "")), data[key])
    return path


@pytest.fixture()
def mnist_dir(tmp_path: Path) -> Path:
    """A small real-digits source directory in MNIST format (gzip IDX)."""
    return write_mnist_dir(tmp_path / "source", digits_as_mnist(300, 100))


@pytest.fixture()
def own_mlflow(tmp_path, monkeypatch) -> str:
    """A fresh MLflow tracking/registry store for one test.

    The Airflow metadata DB is shared by the session, but registry state is not: a test
    asserting "version 1" or comparing with the champion must not see models another
    test registered under the same name.
    """
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Create the Airflow metadata DB of the test root once per session."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True,
                   capture_output=True, env=os.environ.copy())


@contextlib.contextmanager
def serving(models: Collection[str] = (), timeout: float = 180.0) -> Iterator[str]:
    """The REST server of the session's registry on a free loopback port, ready to answer.

    A real uvicorn server in a thread; yields its base URL once ``/readyz`` answers and
    serves every name in ``models``, and stops it afterwards.
    """
    import httpx
    import uvicorn

    from tasks.serving import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                ready = httpx.get(f"{base}/readyz")
                if ready.status_code == 200 and set(models) <= set(ready.json()["models"]):
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)
