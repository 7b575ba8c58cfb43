"""Infra validation: a candidate that cannot answer as served never becomes champion."""

import json

import httpx
import numpy as np
import pytest

from tasks.core.run import RunLayout, Snapshot
from tasks.steps.deploy import deploy
from tasks.steps.infra_validation import InfraValidationError, check_answer
from tests.tasks.conftest import RunningServer
from tests.tasks.tracking.test_registry import VERDICT, trained_of


def _nan_model_run(s, digits):
    """A real logged model with corrupt (NaN) weights: it loads, but answers NaN."""
    import keras
    import mlflow
    from mlflow.models import infer_signature

    from tasks import tracking

    inp = keras.Input(shape=(28, 28), name="pixels")
    out = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([np.full_like(kernel, np.nan), bias])
    example = digits[0][:2].astype("float32")
    tracking.configure(s)
    exp = tracking.experiment_id("infra", s)
    with mlflow.start_run(experiment_id=exp, run_name="nan-weights") as run:
        info = mlflow.tensorflow.log_model(
            model, name="model", input_example=example,
            signature=infer_signature(example, np.zeros((2, 10), np.float32)),
            pip_requirements=["tensorflow-cpu", "keras"])

    class Logged:
        run_id, model_uri = run.info.run_id, info.model_uri

    return Logged


def test_check_answer_names_shape_and_non_finite_problems():
    assert check_answer(np.zeros((2, 10)), 2, {"output_0": (-1, 10)[1:]}) == []
    assert check_answer(np.zeros((2, 3)), 2, {"o": (10,)}) == [
        "output 'output' has shape (3,), its signature says (10,)"]
    bad = check_answer({"score": np.array([1.0, np.inf]), "flag": np.array([0, 1])}, 2, {})
    assert bad == ["output 'score' has 1 non-finite of 2 values"]
    assert "has (1,) rows for 2 example rows" in check_answer(np.zeros((1, 10)), 2, {})[0]


def test_a_model_that_cannot_answer_stops_deploy_and_the_champion_keeps_serving(
        reg_settings, logged_models, digits, tmp_path):
    from tasks import tracking

    name = "infra_stop"
    layout = RunLayout(tmp_path, name, "20260301T000000Z")
    first = deploy(name, trained_of(logged_models["good"]), VERDICT,
                   Snapshot("20260301T000000Z", "", "a" * 64), layout, reg_settings)
    assert first.version == "1"
    client = tracking.configure(reg_settings)
    assert client.get_model_version(name, "1").tags["infra_validation"] == "passed"

    broken = _nan_model_run(reg_settings, digits)
    with pytest.raises(InfraValidationError) as err:
        deploy(name, trained_of(broken), VERDICT, Snapshot("20260302T000000Z", "", "b" * 64),
               RunLayout(tmp_path, name, "20260302T000000Z"), reg_settings)
    msg = str(err.value)
    assert msg.startswith(f"{name} version 2 failed infra validation")
    assert "output 'output' has 20 non-finite of 20 values" in msg
    assert msg.endswith("the champion alias did not move")
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert client.get_model_version(name, "2").tags["infra_validation"] == "failed"
    run = client.get_run(broken.run_id)
    assert run.data.tags["infra_validation"] == "failed"
    assert "non-finite" in run.data.tags["infra_validation.reason"]

    with RunningServer(reg_settings, models=(name,)) as srv:
        r = httpx.post(f"{srv.base}/v1/models/{name}:predict",
                       content=json.dumps({"instances": digits[0][:3].tolist()}))
        assert r.status_code == 200 and r.headers["x-model-version"] == "1"
        preds = np.array(r.json()["predictions"])
        assert preds.shape == (3, 10) and np.isfinite(preds).all()
