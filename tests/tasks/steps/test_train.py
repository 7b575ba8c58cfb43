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


@pytest.mark.parametrize("every", [0.0, 3600.0])  # each epoch sent at once / all at the end
def test_the_epoch_logger_flushes_mlflows_queue_when_the_fit_ends(tmp_path, monkeypatch, every):
    """Per-epoch metrics go through MLflow's async queue; it must be empty before the step
    writes again (two writers on one SQLite store deadlock: "database is locked")."""
    import keras
    import mlflow
    import numpy as np

    from tasks.steps import train
    from tasks.steps.train import _epoch_logger

    monkeypatch.setattr(train, "LOG_EVERY_SECONDS", every)
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
        hist = model.fit(x, x[:, :1], epochs=3, verbose=0,
                         callbacks=[_epoch_logger(lines=False)])
        assert events == ["flush"]  # once, at the end of the fit
        history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")
        assert [m.step for m in history] == [0, 1, 2]
        assert [m.value for m in history] == [pytest.approx(v) for v in hist.history["loss"]]


def _fitted(spe: int, amortise: bool):
    import keras
    import numpy as np
    import tensorflow as tf

    from tasks.steps.train import amortise_steps

    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(341, 30)).astype("float32")  # 22 batches of 16, the last partial
    y = (x[:, 0] + 0.3 * x[:, 1] > 0).astype("int64")
    model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy",
                  steps_per_execution=spe)
    if amortise:
        amortise_steps(model)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(341, seed=1).batch(16)
    history = model.fit(ds, validation_data=ds.take(2), epochs=4, verbose=0)
    return model, history.history


def test_steps_per_execution_trains_the_same_weights_as_one_step_per_call():
    from tasks.steps.train import STEPS_PER_EXECUTION

    one, h1 = _fitted(1, amortise=False)
    many, h32 = _fitted(1, amortise=True)
    assert many.steps_per_execution == STEPS_PER_EXECUTION > 1
    for a, b in zip(one.get_weights(), many.get_weights(), strict=True):
        assert (a == b).all()
    assert h1 == h32  # and the same per-epoch logs


def test_a_use_cases_own_steps_per_execution_is_kept():
    model, _ = _fitted(4, amortise=True)
    assert model.steps_per_execution == 4
