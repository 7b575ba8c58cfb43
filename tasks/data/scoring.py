"""Batch-scoring input: a use case's raw format without the label, checked like training data.

:func:`scoring_input` turns the user's file or folder into a :class:`ScoringInput` for
the use case's source kind (one adapter per source class, chosen by
``functools.singledispatch``):

- tabular (CSV or Parquet): one file or every ``*.csv``/``*.parquet`` of a folder, read by
  the use case's own :class:`~tasks.data.sources.TabularSource` (the same per-row checks:
  bad rows are quarantined with file, line, field and reason); the label column may be
  missing; row key ``file`` + ``line``;
- IDX images (MNIST's format): an images file, or every ``*idx3*`` file of a folder, with
  its ``*labels-idx1*`` twin when present; row key ``file`` + ``row`` (record index);
- media folders (photos, WAV clips): files of the decoder's suffixes in a folder (or in
  label sub-folders, whose names become the label), each checked and decoded by the use
  case's decoder (a photo without a face, a truncated WAV: quarantined with the reason);
  row key ``file``;
- any other source: the training layout itself (label required), every partition.

Batches are dicts of numpy columns with ``_file`` and ``_line``/``_row`` (the row key),
``_bad`` (quarantine records) and, for media, ``_path`` (the file, for models that take
the raw bytes). A file-level problem raises :class:`~tasks.data.sources.SourceError`
naming the file, in seconds, before anything is scored.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.idx import IdxFormatError, read_idx, read_idx_header
from tasks.data.media import MANIFEST_KEY, MediaError, MediaFolderSource
from tasks.data.sources import IdxImageSource, SourceError, TabularSource

_MEDIA_PART = 256  # files per media partition (one unit of parallel work)


class ScoringInput:
    """Files to score, their structural check, and column batches with row keys.

    Attributes:
        kind: ``tabular``, ``idx``, ``media`` or ``source``.
        key_columns: The row key columns of the output (``_file`` + ``_line`` ...).
        label: The label column when the input holds it (kept and scored against).
        parts: Units of work (a file, a group of media files), in order.

    """

    kind: str = ""
    key_columns: tuple[str, ...] = ("_file",)
    label: str | None = None

    @property
    def parts(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def files(self) -> list[str]:
        """Every input file (for checksums, landing and messages)."""
        raise NotImplementedError

    def check(self) -> dict[str, Any]:
        """Structural checks (headers, dimensions); raise naming the file. Returns facts."""
        raise NotImplementedError

    def read_batches(self, part: int, batch_size: int) -> Iterator[dict[str, Any]]:
        """Column batches of one part with row keys and quarantine records."""
        raise NotImplementedError


def _listed(location: str, suffixes: tuple[str, ...], what: str) -> list[Path]:
    path = Path(location)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SourceError(f"{path}: no such file or folder to score")
    found = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(
        suffixes))
    if not found:
        raise SourceError(f"{path}: no {what} files ({'/'.join(suffixes)}) to score")
    return found


# --------------------------------------------------------------------------- tabular
@dataclass(frozen=True)
class TabularScoring(ScoringInput):
    """CSV/Parquet files read by the use case's own source (its columns, minus the label)."""

    source: TabularSource
    label_column: str | None
    paths: tuple[str, ...]
    kind: str = "tabular"
    key_columns: tuple[str, ...] = ("_file", "_line")

    @property
    def parts(self) -> tuple[str, ...]:
        return self.paths

    @property
    def label(self) -> str | None:  # type: ignore[override]
        return self.label_column if self._with_label() else None

    def files(self) -> list[str]:
        return list(self.paths)

    def _view(self, path: str) -> TabularSource:
        fmt = "parquet" if path.lower().endswith(".parquet") else "csv"
        cols = tuple(c for c in self.source.columns
                     if c.name != self.label_column or self._has_label(path))
        return replace(self.source, columns=cols, layout={"file": Path(path).name},
                       format=fmt)

    def _has_label(self, path: str) -> bool:
        if self.label_column is None:
            return False
        fmt = "parquet" if path.lower().endswith(".parquet") else "csv"
        return self.label_column in replace(self.source, format=fmt).header(path)

    def _with_label(self) -> bool:
        return bool(self.paths) and all(self._has_label(p) for p in self.paths)

    def check(self) -> dict[str, Any]:
        facts = {}
        for path in self.paths:
            view = self._view(path)
            facts[Path(path).name] = view.validate({"file": path})["file"]
        if self.label_column and not self._with_label() and any(
                self._has_label(p) for p in self.paths):
            facts["label"] = (f"{self.label_column} is in some files only: not scored "
                              "against")
        return facts

    def read_batches(self, part: int, batch_size: int) -> Iterator[dict[str, Any]]:
        path = self.paths[part]
        view = self._view(path)
        if not self._with_label() and self.label_column in {c.name for c in view.columns}:
            view = replace(view, columns=tuple(c for c in view.columns
                                               if c.name != self.label_column))
        for batch in view.read_batches({"file": path}, "file", batch_size):
            n = len(batch["row"])
            yield {**batch, "_file": np.full(n, path, dtype=object),
                   "_line": np.asarray(batch["row"], np.int64) + 2}


