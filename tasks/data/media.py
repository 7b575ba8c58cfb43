"""Folders of media files (audio, images) as a platform data source.

Layouts (``MediaFolderSource``):

- **folders**: ``root/<label>/<file>`` (GTZAN's ``genres/<genre>/<genre>.000NN.wav``, a
  PubFig-style folder of photos per person). Only the declared ``classes`` are read;
  other folders are ignored and listed in the ingest facts (GTZAN has 10 genres, the
  book uses 4). Files whose name does not end in one of the decoder's ``suffixes`` are
  ignored too (and listed).
- **manifest**: ``root/<manifest>`` is a CSV with the header ``path,label`` (paths
  relative to the manifest's folder, or absolute). A row naming a missing file fails the
  run with the manifest line; a row with an unknown label is quarantined.

File keys are ``<label>/<file name>`` (manifest: ``<label>/<line>-<file name>``), so the
ingest snapshot keeps one folder per label and the label travels with the key, not the
original path. The snapshot is checksummed by ingest like every raw snapshot.

Validation is file by file, by a pluggable **decoder**, during preprocessing (inside
Beam, in batches): a file the decoder cannot decode or finds out of spec is left out and
described in the quarantine file with its path and the reason; the run fails past
``PreprocessSpec.max_bad_fraction``. Raw files are never modified.

Class balance and splits, declared in the spec:

- ``max_per_class``: keep at most this many *valid* files per class, the first ones in
  file-name order (files past the cap are not decoded and not counted as bad);
- ``split_counts``: per-class split counts, e.g. ``{"train": 70, "test": 30}`` (the
  book's 70/30 of 100 clips) or ``{"train": 40, "test": 10}`` (40 + 10 photos per
  person). The source then has one partition per split name, and each class's kept
  files are dealt to them by a seeded permutation; map the partitions to splits with
  ``SplitSpec(partition_to_split={"train": "train", "test": "test"})``. A class with
  fewer valid files than the counts' sum is dealt proportionally (largest remainder).
  Without ``split_counts`` there is one partition, ``all`` (use the ratio rule).

**The decoder protocol** (:class:`MediaDecoder`) — an image decoder plugs in like this::

    @dataclass(frozen=True)
    class ImageDecoder:
        suffixes: tuple[str, ...] = (".jpg", ".jpeg", ".png")

        def decode(self, path: str) -> np.ndarray:
            # read, check size/mode, detect + crop the face, resize to 96x96 ...
            raise MediaError("no face found")  # -> quarantined with this reason

        def columns(self, items: list[np.ndarray]) -> dict[str, np.ndarray]:
            return {"image": np.stack(items).astype(np.uint8)}  # (n, 96, 96) or (n, 96, 96, 3)

        def schema(self) -> dict[str, dict]:
            return {"image": {"dtype": "uint8", "shape": [96, 96]}}

    SOURCE = MediaFolderSource(decoder=ImageDecoder(), classes=("alice", "bob"),
                               default_location="synthetic:50:0", generator=generate,
                               split_counts={"train": 40, "test": 10})

``decode(path)`` returns anything (e.g. a variable-length waveform) or raises
:class:`MediaError` with a one-line reason; ``columns(items)`` turns a *batch* of decoded
items into fixed-shape numpy columns (feature extraction runs here, vectorised per batch:
the MFCC features of :mod:`tasks.features.audio`, image stacking); ``schema()`` describes
those columns. Batches also carry ``row`` (a file's index among the source's files),
``label`` (int64 index into ``classes``) and ``file`` (the file key, not written to the
TFRecords unless a feature names it).

Decoding and features are computed once per process and snapshot (keyed by every file's
path, size and mtime): the Beam graph's three branches re-read the snapshot, and decoding
audio is the expensive part. Only the small output columns are kept.
"""

from __future__ import annotations

import csv
import logging
import wave
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from tasks.data.classes import ClassList
from tasks.data.sources import GENERATED, SourceError, generated_location

log = logging.getLogger(__name__)

ALL = "all"
MANIFEST_KEY = "_manifest"


class MediaError(ValueError):
    """One media file is undecodable or out of spec; the message is the quarantine reason."""


