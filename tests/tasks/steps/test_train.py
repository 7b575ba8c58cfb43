"""The train step's param resolution: what a run records it trained with."""

import pytest

from tasks.core import hardware
from tasks.spec import catalog
from tasks.steps.train import histogram_freq, params_digest, resolve_params


def test_auto_precision_is_recorded_as_what_the_cpu_runs(monkeypatch):
    spec = catalog.get("mnist")
    for flags, expected in (({"avx512_bf16"}, "mixed_bfloat16"), ({"avx2"}, "float32")):
        monkeypatch.setattr(hardware, "cpu_flags", lambda f=flags: frozenset(f))
        params = resolve_params(spec, {"variant": "cnn", "epochs": 0, "precision": "auto"})
        assert params["precision"] == expected
        assert params["epochs"] == 8  # the cnn variant's default


def test_bf16_and_float32_runs_are_different_runs():
    spec = catalog.get("mnist")
    a = resolve_params(spec, {"variant": "cnn", "epochs": 1, "precision": "float32"})
    b = resolve_params(spec, {"variant": "cnn", "epochs": 1, "precision": "mixed_bfloat16"})
    assert params_digest(a) != params_digest(b)


def test_unknown_precision_is_refused_before_training():
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_params(catalog.get("mnist"), {"epochs": 1, "precision": "half"})


@pytest.mark.parametrize("epochs,freq", [(1, 1), (5, 1), (20, 1), (21, 2), (60, 3), (200, 10)])
def test_at_most_20_weight_histogram_snapshots(epochs, freq):
    assert histogram_freq({"epochs": epochs}) == freq
    assert -(-epochs // freq) <= 20


def test_the_epoch_logger_flushes_mlflows_queue_when_the_fit_ends(tmp_path, monkeypatch):
    """Per-epoch metrics go through MLflow's async queue; it must be empty before the step
    writes again (two writers on one SQLite store deadlock: "database is locked")."""
    import keras
    import mlflow
    import numpy as np

    from tasks.steps.train import _epoch_logger

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    real = mlflow.flush_async_logging
    events = []

    def flushed():
        real()
        events.append("flush")

    monkeypatch.setattr(mlflow, "flush_async_logging", flushed)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    with mlflow.start_run() as run:
        model.fit(x, x[:, :1], epochs=3, verbose=0, callbacks=[_epoch_logger(lines=False)])
        assert events == ["flush"]  # once, at the end of the fit
        history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")
        assert [m.step for m in history] == [0, 1, 2]
