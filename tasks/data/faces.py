"""Face detection and cropping with OpenCV's Haar cascade, shipped inside the wheel.

The books keep only photos with exactly one face, crop the face's box and resize it to
96 x 96 (they ask Google's Vision API for the box). Here the box comes from OpenCV's
``haarcascade_frontalface_alt2.xml``, which the ``opencv-python-headless`` 4.x wheel
ships in ``cv2/data/`` (the 5.0 wheel no longer does; nothing is downloaded at run time).

The crop is resized by :func:`tasks.features.images.resize_crop`, a TensorFlow function
that the served model runs too (its ``DecodeImage`` layer): a crop a client sends is
resized exactly as the training crops were, so the two paths cannot drift apart.

Photos that cannot be used raise :class:`tasks.data.media.MediaError` with the reason that
goes to the quarantine file: ``not an image (...)``, ``no face``, ``<n> faces``.
:class:`FaceCropDecoder` plugs all this into the media-folder source
(:class:`tasks.data.media.MediaFolderSource`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.media import MediaError
from tasks.features.images import resize_crop

CASCADE = "haarcascade_frontalface_alt2.xml"
CROP_SIZE = 96


def cascade_file(name: str = CASCADE) -> Path:
    """Path of a Haar cascade shipped by the installed OpenCV wheel.

    Raises:
        RuntimeError: The wheel ships no such file (OpenCV 5 dropped them; pin 4.x).

    """
    import cv2

    path = Path(cv2.data.haarcascades) / name
    if not path.is_file():
        raise RuntimeError(f"OpenCV {cv2.__version__} ships no {name} (cv2/data/); install "
                           "opencv-python-headless 4.x, whose wheels include the cascades")
    return path


@functools.lru_cache(maxsize=4)
def _cascade(name: str) -> Any:
    import cv2

    clf = cv2.CascadeClassifier(str(cascade_file(name)))
    if clf.empty():
        raise RuntimeError(f"{cascade_file(name)}: OpenCV could not load the cascade")
    return clf


def decode_photo(data: bytes) -> np.ndarray:
    """Decode JPEG/PNG/BMP/... bytes to an RGB uint8 array (h, w, 3).

    Raises:
        MediaError: The bytes are not a decodable image.

    """
    import cv2

    arr = np.frombuffer(data, np.uint8)
    img = cv2.imdecode(arr, cv2.IMREAD_COLOR) if arr.size else None
    if img is None:
        head = data[:12]
        raise MediaError(f"not an image (cannot decode; starts with {head!r})")
    return np.ascontiguousarray(img[..., ::-1])


def detect_faces(rgb: np.ndarray, min_fraction: float = 0.12, scale_factor: float = 1.1,
                 min_neighbors: int = 5) -> np.ndarray:
    """Face boxes ``(x, y, w, h)`` in an RGB image, largest first.

    Args:
        rgb: Image (h, w, 3) uint8.
        min_fraction: Smallest face side, as a fraction of the image's shorter side
            (smaller detections are background texture, not the photo's subject).
        scale_factor: Cascade pyramid step.
        min_neighbors: Overlapping detections a face needs (higher: fewer false ones).

    """
    import cv2

    gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    side = max(24, int(min(gray.shape) * min_fraction))
    boxes = _cascade(CASCADE).detectMultiScale(gray, scaleFactor=scale_factor,
                                               minNeighbors=min_neighbors,
                                               minSize=(side, side))
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    return boxes[np.argsort(-boxes[:, 2] * boxes[:, 3], kind="stable")]


def crop_face(rgb: np.ndarray, box: Any, size: int = CROP_SIZE) -> np.ndarray:
    """Cut ``box`` (x, y, w, h) out of the image and resize it to ``size`` x ``size``."""
    x, y, w, h = (int(v) for v in box)
    crop = rgb[max(0, y):y + h, max(0, x):x + w]
    return np.asarray(resize_crop(crop[None], size))[0]


@dataclass(frozen=True)
class FaceCropper:
    """Photo file -> the 96 x 96 RGB crop of its single face (the books' ``crop_face``).

    A pluggable decoder for a media-folder source: it raises :class:`MediaError` with the
    quarantine reason for files that are not images and for photos with no face or with
    several faces.
    """

    size: int = CROP_SIZE
    min_fraction: float = 0.12

    def __call__(self, data: bytes) -> np.ndarray:
        """Decode, detect and crop; ``data`` is the file's bytes."""
        rgb = decode_photo(data)
        boxes = detect_faces(rgb, self.min_fraction)
        if len(boxes) == 0:
            raise MediaError("no face")
        if len(boxes) > 1:
            raise MediaError(f"{len(boxes)} faces")
        return crop_face(rgb, boxes[0], self.size)


@dataclass(frozen=True)
class FaceCropDecoder:
    """Media-folder decoder: photo file -> 96 x 96 RGB face crop (``image`` column, uint8).

    Implements :class:`tasks.data.media.MediaDecoder`; photos that are not images, or hold
    no face or several faces, raise :class:`MediaError` and are quarantined with the reason.
    """

    size: int = CROP_SIZE
    min_fraction: float = 0.12
    suffixes: tuple[str, ...] = (".jpg", ".jpeg", ".png")

    def decode(self, path: str) -> np.ndarray:
        """The face crop of one photo file."""
        return FaceCropper(self.size, self.min_fraction)(Path(path).read_bytes())

    def columns(self, items: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Stack a batch of crops into the ``image`` column."""
        return {"image": np.stack(items).astype(np.uint8)}

    def schema(self) -> dict[str, dict[str, Any]]:
        """``image``: (size, size, 3) uint8."""
        return {"image": {"dtype": "uint8", "shape": [self.size, self.size, 3]}}
