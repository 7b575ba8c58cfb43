"""The custom Keras layers exported models carry (self-contained: Keras and numpy only).

- ``FeatureTransform``: the Keras twin of the feature transforms, so the served model
  applies exactly what Beam applied to the training data;
- ``AnomalyScore``: the anomaly objective's head (reconstruction error and flag);
- ``ImageAugmentation``: the books' image distortions, drawn per image in training only
  (inert when serving); it uses TensorFlow's image ops, the platform's Keras backend.

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


_AUGMENT_LAYER: list[type] = []


def image_augmentation_layer() -> type:
    """The registered ``ImageAugmentation`` Keras layer class (created on first use)."""
    if _AUGMENT_LAYER:
        return _AUGMENT_LAYER[0]
    import keras

    @keras.saving.register_keras_serializable(package="mlp")
    class ImageAugmentation(keras.layers.Layer):
        """The books' image distortions, drawn per image, in training only.

        Training (images in [0, 1], channels last): a random ``crop`` x ``crop`` window,
        a left-right flip with probability 0.5, a hue shift U(-hue, hue) of a full turn,
        a contrast factor U(*contrast) about each channel's mean and a brightness shift
        U(-brightness, brightness), in that order and unclipped, as the book's
        ``tf.image`` calls. Otherwise (evaluation, serving) only the centre window: the
        book's ``resize_image_with_crop_or_pad``. So a served model never augments.
        """

        def __init__(self, crop: int, hue: float = 0.0,
                     contrast: tuple[float, float] = (1.0, 1.0), brightness: float = 0.0,
                     seed: int | None = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.crop = int(crop)
            self.hue = float(hue)
            self.contrast = (float(contrast[0]), float(contrast[1]))
            self.brightness = float(brightness)
            self.seed = seed
            self._gen = keras.random.SeedGenerator(seed)

        def call(self, x: Any, training: bool | None = None) -> Any:
            import tensorflow as tf

            size, (h, w) = self.crop, x.shape[1:3]
            if not training:
                top, left = (h - size) // 2, (w - size) // 2
                return x[:, top:top + size, left:left + size, :]
            n = tf.shape(x)[0]
            # one draw per image: crop row, crop column, flip, hue, contrast, brightness
            r = tf.random.stateless_uniform(tf.stack([n, 6]),
                                            seed=tf.cast(self._gen.next(), tf.int32))
            span = tf.range(size)
            rows = tf.cast(r[:, 0] * (h - size + 1), tf.int32)[:, None] + span
            cols = tf.cast(r[:, 1] * (w - size + 1), tf.int32)[:, None] + span
            x = tf.gather(tf.gather(x, rows, axis=1, batch_dims=1), cols, axis=2,
                          batch_dims=1)
            x = tf.where((r[:, 2] < 0.5)[:, None, None, None], tf.reverse(x, [2]), x)
            if self.hue:
                hsv = tf.image.rgb_to_hsv(tf.clip_by_value(x, 0.0, 1.0))
                shift = ((r[:, 3] * 2 - 1) * self.hue)[:, None, None]
                hue = tf.math.floormod(hsv[..., 0] + shift, 1.0)
                x = tf.image.hsv_to_rgb(tf.stack([hue, hsv[..., 1], hsv[..., 2]], axis=-1))
            lo, hi = self.contrast
            factor = (lo + r[:, 4] * (hi - lo))[:, None, None, None]
            mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
            x = (x - mean) * factor + mean
            return x + ((r[:, 5] * 2 - 1) * self.brightness)[:, None, None, None]

        def compute_output_shape(self, input_shape: Any) -> Any:
            return (input_shape[0], self.crop, self.crop, input_shape[3])

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "crop": self.crop, "hue": self.hue,
                    "contrast": list(self.contrast), "brightness": self.brightness,
                    "seed": self.seed}

    _AUGMENT_LAYER.append(ImageAugmentation)
    return ImageAugmentation


_WEIGHT_DROPOUT: list[type] = []


def weight_dropout_dense_layer() -> type:
    """The registered ``WeightDropoutDense`` Keras layer class (created on first use)."""
    if _WEIGHT_DROPOUT:
        return _WEIGHT_DROPOUT[0]
    import keras

    @keras.saving.register_keras_serializable(package="mlp")
    class WeightDropoutDense(keras.layers.Dense):
        """A dense layer whose **weights** are dropped out while training.

        The book's GTZAN network drops the first layer's weight matrix, not its
        activations: ``h = relu(x @ dropout(W, keep_prob) + b)`` (``tf.nn.dropout`` on
        ``W``: each weight kept with probability ``1 - rate`` and scaled by ``1 / (1 -
        rate)``, one mask per training step). Outside training it is a plain dense layer.
        """

        def __init__(self, units: int, weight_dropout: float = 0.5,
                     seed: int | None = None, **kwargs: Any) -> None:
            super().__init__(units, **kwargs)
            self.weight_dropout = float(weight_dropout)
            self.seed = seed
            self._gen = keras.random.SeedGenerator(seed)

        def call(self, inputs: Any, training: bool | None = None) -> Any:
            kernel = self.kernel
            if training and self.weight_dropout > 0:
                kernel = keras.random.dropout(kernel, self.weight_dropout, seed=self._gen)
            x = keras.ops.matmul(inputs, kernel)
            if self.use_bias:
                x = x + self.bias
            return self.activation(x) if self.activation is not None else x

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "weight_dropout": self.weight_dropout,
                    "seed": self.seed}

    _WEIGHT_DROPOUT.append(WeightDropoutDense)
    return WeightDropoutDense


def register_all() -> None:
    """Register every custom layer with Keras (call before loading a saved model)."""
    from tasks.features.audio import audio_layers
    from tasks.features.detection import detection_classes
    from tasks.features.images import image_layers
    from tasks.features.tabular_layers import packed_columns_layer, tabular_transform_layer
    from tasks.features.text_layers import text_layers

    feature_transform_layer()
    anomaly_score_layer()
    audio_layers()
    detection_classes()
    image_augmentation_layer()
    image_layers()
    packed_columns_layer()
    tabular_transform_layer()
    text_layers()
    weight_dropout_dense_layer()
