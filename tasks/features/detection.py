"""A single-stage detector's encoding of boxes, its loss and its output decoding (CenterNet-like).

The detector sees a ``size x size`` image and predicts on a ``grid x grid`` map (``grid =
size / stride``), per cell: one heat-map logit per class (is an object of that class
centred here?), the box size in cells (height, width) and the centre's offset inside the
cell (y, x; sigmoid). This is CenterNet's "objects as points" (Zhou et al., 2019) on a
single feature map:

- :func:`encode_targets`: boxes -> the training target: per class a Gaussian bump around
  each object's centre cell (peak exactly 1 there, σ growing with the box), and size and
  offset at the centre cells, with their mask;
- ``CenterNetLoss``: the penalty-reduced pixel-wise focal loss on the heat map plus L1 on
  offsets and (weighted 0.1) sizes, normalised by the number of objects;
- ``DetectionOutputs``: the raw map -> the TensorFlow Object Detection API's outputs
  (``detection_boxes`` normalised ``[ymin, xmin, ymax, xmax]``, ``detection_classes``
  (label-map ids, 1-based, float as the API gives them), ``detection_scores``,
  ``num_detections``): local maxima of the heat map (3x3 max-pooling instead of NMS), the
  top ``max_detections`` by score.

:func:`resize_image` is the one resize of the training path and of the served model
(:func:`tasks.features.images.resize_crop`, as ``DecodeImage`` does), so they cannot drift.
:class:`DetectorInput` is the served model's front end (a base64 JPEG/PNG in).

The classes are created and registered with Keras (package ``mlp``) on first use; MLflow
logs this file with every model (``code_paths``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_CLASSES: dict[str, type] = {}
OUTPUT_NAMES = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")


def resize_image(image: Any, size: int) -> Any:
    """One decoded image (h, w, 3) uint8 -> (size, size, 3) float32 0-255, as served."""
    import tensorflow as tf

    from tasks.features.images import resize_crop

    return tf.cast(resize_crop(image[None], size)[0], tf.float32)


def encode_targets(boxes: Any, labels: Any, grid: int, num_classes: int) -> Any:
    """TensorFlow ops: one image's boxes -> its ``(grid, grid, num_classes + 5)`` target.

    Args:
        boxes: ``(k, 4)`` normalised ``[ymin, xmin, ymax, xmax]``.
        labels: ``(k,)`` class ids, 1-based.
        grid: Cells per side.
        num_classes: Number of classes.

    Returns:
        Channels: heat map per class, size (h, w) in cells, offset (y, x) in the cell,
        mask (1 at object centres).

    """
    import tensorflow as tf

    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    g = float(grid)
    cy = (boxes[:, 0] + boxes[:, 2]) * 0.5 * g
    cx = (boxes[:, 1] + boxes[:, 3]) * 0.5 * g
    h = (boxes[:, 2] - boxes[:, 0]) * g
    w = (boxes[:, 3] - boxes[:, 1]) * g
    iy = tf.clip_by_value(tf.floor(cy), 0.0, g - 1)
    ix = tf.clip_by_value(tf.floor(cx), 0.0, g - 1)
    # CenterNet's Gaussian: σ = (2r + 1) / 6 with r about 0.3 of the object's size
    sigma = (2.0 * 0.3 * tf.sqrt(tf.maximum(h * w, 1e-6)) + 1.0) / 6.0
    yy = tf.range(g)[:, None, None]
    xx = tf.range(g)[None, :, None]
    gauss = tf.exp(-((yy - iy) ** 2 + (xx - ix) ** 2) / (2.0 * sigma ** 2))  # (g, g, k)
    onehot = tf.one_hot(tf.cast(labels, tf.int32) - 1, num_classes)  # (k, C)
    # (g, g, C); the maximum with 0 keeps an image without objects at 0, not -inf
    heat = tf.maximum(tf.reduce_max(gauss[..., None] * onehot, axis=2), 0.0)
    heat = tf.reshape(heat, [grid, grid, num_classes])
    idx = tf.cast(tf.stack([iy, ix], axis=1), tf.int32)
    reg = tf.stack([h, w, cy - iy, cx - ix, tf.ones_like(h)], axis=1)  # (k, 5)
    dense = tf.tensor_scatter_nd_update(tf.zeros([grid, grid, 5]), idx, reg)
    return tf.concat([heat, dense], axis=-1)


def flip_left_right(image: Any, boxes: Any) -> tuple[Any, Any]:
    """Mirror an image and its normalised ``[ymin, xmin, ymax, xmax]`` boxes."""
    import tensorflow as tf

    flipped = tf.stack([boxes[:, 0], 1.0 - boxes[:, 3], boxes[:, 2], 1.0 - boxes[:, 1]], 1)
    return tf.image.flip_left_right(image), flipped


def decode_map(raw: Any, num_classes: int, max_detections: int) -> dict[str, Any]:
    """TensorFlow ops: the raw ``(n, g, g, C + 4)`` map -> the Object Detection outputs."""
    import tensorflow as tf

    raw = tf.convert_to_tensor(raw, tf.float32)
    g = tf.shape(raw)[1]
    gf = tf.cast(g, tf.float32)
    heat = tf.sigmoid(raw[..., :num_classes])
    peaks = tf.cast(tf.equal(heat, tf.nn.max_pool2d(heat, 3, 1, "SAME")), tf.float32) * heat
    flat = tf.reshape(peaks, [tf.shape(raw)[0], -1])
    k = tf.minimum(max_detections, tf.shape(flat)[1])
    scores, index = tf.math.top_k(flat, k=k)
    cls = index % num_classes
    cell = index // num_classes
    iy, ix = cell // g, cell % g
    regs = tf.gather(tf.reshape(raw[..., num_classes:], [tf.shape(raw)[0], -1, 4]), cell,
                     batch_dims=1)
    size = tf.nn.relu(regs[..., 0:2])
    offset = tf.sigmoid(regs[..., 2:4])
    cy = (tf.cast(iy, tf.float32) + offset[..., 0]) / gf
    cx = (tf.cast(ix, tf.float32) + offset[..., 1]) / gf
    hh, hw = size[..., 0] / gf / 2.0, size[..., 1] / gf / 2.0
    boxes = tf.clip_by_value(tf.stack([cy - hh, cx - hw, cy + hh, cx + hw], axis=-1), 0.0, 1.0)
    return {"detection_boxes": boxes,
            "detection_classes": tf.cast(cls + 1, tf.float32),
            "detection_scores": scores,
            "num_detections": tf.cast(tf.reduce_sum(tf.cast(scores > 0, tf.int32), -1),
                                      tf.float32)}


def detection_classes() -> dict[str, type]:
    """The registered ``CenterNetLoss`` and ``DetectionOutputs`` classes (made on first use)."""
    if _CLASSES:
        return _CLASSES
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="mlp")
    class CenterNetLoss(keras.losses.Loss):
        """Penalty-reduced focal loss on the heat map + L1 on offsets and sizes."""

        def __init__(self, num_classes: int, size_weight: float = 0.1,
                     name: str = "centernet_loss", **kwargs: Any) -> None:
            super().__init__(name=name, **kwargs)
            self.num_classes = int(num_classes)
            self.size_weight = float(size_weight)

        def call(self, y_true: Any, y_pred: Any) -> Any:
            c = self.num_classes
            y_true = tf.cast(y_true, tf.float32)
            y_pred = tf.cast(y_pred, tf.float32)
            heat, logits = y_true[..., :c], y_pred[..., :c]
            mask = y_true[..., c + 4:c + 5]
            n = tf.maximum(tf.reduce_sum(mask), 1.0)
            p = tf.clip_by_value(tf.sigmoid(logits), 1e-4, 1.0 - 1e-4)
            pos = tf.cast(heat >= 1.0 - 1e-4, tf.float32)
            focal = (pos * tf.math.log(p) * (1.0 - p) ** 2
                     + (1.0 - pos) * tf.math.log(1.0 - p) * p ** 2 * (1.0 - heat) ** 4)
            focal = -tf.reduce_sum(focal) / n
            size = tf.reduce_sum(tf.abs(y_pred[..., c:c + 2] - y_true[..., c:c + 2]) * mask)
            offset = tf.reduce_sum(
                tf.abs(tf.sigmoid(y_pred[..., c + 2:c + 4]) - y_true[..., c + 2:c + 4]) * mask)
            return focal + (self.size_weight * size + offset) / n

        def get_config(self) -> dict[str, Any]:
            return {"num_classes": self.num_classes, "size_weight": self.size_weight,
                    "name": self.name}

    @keras.saving.register_keras_serializable(package="mlp")
    class DetectionOutputs(keras.layers.Layer):
        """The raw map -> ``detection_boxes/classes/scores``, ``num_detections``."""

        def __init__(self, num_classes: int, max_detections: int = 20, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.num_classes = int(num_classes)
            self.max_detections = int(max_detections)

        def call(self, raw: Any) -> dict[str, Any]:
            return decode_map(raw, self.num_classes, self.max_detections)

        def compute_output_spec(self, raw: Any) -> dict[str, Any]:
            n, k = raw.shape[0], self.max_detections
            return {"detection_boxes": keras.KerasTensor((n, k, 4), dtype="float32"),
                    "detection_classes": keras.KerasTensor((n, k), dtype="float32"),
                    "detection_scores": keras.KerasTensor((n, k), dtype="float32"),
                    "num_detections": keras.KerasTensor((n,), dtype="float32")}

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "num_classes": self.num_classes,
                    "max_detections": self.max_detections}

    _CLASSES.update(CenterNetLoss=CenterNetLoss, DetectionOutputs=DetectionOutputs)
    return _CLASSES


@dataclass(frozen=True)
class DetectorInput:
    """The detector's input geometry and its served front end (``ModelSpec.serving_input``).

    The served model takes an encoded image (JPEG or PNG, base64 in a request), decodes
    and resizes it as training did, and answers the Object Detection API's outputs.

    Attributes:
        size: Side of the square the image is resized to (any aspect ratio is stretched,
            the Object Detection API's ``fixed_shape_resizer``; boxes are normalised, so
            they stretch with it).
        stride: Pixels per cell of the output map.
        num_classes: Number of classes when the use case fixes them; None (default): the
            run's classes (read from the data by preprocessing).
        max_detections: Detections answered per image (by score).
        input_name: Name of the served input.

    """

    size: int
    stride: int
    num_classes: int | None = None
    max_detections: int = 20
    input_name: str = "image"

    @property
    def grid(self) -> int:
        """Cells per side of the output map."""
        return self.size // self.stride

    def build(self) -> tuple[Any, Any]:
        """(string input, decoded and resized pixels (size, size, 3) float32 0-255)."""
        from tasks.features.images import image_input

        return image_input(self.size, self.input_name)

    def outputs(self, raw: Any, class_names: list[str]) -> dict[str, Any]:
        """The Object Detection API's outputs of the raw map (``class_names``: the run's)."""
        return detection_classes()["DetectionOutputs"](
            len(class_names) or self.num_classes, self.max_detections, name="detections")(raw)

    def example(self) -> Any:
        """Two JPEGs as a client sends them (scikit-image's coffee and rocket photos)."""
        import io

        import numpy as np
        from PIL import Image
        from skimage import data

        out = []
        for img in (data.coffee(), data.rocket()):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=90)
            out.append(buf.getvalue())
        return np.array(out, dtype=object)
