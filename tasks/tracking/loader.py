"""Load a registered model version the way the REST server does (shared by serve and deploy).

The server and the deploy step's infra validation must load a version identically: the
platform's custom Keras layers registered, the Keras model from the MLflow registry, and
one concrete ``tf.function`` over the model's input signature (traced once, here).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tasks.core.config import Settings
from tasks.tracking.store import configure


@dataclass
class LoadedVersion:
    """One registered version, loaded for serving.

    Attributes:
        model: The Keras model.
        predict: ``np.ndarray -> np.ndarray | dict[str, np.ndarray]`` for a typed batch
            (a model with named inputs takes ``{input name: np.ndarray}``).
        run_id: The MLflow run the version came from.
        metadata: The MLflow model's metadata (a tabular model's input schema under
            ``"mlp"``: :mod:`tasks.features.schema`).

    """

    model: Any
    predict: Callable[[Any], Any]
    run_id: str | None
    metadata: dict[str, Any] = field(default_factory=dict)


# The last versions loaded with ``reuse=True`` in this process. A version's artifacts do
# not change once registered, and one run process loads the champion twice (the drift
# check before training and the evaluation after it; 0.3-0.4 s each for a tiny model).
CACHED_VERSIONS = 2
_loaded: OrderedDict[tuple[str, str, str, str], LoadedVersion] = OrderedDict()


def load_registered(name: str, version: str, s: Settings | None = None,
                    reuse: bool = False) -> LoadedVersion:
    """Load ``models:/<name>/<version>`` into a traced predict function.

    A model with several inputs (a tabular model's named columns, shape ``[None]``
    each) takes a dict of them. The registry is asked every time. With ``reuse``, for
    callers that only predict, the copy an earlier ``reuse`` call loaded is returned (the
    last :data:`CACHED_VERSIONS` versions); without it the artifacts are loaded afresh
    (serving, infra validation, a parent model that a child model is built on).

    Raises:
        mlflow.exceptions.MlflowException: The registry has no such version.

    """
    import mlflow

    client = configure(s)
    mv = client.get_model_version(name, str(version))
    if not reuse:
        return _load(name, str(version), mv.run_id)
    key = (mlflow.get_tracking_uri(), mlflow.get_registry_uri(), name, str(version))
    if key in _loaded:
        _loaded.move_to_end(key)
        return _loaded[key]
    loaded = _load(name, str(version), mv.run_id)
    _loaded[key] = loaded
    while len(_loaded) > CACHED_VERSIONS:
        _loaded.popitem(last=False)
    return loaded


def _load(name: str, version: str, run_id: str | None) -> LoadedVersion:
    import mlflow
    import tensorflow as tf

    from tasks.features.layers import register_all

    register_all()  # the platform's custom layers must be registered before loading
    uri = f"models:/{name}/{version}"
    local = mlflow.artifacts.download_artifacts(uri)
    model = mlflow.tensorflow.load_model(local)
    metadata = mlflow.models.Model.load(local).metadata or {}

    def spec(t: Any) -> Any:
        return tf.TensorSpec([None, *t.shape[1:]], tf.as_dtype(t.dtype))

    if not isinstance(model.input, dict):
        fn = tf.function(lambda x: model(x, training=False),
                         input_signature=[spec(model.inputs[0])])
    else:
        names = [t.name.split(":")[0] for t in model.inputs]
        fn = tf.function(lambda x: model(x, training=False), input_signature=[
            {n: spec(t) for n, t in zip(names, model.inputs, strict=True)}])
    # Calling the concrete function skips tf.function's per-call argument matching.
    concrete = fn.get_concrete_function()

    def predict(batch: Any) -> Any:
        if isinstance(batch, dict):
            out = concrete({k: tf.constant(v) for k, v in batch.items()})
        else:
            out = concrete(tf.constant(batch))
        if isinstance(out, dict):
            return {k: v.numpy() for k, v in out.items()}
        return out.numpy()

    return LoadedVersion(model, predict, run_id, dict(metadata))