class MediaDecoder(Protocol):
    """Decodes and checks one media file; turns a batch of decoded files into columns."""

    suffixes: tuple[str, ...]

    def decode(self, path: str) -> Any:
        """Decode and check one file; raise :class:`MediaError` (the reason) if it is bad."""
        ...

    def columns(self, items: list[Any]) -> dict[str, np.ndarray]:
        """Fixed-shape numpy columns (first axis = item) of a batch of decoded files."""
        ...

    def schema(self) -> dict[str, dict[str, Any]]:
        """Column name -> {dtype, shape} of what :meth:`columns` returns."""
        ...


# --------------------------------------------------------------------------- WAV
@dataclass(frozen=True)
class WavDecoder:
    """PCM WAV files checked against a sample rate, channel count and duration range.

    ``decode`` returns the waveform as float32 in [-1, 1) (integer PCM divided by
    2^(bits-1), as the book's ``/ 2.**15`` for 16-bit), one column per channel squeezed
    for mono. ``features`` turns a batch of waveforms into columns (e.g. the MFCC
    statistics of :func:`tasks.features.audio.clip_features`); without it the waveforms
    must all have the same length and are returned as an ``audio`` column.

    Attributes:
        sample_rate: Required sample rate in Hz.
        channels: Required channel count.
        min_seconds: Shortest accepted duration.
        max_seconds: Longest accepted duration.
        sample_bits: Accepted PCM sample sizes in bits.
        features: ``features(waves, sample_rate) -> {column: array}`` applied per batch.
        feature_schema: Schema of what ``features`` returns.
        suffixes: File name endings read (lower case).

    """

    sample_rate: int = 22_050
    channels: int = 1
    min_seconds: float = 0.0
    max_seconds: float = float("inf")
    sample_bits: tuple[int, ...] = (16,)
    features: Callable[[list[np.ndarray], int], dict[str, np.ndarray]] | None = None
    feature_schema: Mapping[str, Mapping[str, Any]] | None = None
    suffixes: tuple[str, ...] = (".wav",)

    def decode(self, path: str) -> np.ndarray:
        """Read and check one WAV file.

        Raises:
            MediaError: Not a readable PCM WAV, truncated, or sample rate, channel count,
                sample size or duration out of spec (the message says which and by how
                much).

        """
        try:
            with wave.open(path, "rb") as w:
                rate, chans, width, frames = (w.getframerate(), w.getnchannels(),
                                              w.getsampwidth(), w.getnframes())
                data = w.readframes(frames)
        except (wave.Error, EOFError) as exc:
            raise MediaError(f"not a readable PCM WAV file: {exc}") from exc
        if rate != self.sample_rate:
            raise MediaError(f"sample rate {rate} Hz, expected {self.sample_rate} Hz")
        if chans != self.channels:
            raise MediaError(f"{chans} channels, expected {self.channels}")
        if 8 * width not in self.sample_bits:
            raise MediaError(f"{8 * width}-bit samples, expected {list(self.sample_bits)} bits")
        got = len(data) // (width * chans)
        if got < frames:
            raise MediaError(f"truncated: the header declares {frames} frames "
                             f"({frames / rate:.2f} s), the file holds {got}")
        seconds = frames / rate
        if not self.min_seconds <= seconds <= self.max_seconds:
            raise MediaError(f"duration {seconds:.2f} s outside "
                             f"[{self.min_seconds}, {self.max_seconds}] s")
        if width == 1:  # 8-bit WAV is unsigned
            x = (np.frombuffer(data, np.uint8).astype(np.float32) - 128.0) / 128.0
        else:
            ints = {2: "<i2", 4: "<i4"}.get(width)
            if ints is None:
                raise MediaError(f"{8 * width}-bit PCM is not supported")
            x = np.frombuffer(data, ints).astype(np.float32) / float(2 ** (8 * width - 1))
        x = x[: frames * chans].reshape(frames, chans)
        return x[:, 0].copy() if chans == 1 else x

    def columns(self, items: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Feature columns of a batch of waveforms (or the waveforms themselves)."""
        if self.features is not None:
            return self.features(items, self.sample_rate)
        return {"audio": np.stack(items).astype(np.float32)}

    def schema(self) -> dict[str, dict[str, Any]]:
        """The column schema (``features``' or the raw ``audio`` column's)."""
        if self.feature_schema is not None:
            return {k: dict(v) for k, v in self.feature_schema.items()}
        return {"audio": {"dtype": "float32", "shape": [None]}}


# --------------------------------------------------------------------------- the source
_CACHE: dict[tuple[Any, ...], dict[str, Any]] = {}


def _safe_label(label: str) -> bool:
    return bool(label) and label not in (".", "..") and not any(c in label for c in "/\\\0")


def _apportion(total: int, counts: Mapping[str, int]) -> dict[str, int]:
    """Scale ``counts`` down to ``total`` items (largest remainder), keeping their order."""
    want = sum(counts.values())
    if total >= want:
        return dict(counts)
    exact = np.array([total * c / want for c in counts.values()])
    out = np.floor(exact).astype(np.int64)
    out[np.argsort(-(exact - out), kind="stable")[: total - int(out.sum())]] += 1
    return dict(zip(counts, out.tolist(), strict=True))


@dataclass(frozen=True)
class MediaFolderSource:
    """Media files in label folders (or listed by a ``path,label`` manifest CSV).

    Implements the platform's ``DataSource`` protocol (files, validate, partitions,
    read_batches, schema); see the module docstring for layouts, the decoder protocol,
    quarantine, the per-class cap and per-class split counts.

    Attributes:
        decoder: Decodes and checks one file; builds column batches.
        classes: Class labels in label-index order, fixed by the use case (other label
            folders are ignored); empty: the data's, every label folder (or manifest
            label) in sorted order (:meth:`class_list`).
        default_location: Directory read when a run names none, or
            ``synthetic:<per class>:<seed>`` for the use case's generator.
        generator: ``generator(out_dir, per_class, seed)`` writing the folder layout.
        manifest: Name of the manifest CSV under the location (manifest variant), or None.
        max_per_class: Keep at most this many valid files per class (None: all; never
            more than the sum of ``split_counts``).
        split_counts: Per-class files per partition (e.g. ``{"train": 70, "test": 30}``).
        seed: Seed of the per-class dealing to ``split_counts`` partitions.

    """

    decoder: MediaDecoder
    classes: tuple[str, ...]
    default_location: str
    generator: Callable[[Path, int, int], None] | None = None
    manifest: str | None = None
    max_per_class: int | None = None
    split_counts: Mapping[str, int] | None = None
    seed: int = 0
    # Its row check is the decoding itself (tasks.data.rows.scan_rows: the DAG's ingest
    # leaves it to preprocessing, right after; `mlp ingest` runs it before landing).
    decodes_rows: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if len(set(self.classes)) != len(self.classes):
            raise SourceError(f"classes must be distinct: {self.classes}")
        bad = [c for c in self.classes if not _safe_label(c)]
        if bad:
            raise SourceError(f"class labels must be plain names (no '/'): {bad}")
        if self.split_counts is not None and (
                not self.split_counts or min(self.split_counts.values()) < 0
                or set(self.split_counts) - {"train", "validation", "test"}):
            raise SourceError(f"split_counts must map train/validation/test to counts >= 0: "
                              f"{dict(self.split_counts)}")

    @property
    def cap(self) -> int | None:
        """Valid files kept per class."""
        caps = [c for c in (self.max_per_class,
                            sum(self.split_counts.values()) if self.split_counts else None)
                if c is not None]
        return min(caps) if caps else None

    # -- DataSource protocol -----------------------------------------------------------
    def files(self, location: str) -> dict[str, str]:
        """File key (``<label>/<name>``) -> path; generates data for ``synthetic:`` locations.

        Raises:
            SourceError: The directory or the manifest is missing or malformed, or a
                manifest row names a missing file (the message names file and line).

        """
        if location.startswith(GENERATED):
            location = str(self._generate(location))
        base = Path(location)
        if not base.is_dir():
            raise SourceError(f"{base}: source directory does not exist")
        if self.manifest is not None:
            return self._manifest_files(base)
        out: dict[str, str] = {}
        labels = self.classes or tuple(sorted(
            p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")))
        if not labels:
            raise SourceError(f"{base}: no label folders (expected {base}/<label>/<file>)")
        for label in labels:
            folder = base / label
            if not folder.is_dir():
                raise SourceError(f"{folder}: missing folder of class {label!r} "
                                  f"(expected {base}/<label>/<file> for {list(labels)})")
            for path in sorted(folder.iterdir()):
                if path.is_file() and path.name.lower().endswith(self.decoder.suffixes):
                    out[f"{label}/{path.name}"] = str(path)
        return out

    def _manifest_files(self, base: Path) -> dict[str, str]:
        path = base / self.manifest
        if not path.is_file():
            raise SourceError(f"{path}: manifest file does not exist")
        out = {MANIFEST_KEY: str(path)}
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            if header[:2] != ["path", "label"]:
                raise SourceError(f"{path}: the header must start with 'path,label', "
                                  f"got {','.join(header)!r}")
            for line, row in enumerate(reader, start=2):
                if not row or not any(v.strip() for v in row):
                    continue
                if len(row) < 2 or not row[0].strip():
                    raise SourceError(f"{path} line {line}: expected 'path,label', got {row}")
                media, label = Path(row[0].strip()), row[1].strip()
                media = media if media.is_absolute() else path.parent / media
                if not media.is_file():
                    raise SourceError(f"{path} line {line}: file {media} does not exist")
                if not _safe_label(label):
                    raise SourceError(f"{path} line {line}: label {label!r} must be a plain "
                                      "name (no '/')")
                out[f"{label}/{line:06d}-{media.name}"] = str(media)
        if len(out) == 1:
            raise SourceError(f"{path}: the manifest lists no files")
        return out

    def _generate(self, location: str) -> Path:
        name = getattr(self.generator, "__module__", "media").rsplit(".", 1)[-1]
        return generated_location(location, self.generator, name, unit="files per class")

    def class_list(self, files: Mapping[str, str]) -> ClassList:
        """The classes: the spec's, else every label of the files, sorted."""
        if self.classes:
            return ClassList(tuple(self.classes), "spec")
        labels = sorted({k.split("/", 1)[0] for k in files if k != MANIFEST_KEY})
        return ClassList(tuple(labels), "manifest labels" if self.manifest else "folders")

    def validate(self, files: Mapping[str, str]) -> dict[str, Any]:
        """Structural checks (every class has files); per-file checks happen in Beam.

        Returns:
            ``{"files", "bytes", "per_class": {label: n}, "unknown_labels": {label: n},
            "class_names", "class_origin"}``.

        Raises:
            SourceError: A declared class has no file.

        """
        classes = self.class_list(files)
        per_class = dict.fromkeys(classes.names, 0)
        unknown: dict[str, int] = {}
        total = 0
        for key, path in files.items():
            if key == MANIFEST_KEY:
                continue
            label = key.split("/", 1)[0]
            if label in per_class:
                per_class[label] += 1
            else:
                unknown[label] = unknown.get(label, 0) + 1
            total += Path(path).stat().st_size
        empty = [c for c, n in per_class.items() if n == 0]
        if empty:
            raise SourceError(f"no {'/'.join(self.decoder.suffixes)} files for class(es) "
                              f"{empty}; found {per_class}")
        return {"files": sum(per_class.values()) + sum(unknown.values()), "bytes": total,
                "per_class": per_class, "unknown_labels": unknown,
                "class_names": list(classes.names), "class_origin": classes.origin}

    def partitions(self) -> dict[str, dict[str, str]]:
        """One partition per ``split_counts`` entry, else ``all``."""
        names = [p for p, n in self.split_counts.items() if n > 0] if self.split_counts \
            else [ALL]
        return {p: {"media": p} for p in names}

    def schema(self) -> dict[str, dict[str, Any]]:
        """The decoder's columns plus the int64 ``label``."""
        label: dict[str, Any] = {"dtype": "int64", "shape": []}
        if self.classes:  # else the data's: stats.json "classes"
            label["num_classes"] = len(self.classes)
        return {**self.decoder.schema(), "label": label}

    def read_batches(self, files: Mapping[str, str], partition: str, batch_size: int
                     ) -> Iterator[dict[str, Any]]:
        """Yield column batches of one partition; bad files ride along in ``_bad``.

        The quarantine records (file, partition, row, field ``file``, value = file key,
        reason) travel with the first partition only, so each bad file is reported once.
        """
        decoded = self._decode_all(files)
        rows = np.flatnonzero(decoded["partition"] == partition)
        first = next(iter(self.partitions()))
        bad = [dict(b, partition=partition) for b in decoded["bad"]] if partition == first \
            else []
        cols = decoded["columns"]
        if not len(rows):
            yield {**{k: v[:0] for k, v in cols.items()}, "row": rows.astype(np.int64),
                   "label": np.empty(0, np.int64), "file": np.empty(0, object), "_bad": bad}
            return
        for start in range(0, len(rows), batch_size):
            sel = rows[start:start + batch_size]
            yield {**{k: v[sel] for k, v in cols.items()},
                   "row": decoded["row"][sel], "label": decoded["label"][sel],
                   "file": decoded["file"][sel], "_bad": bad if start == 0 else []}

    # -- decoding ----------------------------------------------------------------------
    def _decode_all(self, files: Mapping[str, str]) -> dict[str, Any]:
        """Decode every file once per process; apply the cap; deal to partitions."""
        media = sorted(k for k in files if k != MANIFEST_KEY)
        ident = tuple((k, files[k], *_stat(files[k])) for k in media)
        key = (id(type(self.decoder)), repr(self.decoder), self.classes, self.cap,
               tuple(sorted((self.split_counts or {}).items())), self.seed, ident)
        if key not in _CACHE:
            if len(_CACHE) > 8:
                _CACHE.clear()
            _CACHE[key] = self._decode_uncached(files, media)
        return _CACHE[key]

    def _decode_uncached(self, files: Mapping[str, str], media: list[str]) -> dict[str, Any]:
        classes = self.class_list(files).names
        index = {c: i for i, c in enumerate(classes)}
        by_class: dict[str, list[tuple[int, str]]] = {c: [] for c in classes}
        bad: list[dict[str, Any]] = []

        def reject(row: int, k: str, reason: str) -> None:
            bad.append({"file": files[k], "row": row, "field": "file", "value": k,
                        "reason": reason})

        for row, k in enumerate(media):
            label = k.split("/", 1)[0]
            if label not in index:
                reject(row, k, f"label {label!r} is not one of {list(classes)}")
            else:
                by_class[label].append((row, k))
        kept: list[tuple[int, str, int, Any]] = []  # row, key, label index, decoded item
        capped = 0
        for label, members in by_class.items():
            n = 0
            for row, k in members:
                if self.cap is not None and n >= self.cap:
                    capped += 1
                    continue
                try:
                    item = self.decoder.decode(files[k])
                except MediaError as exc:
                    reject(row, k, str(exc))
                    continue
                kept.append((row, k, index[label], item))
                n += 1
        if capped:
            log.info("per-class cap %d: %d files beyond it were not read", self.cap, capped)
        parts = self._deal([lab for _, _, lab, _ in kept], classes)
        columns: dict[str, np.ndarray] = {}
        step = 64  # decode-to-columns in chunks: feature extraction is vectorised per chunk
        chunks = [self.decoder.columns([it for *_, it in kept[i:i + step]])
                  for i in range(0, len(kept), step)]
        for name, spec in self.decoder.schema().items():
            if chunks:
                columns[name] = np.concatenate([c[name] for c in chunks])
            else:
                shape = [0 if d is None else d for d in spec.get("shape", [])]
                columns[name] = np.empty((0, *shape), np.dtype(spec["dtype"]))
        return {
            "row": np.asarray([r for r, *_ in kept], np.int64),
            "file": np.asarray([k for _, k, *_ in kept], object),
            "label": np.asarray([lab for _, _, lab, _ in kept], np.int64),
            "partition": parts,
            "columns": columns,
            "bad": sorted(bad, key=lambda b: b["row"]),
        }

    def _deal(self, labels: list[int], classes: tuple[str, ...]) -> np.ndarray:
        """Partition name of every kept file (seeded, per class)."""
        labels_arr = np.asarray(labels, np.int64)
        out = np.full(len(labels_arr), ALL, dtype=object)
        if not self.split_counts:
            return out
        rng = np.random.default_rng(self.seed)
        for c in range(len(classes)):
            members = rng.permutation(np.flatnonzero(labels_arr == c))
            counts = _apportion(len(members), self.split_counts)
            if len(members) < sum(self.split_counts.values()):
                log.warning("class %r has %d valid files, fewer than %s: dealt %s",
                            classes[c], len(members), dict(self.split_counts), counts)
            start = 0
            for name, n in counts.items():
                out[members[start:start + n]] = name
                start += n
        return out


def _stat(path: str) -> tuple[int, int]:
    st = Path(path).stat()
    return st.st_size, st.st_mtime_ns
