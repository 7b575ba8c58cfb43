"""Image features shared by the training path and the served model (TensorFlow + Keras only).

- :func:`resize_crop`: the one resize both paths use. Preprocessing (Beam) resizes each
  detected face box with it before the crop is stored; the served model resizes the crop a
  client sends with it, so the two cannot drift apart.
- ``DecodeImage`` (Keras layer): encoded image bytes (JPEG, PNG, BMP or GIF, as a client
  sends them base64-encoded in TensorFlow Serving's ``{"b64": ...}`` form) -> the uint8
  pixels the model was trained on, as float32.
- ``ClassNames`` (Keras layer): probabilities -> the name of the most likely class.

The layers are created and registered with Keras (package ``mlp``) on first use
(:func:`image_layers`); MLflow logs this file with every model (``code_paths``), so the
models load outside the platform too.
"""

from __future__ import annotations

from typing import Any

_LAYERS: dict[str, type] = {}


def resize_crop(images: Any, size: int) -> Any:
    """Resize a batch (n, h, w, c) to (n, size, size, c) uint8.

    Bilinear with anti-aliasing (a large crop is averaged, not aliased), rounded and
    clipped to uint8 as the crops are stored.
    """
    import tensorflow as tf

    x = tf.image.resize(tf.cast(images, tf.float32), [size, size], method="bilinear",
                        antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)


def image_layers() -> dict[str, type]:
    """The registered ``DecodeImage`` and ``ClassNames`` layer classes (created on first use)."""
    if _LAYERS:
        return _LAYERS
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="mlp")
    class DecodeImage(keras.layers.Layer):
        """Encoded image bytes (batch,) string -> (batch, size, size, channels) float32.

        A string that is not a decodable image makes the call fail with TensorFlow's
        ``InvalidArgumentError`` (the server answers 400).
        """

        def __init__(self, size: int, channels: int = 3, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.size = int(size)
            self.channels = int(channels)

        def call(self, data: Any) -> Any:
            def one(blob: Any) -> Any:
                img = tf.io.decode_image(blob, channels=self.channels,
                                         expand_animations=False)
                img.set_shape([None, None, self.channels])
                return resize_crop(img[None], self.size)[0]

            data = tf.reshape(tf.convert_to_tensor(data, tf.string), [-1])
            pixels = tf.map_fn(one, data, fn_output_signature=tf.TensorSpec(
                [self.size, self.size, self.channels], tf.uint8))
            return tf.cast(pixels, tf.float32)

        def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
            return (input_shape[0], self.size, self.size, self.channels)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "size": self.size, "channels": self.channels}

    @keras.saving.register_keras_serializable(package="mlp")
    class ClassNames(keras.layers.Layer):
        """Probabilities (batch, k) -> name of the most likely class (batch,) string."""

        def __init__(self, names: list[str], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.names = [str(n) for n in names]

        def call(self, proba: Any) -> Any:
            return tf.gather(tf.constant(self.names), tf.argmax(proba, axis=-1))

        def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
            return (input_shape[0],)

        def compute_output_spec(self, proba: Any) -> Any:
            return keras.KerasTensor((proba.shape[0],), dtype="string")

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "names": self.names}

    _LAYERS.update(DecodeImage=DecodeImage, ClassNames=ClassNames)
    return _LAYERS


def image_input(size: int, name: str = "image") -> tuple[Any, Any]:
    """A served model's front end: (string input ``name``, decoded and resized pixels)."""
    import keras

    raw = keras.Input(shape=(), dtype="string", name=name)
    return raw, image_layers()["DecodeImage"](size, name="decode_image")(raw)


def with_class_names(proba: Any, names: list[str]) -> dict[str, Any]:
    """Served outputs ``{"probabilities": (batch, k), "class_name": (batch,)}``."""
    return {"probabilities": proba,
            "class_name": image_layers()["ClassNames"](list(names), name="class_name")(proba)}
