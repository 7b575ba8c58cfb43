"""Real, tiny MLflow-logged Keras models shared by the gate, registry and serving tests.

They live in their own MLflow store (not the session's ``MLP_HOME`` store the end-to-end
DAG test asserts on), so a registered ``mnist`` here never collides with the DAG's.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import numpy as np
import pytest

# The session's tracking URI (set by tests/conftest.py). mlflow.set_tracking_uri() also
# exports MLFLOW_TRACKING_URI, so pointing MLflow at the store below would leak into every
# later test that reads settings() from the environment: restore it after each test.
SESSION_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


def restore_tracking_uri() -> None:
    import mlflow

    if SESSION_TRACKING_URI:
        mlflow.set_tracking_uri(SESSION_TRACKING_URI)
        mlflow.set_registry_uri(SESSION_TRACKING_URI)


@pytest.fixture(autouse=True)
def _session_tracking_uri():
    yield
    if "mlflow" in sys.modules:
        restore_tracking_uri()


@dataclass(frozen=True)
class Logged:
    """One MLflow run holding a logged model and the evaluation step's artifacts."""

    run_id: str
    model_uri: str
    accuracy: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def reg_settings(tmp_path_factory):
    """Settings of an isolated platform root (own SQLite MLflow store, fast polling)."""
    from tasks.core.config import settings

    root = tmp_path_factory.mktemp("mlp-registry")
    return replace(settings(), root=root, tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                   serve_poll_seconds=0.2)


def _log_run(s, exp_id, name, model, x_test, y_test, history, example):
    import mlflow
    from mlflow.models import infer_signature

    from tasks.objectives.classification import classification_metrics

    with mlflow.start_run(experiment_id=exp_id, run_name=name) as run:
        for step in range(len(next(iter(history.values()), []))):
            mlflow.log_metrics({k: float(v[step]) for k, v in history.items()}, step=step)
        if y_test is not None:
            report = classification_metrics(y_test, model.predict(x_test, verbose=0))
            mlflow.log_metrics({k: v for k, v in report.items() if isinstance(v, float)})
            mlflow.log_dict(report, "evaluation/evaluation.json")
            accuracy = report["test_accuracy"]
        else:
            accuracy = float("nan")
        signature = infer_signature(example, model.predict(example, verbose=0))
        # Explicit requirements: inferring them spawns a slow subprocess per model.
        info = mlflow.tensorflow.log_model(model, name="model", signature=signature,
                                           pip_requirements=["tensorflow-cpu", "keras"])
    return Logged(run.info.run_id, info.model_uri, accuracy)


@pytest.fixture(scope="session")
def logged_models(reg_settings):
    """``good`` and ``weak`` MNIST softmax models, a uint8-input one and an autoencoder.

    ``good`` trains 4 epochs on 400 real (scikit-learn) digits and scores well on 200
    held-out ones; ``weak`` sees one epoch at a tiny learning rate and stays poor. Both
    carry the evaluation report and per-epoch history, as pipeline runs do.
    """
    import keras

    from models.mnist import build_model
    from tasks import tracking
    from tests.conftest import digits_as_mnist

    data = digits_as_mnist(400, 200, seed=1)
    x, y = data["train_images"].astype("float32"), data["train_labels"]
    xt, yt = data["test_images"].astype("float32"), data["test_labels"]
    stats = {"train": {"features": {"image": {"min": 0, "max": 255}}}}
    tracking.configure(reg_settings)
    exp_id = tracking.experiment_id("fixtures", reg_settings)
    keras.utils.set_random_seed(0)
    out = {}

    good = build_model({"variant": "softmax", "learning_rate": 0.01}, stats)
    hist = good.fit(x, y, epochs=4, batch_size=32, validation_split=0.1, verbose=0).history
    out["good"] = _log_run(reg_settings, exp_id, "good", good, xt, yt, hist, xt[:2])

    weak = build_model({"variant": "softmax", "learning_rate": 1e-6}, stats)
    hist = weak.fit(x[:64], y[:64], epochs=2, batch_size=64, verbose=0).history
    out["weak"] = _log_run(reg_settings, exp_id, "weak", weak, xt, yt, hist, xt[:2])

    layers = keras.layers
    inp = keras.Input(shape=(28, 28), dtype="uint8", name="raw")
    h = layers.Flatten()(layers.Rescaling(1 / 255)(inp))  # Rescaling casts uint8 to float
    u8 = keras.Model(inp, layers.Dense(10, activation="softmax", name="probs")(h))
    out["uint8"] = _log_run(reg_settings, exp_id, "uint8", u8, None, None, {},
                            data["test_images"][:2])

    inp = keras.Input(shape=(28, 28), dtype="float32", name="pixels")
    h = layers.Dense(32, activation="relu")(layers.Flatten()(layers.Rescaling(1 / 255)(inp)))
    ae = keras.Model(inp, layers.Reshape((28, 28))(layers.Dense(784, activation="sigmoid")(h)))
    out["autoencoder"] = _log_run(reg_settings, exp_id, "autoencoder", ae, None, None, {},
                                  xt[:2])
    assert out["good"].accuracy > 0.75 > out["weak"].accuracy
    return out


