"""The custom Keras layers exported models carry (self-contained: Keras and numpy only).

- ``FeatureTransform``: the Keras twin of the feature transforms, so the served model
  applies exactly what Beam applied to the training data;
- ``AnomalyScore``: the anomaly objective's head (reconstruction error and flag).

Keras is imported lazily (Beam workers use :mod:`tasks.features.transforms` without it);
the classes are created and registered with Keras on first use. MLflow logs this file
with every model (``code_paths``) so the models load outside the platform too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_FEATURE_TRANSFORM: list[type] = []


def feature_transform_layer() -> type:
    """The registered ``FeatureTransform`` layer class (created on first use)."""
    if _FEATURE_TRANSFORM:
        return _FEATURE_TRANSFORM[0]
    import keras

    @keras.saving.register_keras_serializable(package="mlp")
    class FeatureTransform(keras.layers.Layer):
        """Per-column transforms with constants from the training statistics."""

        def __init__(self, columns: list[dict[str, Any]], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.columns = columns

        def call(self, x: Any) -> Any:
            k = keras.ops
            x = k.cast(x, "float32")
            out = []
            for i, c in enumerate(self.columns):
                col = x[:, i:i + 1]
                if c["kind"] == "numeric":
                    if c["log1p"]:
                        col = k.log1p(k.maximum(col, -0.999999))
                    col = k.clip(col * c["scale"] + c["offset"], c["low"], c["high"])
                    out.append(col)
                    continue
                vocab = k.convert_to_tensor(np.asarray([c["vocab"]], np.float32))
                hits = k.cast(k.equal(col, vocab), "float32")
                oov = 1.0 - k.sum(hits, axis=1, keepdims=True)
                if c["kind"] == "onehot":
                    out.append(k.concatenate([hits, oov], axis=1))
                else:
                    idx = k.sum(hits * k.arange(len(c["vocab"]), dtype="float32"), axis=1,
                                keepdims=True)
                    out.append(idx + oov * len(c["vocab"]))
            return k.concatenate(out, axis=1) if len(out) > 1 else out[0]

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "columns": self.columns}

    _FEATURE_TRANSFORM.append(FeatureTransform)
    return FeatureTransform


_SCORE_LAYER: list[type] = []


def anomaly_score_layer() -> type:
    """The registered ``AnomalyScore`` Keras layer class (created on first use)."""
    if _SCORE_LAYER:
        return _SCORE_LAYER[0]
    import keras

    @keras.saving.register_keras_serializable(package="mlp")
    class AnomalyScore(keras.layers.Layer):
        """Mean squared reconstruction error per row, and the flag ``score > threshold``."""

        def __init__(self, threshold: float, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.threshold = float(threshold)

        def call(self, inputs: Any) -> Any:
            k = keras.ops
            x, recon = inputs
            score = k.mean(k.square(recon - x), axis=-1)
            return {"score": score, "flag": k.cast(score > self.threshold, "int32")}

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "threshold": self.threshold}

    _SCORE_LAYER.append(AnomalyScore)
    return AnomalyScore


def register_all() -> None:
    """Register every custom layer with Keras (call before loading a saved model)."""
    from tasks.features.audio import audio_layers

    feature_transform_layer()
    anomaly_score_layer()
    from tasks.features.text_layers import text_layers

    text_layers()
    audio_layers()