# --------------------------------------------------------------------------- IDX
@dataclass(frozen=True)
class IdxScoring(ScoringInput):
    """MNIST-format image files (labels optional), read whole and cut into batches."""

    source: IdxImageSource
    pairs: tuple[tuple[str, str | None], ...]
    kind: str = "idx"
    key_columns: tuple[str, ...] = ("_file", "_row")

    @property
    def parts(self) -> tuple[tuple[str, str | None], ...]:
        return self.pairs

    @property
    def label(self) -> str | None:  # type: ignore[override]
        return "label" if self.pairs and all(lab for _, lab in self.pairs) else None

    def files(self) -> list[str]:
        return [p for pair in self.pairs for p in pair if p]

    def check(self) -> dict[str, Any]:
        facts = {}
        for images, labels in self.pairs:
            dtype, dims = read_idx_header(images, ndim=3)
            if dtype != np.uint8 or tuple(dims[1:]) != tuple(self.source.image_shape):
                raise IdxFormatError(images, f"expected uint8 images of "
                                             f"{list(self.source.image_shape)}, got {dtype} "
                                             f"with dims {list(dims)}")
            if labels:
                ldtype, ldims = read_idx_header(labels, ndim=1)
                if ldims[0] != dims[0]:
                    raise SourceError(f"{labels}: label count {ldims[0]} does not match "
                                      f"image count {dims[0]} of {images}")
            facts[Path(images).name] = {"rows": int(dims[0]),
                                        "labels": Path(labels).name if labels else None}
        return facts

    def read_batches(self, part: int, batch_size: int) -> Iterator[dict[str, Any]]:
        images_file, labels_file = self.pairs[part]
        images = read_idx(images_file, ndim=3)
        labels = read_idx(labels_file, ndim=1).astype(np.int64) if labels_file else None
        k = self.source.num_classes
        for start in range(0, len(images), batch_size):
            stop = min(start + batch_size, len(images))
            rows = np.arange(start, stop, dtype=np.int64)
            keep = np.ones(stop - start, bool)
            bad: list[dict[str, Any]] = []
            batch: dict[str, Any] = {}
            if labels is not None:
                lab = labels[start:stop]
                keep = (lab >= 0) & (lab < k)
                bad = [{"file": labels_file, "row": int(rows[i]), "field": "label",
                        "value": int(lab[i]), "reason": f"label outside [0, {k})"}
                       for i in np.flatnonzero(~keep)]
                batch["label"] = lab[keep]
            n = int(keep.sum())
            yield {**batch, "image": images[start:stop][keep], "row": rows[keep], "_bad": bad,
                   "_file": np.full(n, images_file, dtype=object), "_row": rows[keep]}


# --------------------------------------------------------------------------- media
@dataclass(frozen=True)
class MediaScoring(ScoringInput):
    """Media files checked and decoded by the use case's decoder, in groups."""

    source: MediaFolderSource
    entries: tuple[tuple[str, int | None], ...]  # (path, label index or None)
    kind: str = "media"
    key_columns: tuple[str, ...] = ("_file",)

    @property
    def parts(self) -> tuple[int, ...]:
        return tuple(range(0, len(self.entries), _MEDIA_PART))

    @property
    def label(self) -> str | None:  # type: ignore[override]
        return "label" if self.entries and all(
            lab is not None for _, lab in self.entries) else None

    def files(self) -> list[str]:
        return [p for p, _ in self.entries]

    def check(self) -> dict[str, Any]:
        return {"files": len(self.entries),
                "bytes": sum(Path(p).stat().st_size for p, _ in self.entries)}

    def read_batches(self, part: int, batch_size: int) -> Iterator[dict[str, Any]]:
        start = self.parts[part]
        chunk = self.entries[start:start + _MEDIA_PART]
        decoder = self.source.decoder
        kept: list[tuple[int, str, int | None, Any]] = []
        bad: list[dict[str, Any]] = []
        for i, (path, lab) in enumerate(chunk):
            try:
                kept.append((start + i, path, lab, decoder.decode(path)))
            except MediaError as exc:
                bad.append({"file": path, "row": start + i, "field": "file",
                            "value": Path(path).name, "reason": str(exc)})
        if not kept:
            yield {"row": np.empty(0, np.int64), "_bad": bad, "_file": np.empty(0, object),
                   "_path": np.empty(0, object)}
            return
        for b in range(0, len(kept), batch_size):
            group = kept[b:b + batch_size]
            cols = decoder.columns([item for *_, item in group])
            out = {**cols, "row": np.asarray([r for r, *_ in group], np.int64),
                   "_file": np.asarray([p for _, p, *_ in group], object),
                   "_path": np.asarray([p for _, p, *_ in group], object),
                   "_bad": bad if b == 0 else []}
            if self.label:
                out["label"] = np.asarray([lab for _, _, lab, _ in group], np.int64)
            yield out