@pytest.fixture(scope="session")
def served_registry(reg_settings, logged_models):
    """Registered versions for the servers: name -> {version: Logged}.

    ``mnist`` v1 (good, champion) and v2 (weak); ``hot`` the same pair for hot-reload
    tests; ``pixels_u8`` (uint8 input) and ``mnist_autoencoder`` (the demo's hook).
    """
    good, weak = logged_models["good"], logged_models["weak"]
    out = {}
    for name in ("mnist", "hot"):
        register(reg_settings, name, good)
        register(reg_settings, name, weak, alias=None)
        out[name] = {"1": good, "2": weak}
    for name, key in (("pixels_u8", "uint8"), ("mnist_autoencoder", "autoencoder")):
        register(reg_settings, name, logged_models[key])
        out[name] = {"1": logged_models[key]}
    return out


SERVED = ("mnist", "hot", "pixels_u8", "mnist_autoencoder")


@pytest.fixture(scope="session")
def digits():
    """Held-out real digits (MNIST format, uint8) with labels."""
    from tests.conftest import digits_as_mnist

    data = digits_as_mnist(400, 200, seed=1)
    return data["test_images"], data["test_labels"]


def register(s, name: str, logged: Logged, alias: str | None = "champion") -> str:
    """Register ``logged`` as a new version of ``name``; optionally point an alias at it."""
    import mlflow

    from tasks import tracking

    client = tracking.configure(s)
    mv = mlflow.register_model(logged.model_uri, name)
    if alias:
        client.set_registered_model_alias(name, alias, str(mv.version))
    return str(mv.version)


class RunningServer:
    """The REST server on a free loopback port in a thread (real uvicorn)."""

    def __init__(self, s, models=SERVED, options=None, headers=None):
        import uvicorn

        from tasks.serving import create_app

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.app = create_app(s, models=models, options=options)
        self.headers = headers or {}
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1",
                                                    port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.base}/readyz",
                             headers=self.headers).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError("server did not become ready")

    def wait_for(self, name: str, version: str, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = httpx.get(f"{self.base}/v1/models/{name}")
            if r.status_code == 200 and r.json()["model_version_status"][0]["version"] == version:
                return
            time.sleep(0.05)
        raise TimeoutError(f"{name} v{version} not served after {timeout}s")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)
        restore_tracking_uri()  # the poller pointed MLflow at the test store until now


def predict_local(s, model_uri: str, batch: np.ndarray) -> np.ndarray:
    """Reference prediction straight from the logged Keras model (in the store of ``s``)."""
    import mlflow

    from tasks import tracking

    tracking.configure(s)
    return np.asarray(mlflow.tensorflow.load_model(model_uri).predict(batch, verbose=0))


@pytest.fixture()
def artifacts_of(reg_settings):
    """Download a run's artifacts under a folder and return the local path."""
    def fetch(run_id: str, path: str, dest: Path) -> Path:
        import mlflow

        from tasks import tracking

        tracking.configure(reg_settings)
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                        dst_path=str(dest)))
    return fetch
