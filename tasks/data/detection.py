"""Box-annotated images in the TensorFlow Object Detection API's ``tf.train.Example`` layout.

One record per image, with the keys the Object Detection API's dataset tools write
(``create_pascal_tf_record.py``, ``create_pet_tf_record.py``) and its decoder reads
(``TfExampleDecoder``):

==================================  ===========  =========================================
key                                 type         value
==================================  ===========  =========================================
``image/encoded``                   bytes        the encoded image file, unchanged
``image/format``                    bytes        ``jpeg`` or ``png``
``image/filename``                  bytes        file name in the source
``image/source_id``                 bytes        the image id (file name without suffix)
``image/key/sha256``                bytes        SHA-256 of the encoded image (hex)
``image/height``, ``image/width``   int64        pixels
``image/object/bbox/xmin`` ...      float list   one per object, normalised to [0, 1]
(``xmin``, ``ymin``, ``xmax``,
``ymax``)
``image/object/class/text``         bytes list   class name per object
``image/object/class/label``        int64 list   class id per object, 1-based (label map)
``image/object/difficult``          int64 list   Pascal VOC's ``difficult`` flag
``image/object/truncated``          int64 list   Pascal VOC's ``truncated`` flag
==================================  ===========  =========================================

:func:`encode` writes records (preprocessing), :func:`decode` reads one back in Python,
:func:`parse` is the TensorFlow-side reader (``tf.io.parse_single_example`` + image
decoding) the detection objective builds its ``tf.data`` pipelines on. Everything goes
through ``tf.train.Example``: there is no other codec.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ENCODING = "tf_object_detection"  # the feature-spec encoding of a detection feature
FORMATS = ("jpeg", "png")

ENCODED = "image/encoded"
FORMAT = "image/format"
FILENAME = "image/filename"
SOURCE_ID = "image/source_id"
SHA256 = "image/key/sha256"
HEIGHT = "image/height"
WIDTH = "image/width"
XMIN, YMIN = "image/object/bbox/xmin", "image/object/bbox/ymin"
XMAX, YMAX = "image/object/bbox/xmax", "image/object/bbox/ymax"
CLASS_TEXT = "image/object/class/text"
CLASS_LABEL = "image/object/class/label"
DIFFICULT = "image/object/difficult"
TRUNCATED = "image/object/truncated"


@dataclass(frozen=True)
class AnnotatedImage:
    """One image and its boxes, as the records hold them.

    Attributes:
        encoded: The image file's bytes (JPEG or PNG), never re-encoded.
        format: ``jpeg`` or ``png``.
        filename: File name in the source.
        source_id: Image id (the file name without its suffix).
        height: Image height in pixels.
        width: Image width in pixels.
        boxes: ``(k, 4)`` float32 ``[xmin, ymin, xmax, ymax]`` normalised to [0, 1].
        labels: ``k`` class ids, 1-based (the Object Detection API's label-map ids).
        texts: ``k`` class names.
        difficult: ``k`` VOC ``difficult`` flags (0/1).
        truncated: ``k`` VOC ``truncated`` flags (0/1).

    """

    encoded: bytes
    format: str
    filename: str
    source_id: str
    height: int
    width: int
    boxes: np.ndarray = field(compare=False)  # compared by tests with numpy
    labels: tuple[int, ...]
    texts: tuple[str, ...]
    difficult: tuple[int, ...] = ()
    truncated: tuple[int, ...] = ()
    sha256: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        object.__setattr__(self, "boxes", boxes)
        k = len(boxes)
        if len(self.labels) != k or len(self.texts) != k:
            raise ValueError(f"{self.filename}: {k} boxes, {len(self.labels)} labels, "
                             f"{len(self.texts)} class names")
        for name in ("difficult", "truncated"):
            if not getattr(self, name):
                object.__setattr__(self, name, (0,) * k)
            elif len(getattr(self, name)) != k:
                raise ValueError(f"{self.filename}: {name} has {len(getattr(self, name))} "
                                 f"flags for {k} boxes")
        if self.format not in FORMATS:
            raise ValueError(f"{self.filename}: image format {self.format!r} is not one of "
                             f"{FORMATS}")
        if not self.sha256:
            object.__setattr__(self, "sha256", hashlib.sha256(self.encoded).hexdigest())


def to_example(img: AnnotatedImage) -> Any:
    """The ``tf.train.Example`` of one annotated image."""
    from tensorflow.core.example import example_pb2

    ex = example_pb2.Example()
    f = ex.features.feature
    for key, value in ((ENCODED, img.encoded), (FORMAT, img.format.encode()),
                       (FILENAME, img.filename.encode()), (SOURCE_ID, img.source_id.encode()),
                       (SHA256, img.sha256.encode())):
        f[key].bytes_list.value.append(value)
    f[HEIGHT].int64_list.value.append(int(img.height))
    f[WIDTH].int64_list.value.append(int(img.width))
    for i, key in enumerate((XMIN, YMIN, XMAX, YMAX)):
        f[key].float_list.value.extend(img.boxes[:, i].tolist())
    f[CLASS_TEXT].bytes_list.value.extend(t.encode() for t in img.texts)
    f[CLASS_LABEL].int64_list.value.extend(int(v) for v in img.labels)
    f[DIFFICULT].int64_list.value.extend(int(v) for v in img.difficult)
    f[TRUNCATED].int64_list.value.extend(int(v) for v in img.truncated)
    return ex


def encode(images: Iterable[AnnotatedImage]) -> list[bytes]:
    """Serialised records, deterministic bytes (the feature map is sorted)."""
    return [to_example(img).SerializeToString(deterministic=True) for img in images]


def decode(record: bytes) -> AnnotatedImage:
    """One serialised record back as an :class:`AnnotatedImage`.

    Raises:
        ValueError: Not an Object Detection record (names the missing key).

    """
    from tensorflow.core.example import example_pb2

    ex = example_pb2.Example.FromString(record)
    f = ex.features.feature

    def one(key: str, kind: str) -> Any:
        if key not in f:
            raise ValueError(f"record has no {key!r}: not an Object Detection API example")
        return getattr(f[key], kind).value

    boxes = np.stack([np.asarray(one(k, "float_list"), np.float32)
                      for k in (XMIN, YMIN, XMAX, YMAX)], axis=1)
    return AnnotatedImage(
        encoded=one(ENCODED, "bytes_list")[0], format=one(FORMAT, "bytes_list")[0].decode(),
        filename=one(FILENAME, "bytes_list")[0].decode(),
        source_id=one(SOURCE_ID, "bytes_list")[0].decode(),
        height=int(one(HEIGHT, "int64_list")[0]), width=int(one(WIDTH, "int64_list")[0]),
        boxes=boxes, labels=tuple(int(v) for v in one(CLASS_LABEL, "int64_list")),
        texts=tuple(v.decode() for v in one(CLASS_TEXT, "bytes_list")),
        difficult=tuple(int(v) for v in f[DIFFICULT].int64_list.value),
        truncated=tuple(int(v) for v in f[TRUNCATED].int64_list.value),
        sha256=f[SHA256].bytes_list.value[0].decode() if SHA256 in f else "",
    )


def feature_spec(class_names: Sequence[str]) -> dict[str, Any]:
    """The feature-spec entry (``feature_spec.json``) of a detection feature."""
    return {"dtype": "string", "shape": [], "encoding": ENCODING,
            "class_names": list(class_names),
            "keys": [ENCODED, FORMAT, FILENAME, SOURCE_ID, SHA256, HEIGHT, WIDTH, XMIN, YMIN,
                     XMAX, YMAX, CLASS_TEXT, CLASS_LABEL, DIFFICULT, TRUNCATED]}


def parse(record: Any) -> dict[str, Any]:
    """TensorFlow ops: one serialised record -> image and boxes (for ``tf.data``).

    Returns:
        ``{"image": (h, w, 3) uint8, "boxes": (k, 4) float32 [ymin, xmin, ymax, xmax]``
        (the order TensorFlow's image ops and the Object Detection API's outputs use),
        ``"labels": (k,) int64`` (1-based), ``"difficult": (k,) int64, "source_id"}``.

    """
    import tensorflow as tf

    desc = {ENCODED: tf.io.FixedLenFeature([], tf.string),
            SOURCE_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
            CLASS_LABEL: tf.io.VarLenFeature(tf.int64),
            DIFFICULT: tf.io.VarLenFeature(tf.int64),
            **{k: tf.io.VarLenFeature(tf.float32) for k in (XMIN, YMIN, XMAX, YMAX)}}
    ex = tf.io.parse_single_example(record, desc)
    image = tf.io.decode_image(ex[ENCODED], channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    boxes = tf.stack([tf.sparse.to_dense(ex[k]) for k in (YMIN, XMIN, YMAX, XMAX)], axis=1)
    labels = tf.sparse.to_dense(ex[CLASS_LABEL])
    difficult = tf.sparse.to_dense(ex[DIFFICULT])
    difficult = tf.cond(tf.size(difficult) == tf.size(labels), lambda: difficult,
                        lambda: tf.zeros_like(labels))
    return {"image": image, "boxes": boxes, "labels": labels, "difficult": difficult,
            "source_id": ex[SOURCE_ID]}
