"""Raw data sources a use case can declare.

A source resolves its raw files, validates them (structural errors fail the file with a
message naming it), reads them as column batches for Beam, and reports per-row problems
that preprocessing quarantines instead of dropping silently.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.io.idx import IdxFormatError, read_idx


class SourceError(ValueError):
    """Raw input is unusable; the message names the file and the field."""


@dataclass(frozen=True)
class IdxImageSource:
    """MNIST-format images and labels (IDX, raw or gzip), one pair per partition.

    Attributes:
        default_location: Directory searched when a run names no source.
        image_shape: Expected (rows, cols) of every image.
        num_classes: Labels must lie in ``[0, num_classes)``.
        layout: partition -> {field: file stem}; ``.gz`` is tried after the raw name.

    """

    default_location: str = "/usr/share/datasets/fashion-mnist"
    image_shape: tuple[int, int] = (28, 28)
    num_classes: int = 10
    layout: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: {
            "train": {"image": "train-images-idx3-ubyte", "label": "train-labels-idx1-ubyte"},
            "test": {"image": "t10k-images-idx3-ubyte", "label": "t10k-labels-idx1-ubyte"},
        }
    )

    def files(self, location: str) -> dict[str, str]:
        """Map ``<partition>.<field>`` to the file found under ``location``."""
        base = Path(location)
        if not base.is_dir():
            raise SourceError(f"{base}: source directory does not exist")
        found: dict[str, str] = {}
        for part, fields in self.layout.items():
            for name, stem in fields.items():
                candidates = [base / stem, base / f"{stem}.gz"]
                hit = next((c for c in candidates if c.is_file()), None)
                if hit is None:
                    raise SourceError(
                        f"{base}: missing {part} {name} file {stem} (or {stem}.gz)"
                    )
                found[f"{part}.{name}"] = str(hit)
        return found

    def validate(self, files: Mapping[str, str]) -> dict[str, Any]:
        """Check magic numbers, dimensions and image/label counts of every partition."""
        facts: dict[str, Any] = {}
        for part in self.layout:
            images = self._images(files[f"{part}.image"])
            labels = self._labels(files[f"{part}.label"])
            if len(images) != len(labels):
                raise SourceError(
                    f"{files[f'{part}.label']}: label count {len(labels)} does not match "
                    f"image count {len(images)} of {files[f'{part}.image']}"
                )
            facts[part] = {"rows": len(images)}
        return facts

    def partitions(self) -> dict[str, dict[str, str]]:
        """Partition -> {field: file key} (file keys index :meth:`files`)."""
        return {part: {f: f"{part}.{f}" for f in fields} for part, fields in self.layout.items()}

    def read_batches(
        self, files: Mapping[str, str], partition: str, batch_size: int
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield ``{"row", "image", "label"}`` batches of one partition in file order."""
        images = self._images(files[f"{partition}.image"])
        labels = self._labels(files[f"{partition}.label"]).astype(np.int64)
        for start in range(0, len(images), batch_size):
            stop = min(start + batch_size, len(images))
            yield {
                "row": np.arange(start, stop, dtype=np.int64),
                "image": images[start:stop],
                "label": labels[start:stop],
            }

    def row_errors(self, batch: Mapping[str, np.ndarray]) -> list[tuple[int, str, Any, str]]:
        """Per-row problems as (index in batch, field, value, reason)."""
        labels = batch["label"]
        bad = np.flatnonzero((labels < 0) | (labels >= self.num_classes))
        return [
            (int(i), "label", int(labels[i]), f"label outside [0, {self.num_classes})")
            for i in bad
        ]

    def feature_spec(self) -> dict[str, dict[str, Any]]:
        """Images as raw uint8 bytes (17x faster to write than float lists), int64 labels."""
        return {
            "image": {"dtype": "uint8", "shape": list(self.image_shape), "encoding": "raw"},
            "label": {"dtype": "int64", "shape": [], "encoding": "int64",
                      "num_classes": self.num_classes},
        }

    def _images(self, path: str) -> np.ndarray:
        arr = read_idx(path)
        if arr.dtype != np.uint8 or arr.ndim != 3:
            raise IdxFormatError(path, f"expected uint8 images (n, rows, cols), got {arr.dtype} "
                                       f"with dims {list(arr.shape)}")
        if tuple(arr.shape[1:]) != tuple(self.image_shape):
            raise IdxFormatError(path, f"image dims {list(arr.shape[1:])} differ from "
                                       f"expected {list(self.image_shape)}")
        return arr

    def _labels(self, path: str) -> np.ndarray:
        arr = read_idx(path)
        if arr.dtype != np.uint8 or arr.ndim != 1:
            raise IdxFormatError(path, f"expected uint8 labels (n,), got {arr.dtype} "
                                       f"with dims {list(arr.shape)}")
        return arr
