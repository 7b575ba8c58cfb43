"""CIFAR-10 "python version" batches as a data source.

The format (https://www.cs.toronto.edu/~kriz/cifar.html): ``data_batch_1`` ..
``data_batch_5`` (training) and ``test_batch`` are pickled dicts with ``data``, an
N x 3072 uint8 array holding each image channel-planar (1024 red, 1024 green, 1024 blue
values, rows top to bottom), and ``labels``, N integers in ``[0, 10)``; ``batches.meta``
holds ``label_names``. The files come from Python 2, so keys are byte strings once read
with ``encoding="bytes"``; both byte and text keys are accepted here.

Checks: a file that is not a readable pickle, lacks ``data`` or ``labels``, holds data
that is not an N x 3072 uint8 array or a label list of another length fails the ingest
with a one-line message naming the file and the reason, and nothing lands (a batch file
is one unit: no row of it can be trusted). Rows whose label is not an integer in
``[0, num_classes)`` go to the quarantine file with file, row and reason. Pickles are read
with an unpickler that only builds numpy arrays and plain containers, so a crafted file
cannot run code.

Images leave the source as raw uint8 (32, 32, 3), height x width x channels, which is how
preprocessing writes them into the TFRecords and how the served model takes them.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.classes import ClassList
from tasks.data.sources import GENERATED, SourceError, _cached, generated_location

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META = "batches.meta"
SIDE, CHANNELS = 32, 3
ROW_BYTES = SIDE * SIDE * CHANNELS

# What a CIFAR pickle may reference: numpy's array reconstruction (numpy 1 and 2 module
# paths) and the codec Python 3 uses for bytes in protocol-2 pickles. Nothing else.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(
                f"refuses to load {module}.{name}: a CIFAR batch holds only numpy arrays, "
                "lists and strings")
        return super().find_class(module, name)


def load_pickle(path: str) -> Any:
    """Unpickle a CIFAR file safely (Python 2 byte strings kept as ``bytes``).

    Raises:
        SourceError: Not a pickle, truncated, or referencing anything but numpy arrays.

    """
    try:
        with open(path, "rb") as fh:
            return _ArrayUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError, MemoryError) as exc:
        raise SourceError(f"{path}: not a readable CIFAR pickle ({type(exc).__name__}: "
                          f"{exc})") from exc


def _field(d: Mapping[Any, Any], name: str, path: str) -> Any:
    for key in (name.encode(), name):
        if key in d:
            return d[key]
    raise SourceError(f"{path}: no {name!r} entry (keys: "
                      f"{sorted(k.decode() if isinstance(k, bytes) else str(k) for k in d)})")


def read_batch_file(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) uint8 and raw labels (N,) object array of one batch file.

    Raises:
        SourceError: The file is not a CIFAR batch (message names the file and why).

    """
    d = load_pickle(path)
    if not isinstance(d, dict):
        raise SourceError(f"{path}: expected a pickled dict, got {type(d).__name__}")
    data = _field(d, "data", path)
    labels = _field(d, "labels", path)
    if not isinstance(data, np.ndarray):
        raise SourceError(f"{path}: 'data' must be a numpy array, got {type(data).__name__}")
    if data.dtype != np.uint8:
        raise SourceError(f"{path}: 'data' must be uint8, got {data.dtype}")
    if data.ndim != 2 or data.shape[1] != ROW_BYTES:
        raise SourceError(f"{path}: 'data' must be N x {ROW_BYTES} (32x32x3 channel-planar), "
                          f"got shape {list(data.shape)}")
    if not isinstance(labels, list | tuple | np.ndarray):
        raise SourceError(f"{path}: 'labels' must be a list, got {type(labels).__name__}")
    if len(labels) != len(data):
        raise SourceError(f"{path}: {len(labels)} labels for {len(data)} images")
    images = data.reshape(-1, CHANNELS, SIDE, SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.asarray(list(labels), dtype=object)


def write_batch_file(path: Path, images: np.ndarray, labels: Any, batch_label: str,
                     filenames: list[str] | None = None) -> Path:
    """Write images (N, 32, 32, 3) uint8 and labels as a CIFAR-10 python batch file."""
    images = np.asarray(images, dtype=np.uint8)
    data = np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))
    names = filenames or [f"image_{i:05d}.png" for i in range(len(images))]
    obj = {b"batch_label": batch_label.encode(), b"labels": [int(v) for v in labels],
           b"data": data, b"filenames": [n.encode() for n in names]}
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)
    return Path(path)


def write_meta(path: Path, names: tuple[str, ...], per_batch: int) -> Path:
    """Write ``batches.meta`` (label names, cases per batch) in CIFAR's layout."""
    obj = {b"label_names": [n.encode() for n in names],
           b"num_cases_per_batch": int(per_batch), b"num_vis": ROW_BYTES}
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)
    return Path(path)