# --------------------------------------------------------------------------- others
@dataclass(frozen=True)
class SourceScoring(ScoringInput):
    """Any other source, in its training layout (every partition; label required)."""

    source: Any
    location_files: Mapping[str, str]
    kind: str = "source"
    key_columns: tuple[str, ...] = ("_file", "_row")

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(sorted(self.source.partitions()))

    @property
    def label(self) -> str | None:  # type: ignore[override]
        return "label" if "label" in self.source.schema() else None

    def files(self) -> list[str]:
        return [p for k, p in self.location_files.items() if k != MANIFEST_KEY]

    def check(self) -> dict[str, Any]:
        return self.source.validate(self.location_files)

    def read_batches(self, part: int, batch_size: int) -> Iterator[dict[str, Any]]:
        name = self.parts[part]
        fields = self.source.partitions()[name]
        first = self.location_files.get(next(iter(fields.values())), name)
        for batch in self.source.read_batches(self.location_files, name, batch_size):
            n = len(batch["row"])
            files = batch.get("file")
            yield {**batch, "_file": np.asarray(files, object) if files is not None
                   and len(files) == n else np.full(n, first, dtype=object),
                   "_row": np.asarray(batch["row"], np.int64)}


# --------------------------------------------------------------------------- dispatch
@functools.singledispatch
def scoring_input(source: Any, location: str, label: str | None = None) -> ScoringInput:
    """The scoring input of ``location`` for a use case's source (see the module docstring).

    Raises:
        SourceError: The location is missing, holds no file of the right kind, or a file
            is malformed (named in the message).

    """
    scoring = SourceScoring(source, source.files(location))
    scoring.check()
    return scoring


@scoring_input.register
def _(source: TabularSource, location: str, label: str | None = None) -> ScoringInput:
    paths = _listed(location, (".csv", ".parquet"), "CSV or Parquet")
    scoring = TabularScoring(source, label, tuple(str(p) for p in paths))
    scoring.check()
    return scoring


@scoring_input.register
def _(source: IdxImageSource, location: str, label: str | None = None) -> ScoringInput:
    path = Path(location)
    images = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if "idx3" in p.name) if path.is_dir() else []
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder to score")
    if not images:
        raise SourceError(f"{path}: no IDX image files (*-images-idx3-ubyte[.gz]) to score")
    pairs = []
    for img in images:
        twin = img.with_name(img.name.replace("images-idx3", "labels-idx1"))
        pairs.append((str(img), str(twin) if twin != img and twin.is_file() else None))
    scoring = IdxScoring(source, tuple(pairs))
    scoring.check()
    return scoring


@scoring_input.register
def _(source: MediaFolderSource, location: str, label: str | None = None) -> ScoringInput:
    path = Path(location)
    suffixes = source.decoder.suffixes
    if path.is_dir() and any((path / c).is_dir() for c in source.classes):
        index = {c: i for i, c in enumerate(source.classes)}
        entries = [(str(p), index[c]) for c in source.classes if (path / c).is_dir()
                   for p in sorted((path / c).iterdir())
                   if p.is_file() and p.name.lower().endswith(suffixes)]
        if not entries:
            raise SourceError(f"{path}: no {'/'.join(suffixes)} files in its label folders")
    else:
        entries = [(str(p), None) for p in _listed(location, suffixes, "media")]
    scoring = MediaScoring(source, tuple(entries))
    scoring.check()
    return scoring


# --------------------------------------------------------------------------- landing
@dataclass(frozen=True)
class LandingView:
    """Scoring input as a ``DataSource`` for the ingest step (``mlp ingest --for scoring``).

    ``files`` lists the input's files under snapshot keys (the file name; media in label
    folders keep ``<label>/<name>``), and ``validate`` runs the scoring input's checks on
    the copies, so what is landed is exactly what was checked.
    """

    source: Any
    label: str | None = None

    def files(self, location: str) -> dict[str, str]:
        """Snapshot key -> the user's file."""
        si = scoring_input(self.source, location, self.label)
        return {self._key(si, p): p for p in si.files()}

    @staticmethod
    def _key(si: ScoringInput, path: str) -> str:
        if isinstance(si, MediaScoring) and si.label:
            return f"{Path(path).parent.name}/{Path(path).name}"
        if isinstance(si, SourceScoring):
            return next(k for k, v in si.location_files.items() if v == path)
        return Path(path).name

    def validate(self, files: Mapping[str, str]) -> dict[str, Any]:
        """The scoring checks on the landed copies (their folder)."""
        key, path = next(iter(files.items()))
        root = Path(path)
        for _ in Path(key).parts:
            root = root.parent
        return scoring_input(self.source, str(root), self.label).check()
