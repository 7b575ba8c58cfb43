"""A small registered credit-card model with the references a pipeline run logs.

Shared by the batch-scoring and monitoring tests: ``creditcard_fraud`` version 1 (alias
``champion``) in the test's own MLflow store takes the packed V1..V28 features (input
``inputs``, as ``mlp serve`` serves the tabular model) and answers ``{"score", "flag"}``;
its run holds ``preprocessing/stats.json`` (training histograms) and
``monitoring/predictions.json`` (its answers' histograms).
"""

import numpy as np
import pytest

from models.creditcard_fraud import SPEC, V_COLUMNS, generate
from tasks.features.profile import data_columns, profile


@pytest.fixture()
def registered(own_mlflow, tmp_path):
    """creditcard_fraud v1: a tiny Keras model with the served signature and references."""
    import keras
    import mlflow

    from tasks import tracking
    from tasks.steps.references import (
        PREDICTIONS_ARTIFACT,
        STATS_ARTIFACT,
        named_outputs,
        prediction_histograms,
    )

    generate(tmp_path, 4000, 1)
    files = SPEC.source.files(str(tmp_path))
    batches = list(SPEC.source.read_batches(files, "all", 4096))
    (tmp_path / "creditcard.csv").unlink()
    keras.utils.set_random_seed(0)
    inp = keras.Input((len(V_COLUMNS),), name="inputs")
    score = keras.layers.Reshape(())(keras.layers.Dense(1, name="s")(
        keras.layers.Dense(4, activation="tanh")(inp)))
    model = keras.Model(inp, {"score": score,
                              "flag": keras.ops.cast(keras.ops.greater(score, 0.0), "int64")})
    x = np.stack([batches[0][c] for c in V_COLUMNS], axis=1).astype("float32")
    client = tracking.configure()
    with mlflow.start_run(experiment_id=tracking.experiment_id(SPEC.name)):
        info = mlflow.tensorflow.log_model(model, name="model", pip_requirements=["keras"])
        cols = data_columns(SPEC.preprocess, SPEC.source.schema())
        mlflow.log_dict({"train": {"histograms": profile(cols, batches)}}, STATS_ARTIFACT)
        mlflow.log_dict(prediction_histograms(named_outputs(model, model.predict(x, verbose=0))),
                        PREDICTIONS_ARTIFACT)
    mv = mlflow.register_model(info.model_uri, SPEC.name)
    client.set_registered_model_alias(SPEC.name, "champion", str(mv.version))
    return model
