"""Load a registered model version the way the REST server does (shared by serve and deploy).

The server and the deploy step's infra validation must load a version identically: the
platform's custom Keras layers registered, the Keras model from the MLflow registry, and
one concrete ``tf.function`` over the model's input signature (traced once, here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.core.config import Settings
from tasks.tracking.store import configure


@dataclass
class LoadedVersion:
    """One registered version, loaded for serving.

    Attributes:
        model: The Keras model.
        predict: ``np.ndarray -> np.ndarray | dict[str, np.ndarray]`` for a typed batch.
        run_id: The MLflow run the version came from.

    """

    model: Any
    predict: Callable[[np.ndarray], Any]
    run_id: str | None


def load_registered(name: str, version: str, s: Settings | None = None) -> LoadedVersion:
    """Load ``models:/<name>/<version>`` into a traced predict function.

    Raises:
        mlflow.exceptions.MlflowException: The registry has no such version.
        ValueError: The model does not have exactly one input.

    """
    import mlflow
    import tensorflow as tf

    from tasks.features.layers import register_all

    register_all()  # the platform's custom layers must be registered before loading
    client = configure(s)
    mv = client.get_model_version(name, str(version))
    model = mlflow.tensorflow.load_model(f"models:/{name}/{version}")
    if len(model.inputs) != 1:
        raise ValueError(f"only single-input models are served; this one has "
                         f"{len(model.inputs)} inputs")
    inp = model.inputs[0]
    fn = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec([None, *inp.shape[1:]], tf.as_dtype(inp.dtype))],
    )
    # Calling the concrete function skips tf.function's per-call argument matching.
    concrete = fn.get_concrete_function()

    def predict(batch: np.ndarray) -> Any:
        out = concrete(tf.constant(batch))
        if isinstance(out, dict):
            return {k: v.numpy() for k, v in out.items()}
        return out.numpy()

    return LoadedVersion(model, predict, mv.run_id)
