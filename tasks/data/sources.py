"""Raw data sources a use case can declare.

A source resolves its raw files, validates them (structural errors fail the file with a
message naming it), reads them as column batches for Beam, and reports per-row problems
that preprocessing quarantines instead of dropping silently.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.errors import PermanentError
from tasks.data.idx import IdxFormatError, read_idx, read_idx_header

# Snapshots are immutable, so a process may keep what it parsed: preprocessing's stages
# (plan, analyzers, writing) each read the snapshot, and on one worker they then share a
# single parse. Keyed by file identity (path, size, mtime); bounded in size.
_CACHE: dict[tuple[Any, ...], Any] = {}
CACHE_LIMIT = 2 << 30  # bytes of source files whose parse results are kept per process


def _cached(path: str, kind: str, extra: tuple[Any, ...], load: Callable[[], Any]) -> Any:
    st = Path(path).stat()
    key = (path, st.st_size, st.st_mtime_ns, kind, *extra)
    if key not in _CACHE:
        if sum(k[1] for k in _CACHE) + st.st_size > CACHE_LIMIT:
            _CACHE.clear()
        _CACHE[key] = load()
    return _CACHE[key]


def clear_cache() -> None:
    """Forget every kept parse (a benchmark's variants each start from the files)."""
    _CACHE.clear()


# A CSV bigger than this is read as byte ranges of about this size, each an independent
# unit of work: a runner with several workers parses, checks and routes them in parallel.
CHUNK_BYTES = 64 << 20


@dataclass(frozen=True)
class CsvChunk:
    """Whole lines ``[start, end)`` of a CSV file; ``first_line`` is its first line's number.

    The first chunk of a file starts at byte 0 (any skipped lines and the header); the
    others start at a line and hold data rows only.
    """

    start: int
    end: int
    first_line: int


@functools.lru_cache(maxsize=64)
def _csv_chunks(path: str, size: int, mtime_ns: int, chunk_bytes: int, head_lines: int
                ) -> tuple[CsvChunk, ...]:
    """Cut a CSV at line ends near every ``chunk_bytes``; one chunk if a row holds a quote.

    Line numbers come from counting newlines before each cut (one read of the file). A
    quoted field may hold a newline, which would make lines and rows differ and could put a
    cut inside a record, so a file with any ``"`` after its ``head_lines`` (skipped lines
    and the header, often quoted) is not cut.
    """
    del mtime_ns  # part of the cache key: a changed file is cut again
    cuts, lines = [0], [1]
    with open(path, "rb") as fh:
        for _ in range(head_lines):
            fh.readline()
        data_start = fh.tell()
        fh.seek(0)
        pos, newlines, target = 0, 0, max(chunk_bytes, data_start)
        while True:
            block = fh.read(16 << 20)
            if not block:
                break
            if b'"' in block[max(data_start - pos, 0):]:
                return (CsvChunk(0, size, 1),)
            while target < pos + len(block):  # a cut in this block: after the next newline
                nl = block.find(b"\n", max(target - pos, 0))
                if nl < 0:
                    break
                cuts.append(pos + nl + 1)
                lines.append(1 + newlines + block.count(b"\n", 0, nl + 1))
                target = pos + nl + 1 + chunk_bytes
            newlines += block.count(b"\n")
            pos += len(block)
    if cuts[-1] >= size:
        cuts.pop()
        lines.pop()
    ends = [*cuts[1:], size]
    return tuple(CsvChunk(a, b, n) for a, b, n in zip(cuts, ends, lines, strict=True))


class SourceError(PermanentError, ValueError):
    """Raw input is unusable; the message names the file and the field."""

def layout_files(location: str, layout: Mapping[str, str]) -> dict[str, str]:
    """Partition -> path of the file ``layout`` names under the folder ``location``.

    Raises:
        SourceError: The folder or one of the files is missing (named in the message).

    """
    base = Path(location)
    if not base.is_dir():
        raise SourceError(f"{base}: source directory does not exist")
    out = {}
    for part, name in layout.items():
        path = base / name
        if not path.is_file():
            raise SourceError(f"{base}: missing {part} file {name}")
        out[part] = str(path)
    return out


def generated_location(location: str, generator: Callable[[Path, int, int], None] | None,
                       name: str, unit: str = "rows", minimum: int = 0) -> Path:
    """The folder a seeded generator wrote for a ``synthetic:``/``bundled:`` location.

    ``<kind>:<count>:<seed>`` runs ``generator(folder, count, seed)`` once into
    ``$MLP_HOME/generated/<kind>/<name>-<count>-<seed>`` (atomically; concurrent runs
    wait for one generation instead of racing) and reuses the folder afterwards.

    Raises:
        SourceError: No generator, a malformed location, or a count below ``minimum``.

    """
    import fcntl

    from tasks.core.config import settings
    from tasks.core.files import atomic_dir

    if generator is None:
        raise SourceError(f"{location}: this source has no generator")
    try:
        kind, count, seed = location.split(":")
        n, sd = int(count), int(seed)
    except ValueError as exc:
        raise SourceError(f"{location}: expected <kind>:<{unit}>:<seed>") from exc
    if n < minimum:
        raise SourceError(f"{location}: need at least {minimum} {unit}")
    target = settings().root / "generated" / kind / f"{name}-{n}-{sd}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_dir():
            with atomic_dir(target) as tmp:
                generator(tmp, n, sd)
    return target



@dataclass(frozen=True)
class IdxImageSource:
    """MNIST-format images and labels (IDX, raw or gzip), one pair per partition.

    Attributes:
        default_location: Directory searched when a run names no source, or
            ``bundled:<images>:<seed>``/``synthetic:...`` for ``generator``'s files.
        image_shape: Expected (rows, cols) of every image.
        num_classes: Labels must lie in ``[0, num_classes)``.
        layout: partition -> {field: file stem}; ``.gz`` is tried after the raw name.
        generator: ``generator(out_dir, images, seed)`` writing the IDX files (e.g.
            scikit-learn's bundled digits made into MNIST's format).

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
    generator: Callable[[Path, int, int], None] | None = None

    def files(self, location: str) -> dict[str, str]:
        """Map ``<partition>.<field>`` to the file found under ``location``."""
        if location.startswith(GENERATED):
            name = getattr(self.generator, "__module__", "idx").rsplit(".", 1)[-1]
            location = str(generated_location(location, self.generator, name,
                                              unit="images", minimum=2))
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

    def check(self, files: Mapping[str, str]) -> dict[str, Any]:
        """Cheap structural check from the IDX headers only (seconds, no data read).

        Dtypes, image dimensions and image/label counts per partition; the label range is
        checked per row by preprocessing (quarantine).
        """
        facts: dict[str, Any] = {}
        for part in self.layout:
            img_path, lab_path = files[f"{part}.image"], files[f"{part}.label"]
            img_dtype, img_dims = read_idx_header(img_path, ndim=3)
            lab_dtype, lab_dims = read_idx_header(lab_path, ndim=1)
            if img_dtype != np.uint8 or len(img_dims) != 3:
                raise IdxFormatError(img_path, f"expected uint8 images (n, rows, cols), got "
                                               f"{img_dtype} with dims {list(img_dims)}")
            if tuple(img_dims[1:]) != tuple(self.image_shape):
                raise IdxFormatError(img_path, f"image dims {list(img_dims[1:])} differ from "
                                               f"expected {list(self.image_shape)}")
            if lab_dtype != np.uint8 or len(lab_dims) != 1:
                raise IdxFormatError(lab_path, f"expected uint8 labels (n,), got {lab_dtype} "
                                               f"with dims {list(lab_dims)}")
            if lab_dims[0] != img_dims[0]:
                raise SourceError(f"{lab_path}: label count {lab_dims[0]} does not match "
                                  f"image count {img_dims[0]} of {img_path}")
            facts[part] = {"rows": int(img_dims[0])}
        return facts

    def partitions(self) -> dict[str, dict[str, str]]:
        """Partition -> {field: file key} (file keys index :meth:`files`)."""
        return {part: {f: f"{part}.{f}" for f in fields} for part, fields in self.layout.items()}

    def read_batches(
        self, files: Mapping[str, str], partition: str, batch_size: int
    ) -> Iterator[dict[str, Any]]:
        """Yield ``{"row", "image", "label", "_bad"}`` batches of one partition in file order.

        Rows with a label outside ``[0, num_classes)`` are left out of the batch and
        described in ``_bad`` (file, row, field, value, reason) for the quarantine file.
        """
        images = self._images(files[f"{partition}.image"])
        labels = self._labels(files[f"{partition}.label"]).astype(np.int64)
        label_file = files[f"{partition}.label"]
        for start in range(0, len(images), batch_size):
            stop = min(start + batch_size, len(images))
            lab = labels[start:stop]
            keep, bad = self.check_labels(lab, label_file, partition, start)
            yield {
                "row": np.arange(start, stop, dtype=np.int64)[keep],
                "image": images[start:stop][keep],
                "label": lab[keep],
                "_bad": bad,
            }

    def check_labels(self, labels: np.ndarray, path: str, partition: str, start: int
                     ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The row check of this source: which labels are valid, and records of the others.

        Shared by preprocessing (:meth:`read_batches`), ingest and ``mlp validate``
        (:meth:`sample_batches`, through :func:`tasks.data.rows.scan_rows`).
        """
        bad = (labels < 0) | (labels >= self.num_classes)
        return ~bad, [
            {"file": path, "partition": partition, "row": start + int(i),
             "field": "label", "value": int(labels[i]),
             "reason": f"label outside [0, {self.num_classes})"}
            for i in np.flatnonzero(bad)]

    def sample_batches(self, files: Mapping[str, str], partition: str, batch_size: int,
                       max_bytes: int | None = None) -> tuple[Iterator[dict[str, Any]], str]:
        """The row check on the labels alone (the images have no per-row check), quickly.

        Returns the batches (``row``, ``_bad``) and a note on what was read.
        """
        path = files[f"{partition}.label"]
        labels = self._labels(path).astype(np.int64)

        def batches() -> Iterator[dict[str, Any]]:
            for start in range(0, len(labels), batch_size):
                lab = labels[start:start + batch_size]
                keep, bad = self.check_labels(lab, path, partition, start)
                yield {"row": np.arange(start, start + len(lab), dtype=np.int64)[keep],
                       "_bad": bad}

        return batches(), ""

    def schema(self) -> dict[str, dict[str, Any]]:
        """Columns of the batches: raw uint8 images and int64 labels."""
        return {
            "image": {"dtype": "uint8", "shape": list(self.image_shape)},
            "label": {"dtype": "int64", "shape": [], "num_classes": self.num_classes},
        }

    def _images(self, path: str) -> np.ndarray:
        arr = _cached(path, "idx", (3,), lambda: read_idx(path, ndim=3))
        if arr.dtype != np.uint8 or arr.ndim != 3:
            raise IdxFormatError(path, f"expected uint8 images (n, rows, cols), got {arr.dtype} "
                                       f"with dims {list(arr.shape)}")
        if tuple(arr.shape[1:]) != tuple(self.image_shape):
            raise IdxFormatError(path, f"image dims {list(arr.shape[1:])} differ from "
                                       f"expected {list(self.image_shape)}")
        return arr

    def _labels(self, path: str) -> np.ndarray:
        arr = _cached(path, "idx", (1,), lambda: read_idx(path, ndim=1))
        if arr.dtype != np.uint8 or arr.ndim != 1:
            raise IdxFormatError(path, f"expected uint8 labels (n,), got {arr.dtype} "
                                       f"with dims {list(arr.shape)}")
        return arr


# --------------------------------------------------------------------------- tabular
@dataclass(frozen=True)
class Column:
    """One column of a tabular source and the values it may hold.

    Attributes:
        name: The column's name in the spec: a Python identifier (features, label).
        dtype: ``float64``, ``int64`` or ``string``.
        min: Smallest valid value (numeric columns).
        max: Largest valid value (numeric columns).
        values: The allowed values (e.g. class labels, in class order), or None for any.
        header: The name in the file's header when it is not an identifier (``"petal
            width (cm)"`` for ``petal_width_cm``); clients send this name to the served
            model. None: the header name is ``name``.

    """

    name: str
    dtype: str = "float64"
    min: float | None = None
    max: float | None = None
    values: tuple[Any, ...] | None = None
    header: str | None = None

    @property
    def file_name(self) -> str:
        """The column's name in the file (and in requests to the served model)."""
        return self.header if self.header is not None else self.name


# Locations produced by the use case's generator instead of read from a directory:
# "synthetic:<rows>:<seed>" (seeded synthetic data) and "bundled:<rows>:<seed>" (a real
# data set shipped inside a package, e.g. scikit-learn's, exported to the source format).
GENERATED = ("synthetic:", "bundled:")


@dataclass(frozen=True)
class TabularSource:
    """CSV or Parquet files with a fixed schema, validated row by row.

    File-level problems (missing file, missing or unexpected columns) raise
    :class:`SourceError` naming the file and the columns. Row-level problems (wrong number
    of fields, empty or non-numeric values, NaN, out-of-range or unknown values) keep the
    row out of the data and describe it (file, line, field, value, reason) for quarantine.

    ``default_location`` may be ``synthetic:<rows>:<seed>``: the use case's seeded
    generator then writes the data (used where the real data set is not available
    offline), or ``bundled:<rows>:<seed>`` for a real data set a package ships; either
    way the file is snapshotted and checksummed like any raw data.

    A CSV without a header row (``has_header=False``: the columns are named by the spec,
    in file order) or with lines before it (``skip_rows``, e.g. scikit-learn's count
    line) is read as such; line numbers in messages are the file's own.
    """

    columns: tuple[Column, ...]
    layout: Mapping[str, str]
    default_location: str
    format: str = "csv"
    generator: Callable[[Path, int, int], None] | None = None
    has_header: bool = True
    skip_rows: int = 0

    @property
    def first_data_line(self) -> int:
        """File line (1-based) of the first data row of a CSV."""
        return self.skip_rows + (2 if self.has_header else 1)

    def files(self, location: str) -> dict[str, str]:
        """Partition -> file path; generates synthetic data for ``synthetic:`` locations."""
        if location.startswith(GENERATED):
            location = str(self._generate(location))
        return layout_files(location, self.layout)

    def _generate(self, location: str) -> Path:
        return generated_location(location, self.generator, "-".join(self.layout.values()))

    def header(self, path: str) -> list[str]:
        """Column names of a file, from the CSV header or the Parquet schema.

        A CSV declared without a header row gets the spec's names when its first data
        row has as many fields (else that row's fields, which then do not match).
        """
        if self.format == "parquet":
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(path).schema_arrow.names)
        with open(path, newline="") as fh:
            import csv

            for _ in range(self.skip_rows):
                fh.readline()
            first = next(csv.reader(fh), [])
        names = [c.file_name for c in self.columns]
        if not self.has_header:
            return names if len(first) == len(names) else first
        return first

    def validate(self, files: Mapping[str, str]) -> dict[str, Any]:
        """Check every file's columns against the schema.

        Raises:
            SourceError: An empty file, a missing or unexpected column, a header row
                that looks like data, or no data row (the file is named).

        """
        expected = [c.file_name for c in self.columns]
        facts = {}
        for part, path in files.items():
            size = Path(path).stat().st_size
            if size == 0:
                raise SourceError(f"{path}: the file is empty (0 bytes); expected a "
                                  f"{self.format.upper()} file with the columns "
                                  f"{_shown(expected)}")
            try:
                names = self.header(path)
            except Exception as exc:  # noqa: BLE001 - pyarrow/csv say why in their own words
                raise SourceError(f"{path}: cannot read it as {self.format.upper()}: "
                                  f"{str(exc).splitlines()[0]}") from None
            if not any(n.strip() for n in names):
                raise SourceError(f"{path}: the file holds no header row (only blank "
                                  f"lines); expected the columns {_shown(expected)}")
            missing = [c for c in expected if c not in names]
            extra = [c for c in names if c not in expected]
            if missing or extra:
                hint = ""
                if self.format == "csv" and self.has_header and _looks_like_data(names):
                    hint = (f"; its first line {','.join(names)[:80]!r} looks like data, "
                            "not a header: add the header row, or declare "
                            "TabularSource(has_header=False) to name the columns in the spec")
                raise SourceError(
                    f"{path}: columns do not match the schema: missing {_shown(missing)}, "
                    f"unexpected {_shown(extra)}{hint}"
                )
            if self.data_rows_absent(path):
                raise SourceError(f"{path}: has a header but no data rows")
            facts[part] = {"columns": len(names), "bytes": size}
        return facts

    def check(self, files: Mapping[str, str]) -> dict[str, Any]:
        """Cheap structural check: the headers (the same as :meth:`validate`)."""
        return self.validate(files)

    def data_rows_absent(self, path: str) -> bool:
        """Whether a file holds no data row (a CSV with only its header, an empty table)."""
        if self.format == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows == 0
        with open(path, newline="") as fh:
            for _ in range(self.first_data_line - 1):  # skipped lines and the header
                fh.readline()
            return not any(line.strip() for line in fh)

    def partitions(self) -> dict[str, dict[str, str]]:
        """Partition -> {column: file key}."""
        return {part: {c.name: part for c in self.columns} for part in self.layout}

    def schema(self) -> dict[str, dict[str, Any]]:
        """Column name -> {dtype, shape}, plus the declared range, values and file name."""
        out: dict[str, dict[str, Any]] = {}
        for c in self.columns:
            out[c.name] = {"dtype": c.dtype, "shape": [], "header": c.file_name}
            out[c.name].update({k: v for k, v in (("min", c.min), ("max", c.max))
                                if v is not None})
            if c.values is not None:
                out[c.name]["values"] = list(c.values)
        return out

    def chunks(self, files: Mapping[str, str], partition: str) -> list[CsvChunk | None]:
        """Independent parts of a partition for :meth:`read_batches`.

        ``[None]`` (all of it) unless it is a CSV bigger than :data:`CHUNK_BYTES` whose
        rows hold no quotes.
        """
        path = files[partition]
        st = Path(path).stat()
        if self.format != "csv" or st.st_size <= CHUNK_BYTES:
            return [None]
        return list(_csv_chunks(path, st.st_size, st.st_mtime_ns, CHUNK_BYTES,
                                self.first_data_line - 1))

    def read_batches(
        self, files: Mapping[str, str], partition: str, batch_size: int,
        chunk: CsvChunk | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield typed column batches with ``row`` ids and ``_bad`` records, in file order.

        With ``chunk`` (one of :meth:`chunks`), only that part of the file; row ids and line
        numbers are the file's own either way.
        """
        path = files[partition]
        if self.format == "parquet":
            def reader() -> Iterator[dict[str, Any]]:
                return self._read_parquet(path, partition, batch_size)
        else:
            def reader() -> Iterator[dict[str, Any]]:
                return self._read_csv(path, partition, batch_size, chunk=chunk)
        # Streamed (memory stays one batch): files above the cache, and chunks, which
        # preprocessing parses once per run and reads back from its work directory.
        if chunk is not None or Path(path).stat().st_size > CACHE_LIMIT:
            yield from reader()
            return
        yield from _cached(path, self.format, (partition, batch_size), lambda: list(reader()))

    def sample_batches(self, files: Mapping[str, str], partition: str, batch_size: int,
                       max_bytes: int | None = None) -> tuple[Iterator[dict[str, Any]], str]:
        """The row check of preprocessing over a file, or its first ``max_bytes``.

        The same casts and checks as :meth:`read_batches` (``mlp validate`` and ingest
        use it through :func:`tasks.data.rows.scan_rows`). A bigger file is sampled: its
        first ``max_bytes`` (whole lines; Parquet: whole row groups), said in the note.
        """
        path = files[partition]
        size = Path(path).stat().st_size
        if max_bytes is None or size <= max_bytes:  # streamed: a scan keeps nothing
            reader = self._read_parquet if self.format == "parquet" else self._read_csv
            return reader(path, partition, batch_size), ""
        mib = f"{max_bytes / 2**20:.0f} MiB of {size / 2**20:.0f} MiB"
        if self.format == "parquet":
            return self._read_parquet(path, partition, batch_size, max_bytes), (
                f"{path}: sampled the first row groups (about {mib}); the run checks "
                "every row")
        with open(path, "rb") as fh:
            head = fh.read(max_bytes)
        head = head[:head.rfind(b"\n") + 1]
        lines = head.count(b"\n")
        return self._read_csv(path, partition, batch_size, head), (
            f"{path}: sampled the first {mib} ({lines} lines); the run checks every row")

    def _read_csv(self, path: str, partition: str, batch_size: int,
                  head: bytes | None = None, chunk: CsvChunk | None = None
                  ) -> Iterator[dict[str, Any]]:
        import io

        import pyarrow as pa
        from pyarrow import csv

        skipped: list[dict[str, Any]] = []
        first = self.first_data_line
        if chunk is not None and chunk.start > 0:  # data lines only, no header
            with open(path, "rb") as fh:
                fh.seek(chunk.start)
                head = fh.read(chunk.end - chunk.start)
            stream_line, data_line, has_header = chunk.first_line, chunk.first_line, False
            skip = 0
        else:
            if chunk is not None:
                with open(path, "rb") as fh:
                    head = fh.read(chunk.end)
            stream_line, data_line, has_header = self.skip_rows + 1, first, self.has_header
            skip = self.skip_rows

        def on_invalid(row: Any) -> str:
            line = row.number + stream_line - 1  # pyarrow counts from the stream start
            skipped.append({"file": path, "partition": partition, "line": line,
                            "row": line - first, "field": None, "value": row.text,
                            "reason": f"expected {row.expected_columns} fields, "
                                      f"got {row.actual_columns}"})
            return "skip"

        names = [c.file_name for c in self.columns]
        stream = io.BytesIO(head) if head is not None else open(path, "rb")  # noqa: SIM115
        # Lines before the header are skipped here, not by pyarrow's skip_rows, which
        # would make it forget the line numbers of invalid rows.
        for _ in range(skip):
            stream.readline()
        # Everything is read as text and cast per column: a bad value then costs one
        # row (quarantined), not the whole block.
        reader = csv.open_csv(
            stream,
            read_options=csv.ReadOptions(block_size=1 << 22, use_threads=False,
                                         column_names=None if has_header else names),
            parse_options=csv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=csv.ConvertOptions(
                column_types={n: pa.string() for n in names}, include_columns=names,
                strings_can_be_null=False, quoted_strings_can_be_null=False,
            ),
        )
        parsed = 0
        skipped_lines: list[int] = []
        pending: list[dict[str, Any]] = []
        for record_batch in reader:
            skipped_lines.extend(r["line"] for r in skipped)
            pending.extend(skipped)
            skipped.clear()
            n = record_batch.num_rows
            idx = np.arange(parsed, parsed + n)
            parsed += n
            # Map parsed-row index to the file line, accounting for skipped lines.
            s = np.sort(np.asarray(skipped_lines, dtype=np.int64))
            lines = idx + data_line + np.searchsorted(s - np.arange(len(s)), idx + data_line,
                                                      side="right")
            cols = {c.name: record_batch.column(c.file_name) for c in self.columns}
            for start in range(0, n, batch_size):
                sl = slice(start, min(start + batch_size, n))
                batch = self._check({k: v.slice(sl.start, sl.stop - sl.start)
                                     for k, v in cols.items()}, lines[sl], path, partition)
                batch["_bad"] = pending + batch["_bad"]
                pending = []
                yield batch
        stream.close()
        if pending or skipped:
            yield {**{c.name: np.empty(0) for c in self.columns},
                   "row": np.empty(0, np.int64), "_bad": pending + skipped}

    def _read_parquet(self, path: str, partition: str, batch_size: int,
                      max_bytes: int | None = None) -> Iterator[dict[str, Any]]:
        import pyarrow.parquet as pq

        offset = 0
        names = [c.file_name for c in self.columns]
        pf = pq.ParquetFile(path)
        groups, size = [], 0
        for g in range(pf.metadata.num_row_groups):  # a sample: whole row groups
            if max_bytes is not None and groups and size >= max_bytes:
                break
            groups.append(g)
            size += pf.metadata.row_group(g).total_byte_size
        for rb in pf.iter_batches(batch_size=batch_size, columns=names, row_groups=groups):
            rows = np.arange(offset, offset + rb.num_rows)
            offset += rb.num_rows
            # Parquet has no header line: "line" is the row number + 2, as for CSV.
            yield self._check({c.name: rb.column(c.file_name) for c in self.columns},
                              rows + 2, path, partition)

    def _check(self, cols: Mapping[str, Any], lines: np.ndarray, path: str, partition: str
               ) -> dict[str, Any]:
        """Cast and validate one batch; bad rows leave the batch as ``_bad`` records."""
        import pyarrow as pa
        import pyarrow.compute as pc

        n = len(lines)
        first = 2 if self.format == "parquet" else self.first_data_line
        keep = np.ones(n, bool)
        bad: list[dict[str, Any]] = []
        out: dict[str, Any] = {}

        def flag(mask: np.ndarray, col: Column, raw: Any, reason: str) -> None:
            for i in np.flatnonzero(mask & keep):
                value = raw[i].as_py() if hasattr(raw[i], "as_py") else raw[i]
                bad.append({"file": path, "partition": partition, "line": int(lines[i]),
                            "row": int(lines[i]) - first, "field": col.file_name,
                            "value": value, "reason": reason})
            keep[mask] = False

        for col in self.columns:
            raw = cols[col.name]
            if col.dtype == "string":
                arr = np.asarray(raw.to_pylist(), dtype=object)
                flag(np.array([v is None or v == "" for v in arr]), col, raw, "missing value")
            else:
                target = pa.float64() if col.dtype == "float64" else pa.int64()
                if pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type):
                    text = raw
                    empty = np.asarray(pc.equal(pc.utf8_trim_whitespace(text), "")
                                       .fill_null(True))
                    flag(empty, col, raw, "missing value")
                    dtype = target.to_pandas_dtype()
                    filled = pc.if_else(pa.array(empty), "0", text)
                    try:  # fast path: the whole batch casts in C++
                        arr = np.asarray(pc.cast(filled, target).to_numpy(zero_copy_only=False),
                                         dtype=dtype)
                    except (pa.ArrowInvalid, pa.ArrowTypeError):
                        # Slow path only for a batch holding a non-numeric value.
                        arr, wrong = np.zeros(n, dtype=dtype), np.zeros(n, bool)
                        parse = float if col.dtype == "float64" else int
                        for i, v in enumerate(filled.to_pylist()):
                            try:
                                arr[i] = parse(v)
                            except (TypeError, ValueError):
                                wrong[i] = True
                        kind = "number" if col.dtype == "float64" else "integer"
                        flag(wrong, col, raw, f"not a {kind}")
                else:
                    nulls = np.asarray(raw.is_null())
                    flag(nulls, col, raw, "missing value")
                    arr = np.asarray(raw.fill_null(0).cast(target).to_numpy(
                        zero_copy_only=False))
                if col.dtype == "float64":
                    flag(~np.isfinite(arr), col, raw, "NaN or infinite value")
                if col.min is not None:
                    flag(arr < col.min, col, raw, f"below minimum {col.min}")
                if col.max is not None:
                    flag(arr > col.max, col, raw, f"above maximum {col.max}")
            if col.values is not None:
                allowed = np.isin(arr, np.asarray(col.values, dtype=arr.dtype))
                flag(~allowed, col, raw, f"not one of {list(col.values)}")
            out[col.name] = arr
        out = {k: v[keep] for k, v in out.items()}
        out["row"] = (lines - first)[keep].astype(np.int64)
        out["_bad"] = bad
        return out


def _shown(names: list[str], limit: int = 8) -> str:
    """A list of column names, shortened when long (``[a, b, ... 31 columns]``)."""
    if len(names) <= limit:
        return str(names)
    return f"{names[:limit - 2]} ... ({len(names)} columns)"


def _looks_like_data(fields: list[str]) -> bool:
    """Whether a would-be header row is data: every field a number (or a count line)."""
    def number(text: str) -> bool:
        try:
            float(text)
        except ValueError:
            return False
        return True

    fields = [f.strip() for f in fields if f.strip()]
    return bool(fields) and (all(number(f) for f in fields) or number(fields[0]))