@dataclass(frozen=True)
class CifarSource:
    """CIFAR-10 python batches: ``train`` = data_batch_1..5, ``test`` = test_batch.

    Attributes:
        default_location: Directory with the batch files, or ``synthetic:<train rows>:<seed>``
            to have ``generator(dir, train_rows, seed)`` write files in the same format
            (snapshotted and checksummed like any raw data).
        num_classes: Labels must be integers in ``[0, num_classes)``.
        generator: Writes a synthetic data set in the CIFAR format.

    """

    default_location: str
    num_classes: int = 10
    generator: Callable[[Path, int, int], None] | None = None

    def files(self, location: str) -> dict[str, str]:
        """File key (the file name) -> path; ``batches.meta`` is optional."""
        if location.startswith(GENERATED):
            location = str(self._generate(location))
        base = Path(location)
        if not base.is_dir():
            raise SourceError(f"{base}: source directory does not exist")
        found: dict[str, str] = {}
        for name in (*TRAIN_FILES, *TEST_FILES):
            if not (base / name).is_file():
                raise SourceError(f"{base}: missing CIFAR batch file {name}")
            found[name] = str(base / name)
        if (base / META).is_file():
            found[META] = str(base / META)
        return found

    def _generate(self, location: str) -> Path:
        return generated_location(location, self.generator, "cifar", unit="training rows",
                                  minimum=len(TRAIN_FILES))

    def validate(self, files: Mapping[str, str]) -> dict[str, Any]:
        """Read every batch file (structure, shapes, label count) and the label names."""
        facts: dict[str, Any] = {}
        for part, names in self._layout().items():
            rows = 0
            for name in names:
                images, _ = self._read(files[name])
                rows += len(images)
            facts[part] = {"rows": rows}
        if META in files:
            facts["label_names"] = self._label_names(files[META])
        return facts

    def _label_names(self, path: str) -> list[str]:
        d = load_pickle(path)
        names = _field(d, "label_names", path) if isinstance(d, dict) else None
        if not isinstance(names, list) or len(names) != self.num_classes:
            raise SourceError(f"{path}: 'label_names' must list {self.num_classes} names")
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]

    def class_list(self, files: Mapping[str, str]) -> ClassList:
        """``batches.meta``'s ``label_names`` when the folder has one, else the label values."""
        if META in files:
            return ClassList(tuple(self._label_names(files[META])), META)
        return ClassList(tuple(str(i) for i in range(self.num_classes)), "label values")

    def partitions(self) -> dict[str, dict[str, str]]:
        """Partition -> {batch file: file key}."""
        return {part: {n: n for n in names} for part, names in self._layout().items()}

    def read_batches(self, files: Mapping[str, str], partition: str, batch_size: int
                     ) -> Iterator[dict[str, Any]]:
        """Yield ``{"row", "image", "label", "_bad"}`` batches, files in order.

        ``row`` numbers the partition's rows across its files; a quarantine record names
        the file and the row inside it.
        """
        offset = 0
        for name in self._layout()[partition]:
            path = files[name]
            images, raw = self._read(path)
            labels, bad = self._labels(raw)
            for start in range(0, len(images), batch_size):
                stop = min(start + batch_size, len(images))
                keep = ~bad[start:stop]
                yield {
                    "row": np.arange(offset + start, offset + stop, dtype=np.int64)[keep],
                    "image": images[start:stop][keep],
                    "label": labels[start:stop][keep],
                    "_bad": [
                        {"file": path, "partition": partition, "row": offset + start + int(i),
                         "file_row": start + int(i), "field": "label",
                         "value": _plain(raw[start + i]),
                         "reason": f"label is not an integer in [0, {self.num_classes})"}
                        for i in np.flatnonzero(~keep)
                    ],
                }
            offset += len(images)

    def schema(self) -> dict[str, dict[str, Any]]:
        """Raw uint8 images (32, 32, 3) and int64 labels."""
        return {
            "image": {"dtype": "uint8", "shape": [SIDE, SIDE, CHANNELS]},
            "label": {"dtype": "int64", "shape": [], "num_classes": self.num_classes},
        }

    @staticmethod
    def _layout() -> dict[str, tuple[str, ...]]:
        return {"train": TRAIN_FILES, "test": TEST_FILES}

    @staticmethod
    def _read(path: str) -> tuple[np.ndarray, np.ndarray]:
        return _cached(path, "cifar", (), lambda: read_batch_file(path))

    def _labels(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """int64 labels (0 where bad) and the mask of labels outside the classes."""
        ok = np.array([isinstance(v, int | np.integer) and not isinstance(v, bool)
                       and 0 <= int(v) < self.num_classes for v in raw], dtype=bool)
        labels = np.zeros(len(raw), dtype=np.int64)
        labels[ok] = [int(v) for v in raw[ok]]
        return labels, ~ok


def _plain(value: Any) -> Any:
    """A JSON-friendly rendering of a rejected label."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return repr(value)
