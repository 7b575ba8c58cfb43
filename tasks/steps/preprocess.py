"""Beam preprocessing: validate, full-pass analyzers, split, global shuffle, transform, TFRecords.

Elements are read units (a partition, or a byte range of a big CSV) and column batches
(dicts of numpy arrays), never single rows: Beam's per-element overhead (~40 us here)
would otherwise dominate. The work runs as three linear pipelines, one after the other;
each stage's small result is stored in the run's work directory for the stages after it:

    1. plan        units ─► row ids (+ strata), folded per unit ─► split + shuffle plan
    2. statistics  units ─► analyzers per split, folded per unit (min/max/mean/std,
                   quantiles, vocabularies, class counts; the training split's histogram
                   bins) ─► merged
    3. write       units ─► batches ─► transform, key by (split, shard); each batch's
                   histograms on the training bins under their own key ─► group ─►
                   order, encode and write shards, merge histograms ─► finalize
                   (``_summary.json``)

Units spread over a runner's workers: on a 2-worker Dask cluster the 1M-row credit-card
case ran 1.27x faster than in-process (``bench/preprocess.py``, both warm, medians), the
shards over the workers in the writing stage. On the in-process runner what crosses stages
stays in memory within a budget (:data:`HOLD_BYTES`). The histograms
(:mod:`tasks.features.profile`: deciles of numeric columns, top categories, image
brightness/contrast/intensity) are stored with the statistics; the data-analysis page
draws them and drift checks compare new data with them.

There is no fan-out and no side input: each stage reads the snapshot itself (a unit parsed
once is read back by the later stages, see :func:`parsed_once`). Beam 2.77's DaskRunner
executes just one consumer of a PCollection that has several, and recomputes a side
input's whole upstream graph inside every task that reads it.

Rows a source rejects travel to the end of the chain and land in a quarantine file with
file, row, field and reason; the step fails with a summary when their fraction exceeds the
configured maximum. Outputs appear atomically (temporary directory, then rename).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from tasks.core.errors import PermanentError
from tasks.core.files import atomic_dir, read_json, write_json
from tasks.core.run import DATASET_MANIFEST, FEATURE_SPEC, STATS, quarantine_file_for
from tasks.data import sources as data_sources
from tasks.data.classes import ClassList
from tasks.data.rows import bad_rows_message
from tasks.data.tfrecord import (
    PACKED,
    RAW_COLUMN,
    RAW_INPUTS,
    as_encoded,
    encode_examples,
    encode_labels,
    for_split,
    label_classes,
    output_spec,
    pack_raw,
    shard_name,
)
from tasks.features.profile import (
    BinSketch,
    Histogram,
    ProfileColumn,
    data_columns,
    merge_histograms,
)
from tasks.features.text import TextFeature, line_ids, tokens, windows
from tasks.features.transforms import Analyzer, apply_numpy
from tasks.spec import CLASSES_STATS_KEY, RATIO, DataSource, Feature, PreprocessSpec, SplitSpec
from tasks.steps.beam_runner import make_pipeline, run_to_completion

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")

# Group keys are integers (split index * _SHARD_BASE + shard; _BAD for rejected rows,
# _HIST for the histograms of the batches):
# the DaskRunner partitions by Python hash(), which differs per worker process for strings
# (apache/beam#29365), so string or tuple keys would split a group across workers.
_SHARD_BASE = 1_000_000
_BAD = -1
_HIST = -2


class PreprocessError(PermanentError, RuntimeError):
    """Preprocessing refused the input; the message summarises why."""


# --------------------------------------------------------------------------- planning
def _apportion(total: int, ratios: Mapping[str, float]) -> dict[str, int]:
    """Exact integer counts per split summing to ``total`` (largest remainder)."""
    names = [s for s in SPLITS if ratios.get(s, 0) > 0]
    exact = np.array([total * ratios[s] for s in names])
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    return dict(zip(names, counts.tolist(), strict=True))


def _stratified_pick(strata: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k`` rows whose class proportions follow ``strata`` (largest remainder)."""
    classes, counts = np.unique(strata, return_counts=True)
    exact = k * counts / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[: k - int(quota.sum())]] += 1
    picked = [
        rng.permutation(np.flatnonzero(strata == c))[:q]
        for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, np.int64)


def plan_splits(
    pieces: Iterable[tuple[str, np.ndarray, np.ndarray | None]], split: SplitSpec
) -> dict[str, Any]:
    """Deterministic split assignment and globally shuffled positions.

    Args:
        pieces: ``(partition, row ids, class values or None)`` in any order and chunking.
        split: The split rule.

    Returns:
        ``{"partitions": {p: {"rows", "split", "pos"}}, "sizes": {split: n},
        "counts": {split: {class: n}}}`` where ``rows`` is sorted, ``split`` indexes
        :data:`SPLITS` and ``pos`` is each row's place in its split's shuffled order.

    """
    by_part: dict[str, list[tuple[np.ndarray, np.ndarray | None]]] = {}
    for part, rows, strata in pieces:
        by_part.setdefault(part, []).append((rows, strata))
    rng = np.random.default_rng(split.seed)
    plan: dict[str, dict[str, np.ndarray]] = {}
    for part in sorted(by_part):
        rows = np.concatenate([r for r, _ in by_part[part]]).astype(np.int64)
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        strata = None
        if split.stratify_by:
            strata = np.concatenate([s for _, s in by_part[part]])[order]
        target = split.partition_to_split.get(part)
        if target == RATIO:
            codes = np.zeros(len(rows), dtype=np.int8)
            groups = [(None, np.arange(len(rows)))] if strata is None else [
                (c, np.flatnonzero(strata == c)) for c in np.unique(strata)]
            for cls, members in groups:
                ratios = split.class_ratios.get(
                    cls.item() if hasattr(cls, "item") else cls, split.ratios)
                counts = _apportion(len(members), ratios)
                shuffled = rng.permutation(members)
                start = 0
                for name, n in counts.items():
                    codes[shuffled[start:start + n]] = SPLITS.index(name)
                    start += n
        elif target in SPLITS:
            codes = np.full(len(rows), SPLITS.index(target), dtype=np.int8)
            if part == split.validation_from and split.validation_size:
                if split.validation_size >= len(rows):
                    raise PreprocessError(
                        f"validation_size {split.validation_size} >= {len(rows)} rows "
                        f"of {part!r}")
                if strata is not None:
                    chosen = _stratified_pick(strata, split.validation_size, rng)
                else:
                    chosen = np.sort(rng.permutation(len(rows))[: split.validation_size])
                codes[chosen] = SPLITS.index("validation")
        else:
            raise PreprocessError(f"partition {part!r} maps to unknown split {target!r}")
        plan[part] = {"rows": rows, "split": codes, "pos": np.zeros(len(rows), np.int64),
                      "strata": strata}
    sizes, counts = {}, {}
    for code, name in enumerate(SPLITS):
        members = [(p, np.flatnonzero(plan[p]["split"] == code)) for p in sorted(plan)]
        n = sum(len(m) for _, m in members)
        sizes[name] = n
        perm = rng.permutation(n)
        start = 0
        per_class: dict[str, int] = {}
        for p, m in members:
            plan[p]["pos"][m] = perm[start : start + len(m)]
            start += len(m)
            if plan[p]["strata"] is not None:
                for c, k in zip(*np.unique(plan[p]["strata"][m], return_counts=True),
                                strict=True):
                    per_class[str(c)] = per_class.get(str(c), 0) + int(k)
        counts[name] = dict(sorted(per_class.items()))
    for p in plan.values():
        del p["strata"]
    return {"partitions": plan, "sizes": sizes, "counts": counts}


# --------------------------------------------------------------------------- Beam pieces
# A shard's rows cross the grouping step as a path, not as data: the in-process runner
# materialises a grouping's whole input, so keeping the rows out of it (on disk, or held
# within a fixed budget, below) bounds memory by one shard instead of the data set (10M
# rows passed 18 GB of RSS before). A piece is what the
# writer needs of one batch's rows of one shard: their shuffled positions, the columns to
# encode and the split's record spec. The writer orders a shard's rows first and encodes
# them in that order, as a single-process script would: records written in the order they
# were made (1M rows: `TFRecordWriter.write` took 1.72 s when records were encoded per
# batch and written in shuffled order, 0.72 s in order; py-spy). Pieces live under the run's
# temporary dataset directory, are deleted once written, and the directory is removed
# before the dataset is published.
PIECES = "_pieces"
WRITE_ROWS = 8192  # rows encoded at a time by the writer: its memory is a shard's columns


# On the in-process runner every stage runs in one process, so what crosses stages stays
# in its memory up to HOLD_BYTES per process: the routed pieces (1M credit-card rows: 150
# MB; writing and reading them back took 0.4 s of 9) and the parsed batches of big files
# (:func:`parsed_once`). Past the budget, and on every other runner, they go to disk, so
# memory stays bounded.
HOLD_BYTES = 512 << 20
_HELD: dict[str, tuple[Any, int]] = {}  # path it would have on disk -> (value, bytes)
_HELD_BYTES = [0]


def _fits(size: int, budget: int) -> bool:
    return bool(budget) and _HELD_BYTES[0] + size <= budget


def _hold(path: str, value: Any, size: int, budget: int) -> bool:
    if not _fits(size, budget):
        return False
    _HELD[path] = (value, size)
    _HELD_BYTES[0] += size
    return True


def _drop(path: str) -> None:
    got = _HELD.pop(path, None)
    if got is not None:
        _HELD_BYTES[0] -= got[1]


def _nbytes(arrays: Iterable[Any]) -> int | None:
    """Bytes of numpy arrays; None when one holds objects (their size is unknown)."""
    total = 0
    for a in arrays:
        if not isinstance(a, np.ndarray) or a.dtype == object:
            return None
        total += a.nbytes
    return total


def spill(work_dir: str, key: int, pos: np.ndarray, spec: Mapping[str, Any],
          cols: Mapping[str, np.ndarray], hold_bytes: int = 0) -> dict[str, Any]:
    """Keep one routed piece (shuffled positions, record spec, columns) for the writer.

    Held in this process's memory while ``hold_bytes`` allow it (the in-process runner:
    :data:`HOLD_BYTES`), else written under ``work_dir`` as a pickle of numpy arrays:
    their buffers are copied as they are (the columns may be strings or annotations,
    which ``numpy.save`` cannot hold without pickling anyway).
    """
    piece = {"pos": np.asarray(pos, np.int64), "spec": dict(spec),
             "cols": as_encoded(spec, cols)}
    folder = Path(work_dir) / PIECES / str(key)
    path = folder / f"{uuid.uuid4().hex}.pickle"
    size = _nbytes([piece["pos"], *piece["cols"].values()])
    if size is not None and _hold(str(path), piece, size, hold_bytes):
        return {"spill": str(path), "rows": len(pos), "held": size}
    folder.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(piece, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return {"spill": str(path), "rows": len(pos)}


def unspill(piece: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any], dict[str, np.ndarray]]:
    """The positions, record spec and columns of a piece :func:`spill` kept."""
    if piece.get("held"):
        got = _HELD[piece["spill"]][0]
    else:
        with open(piece["spill"], "rb") as fh:
            got = pickle.load(fh)  # noqa: S301 - this run's own file, in its work directory
    return got["pos"], got["spec"], got["cols"]


def release(piece: dict[str, Any]) -> None:
    """Drop a written piece: from this process's memory or from disk."""
    if piece.get("held"):
        _drop(piece["spill"])
    else:
        Path(piece["spill"]).unlink(missing_ok=True)


def release_held(work_dir: str | Path) -> None:
    """Drop everything still held for ``work_dir`` (a failed or finished run's)."""
    prefix = str(Path(work_dir)) + os.sep
    for path in [p for p in _HELD if p.startswith(prefix)]:
        _drop(path)


def write_ordered(path: Path, pieces: Sequence[dict[str, Any]]) -> int:
    """Write the pieces' rows to one TFRecord file in position order; returns the rows."""
    import tensorflow as tf

    loaded = [unspill(p) for p in pieces]
    spec = loaded[0][1]
    pos = np.concatenate([p[0] for p in loaded])
    cols = {k: np.concatenate([p[2][k] for p in loaded]) for k in spec}
    del loaded
    order = np.argsort(pos, kind="stable")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        write = writer.write
        for start in range(0, len(order), WRITE_ROWS):
            rows = order[start:start + WRITE_ROWS]
            for record in encode_examples(spec, {k: v[rows] for k, v in cols.items()}):
                write(record)
    return len(order)


# A partition too big for a process's parse cache (:data:`tasks.data.sources.CACHE_LIMIT`)
# is parsed once per run, not once per stage, and so is each chunk of a big CSV: the first
# reader writes the parsed batches beside the pieces and the other three stages read them
# back (a 10M-row CSV: 23 s of parsing per stage; reading the batches back, about 1 s).
PARSED = "_parsed"


def _partition_paths(source: DataSource, files: Mapping[str, str], partition: str
                     ) -> list[str] | None:
    keys = set((source.partitions().get(partition) or {}).values())
    if not keys or not keys <= set(files):
        return None
    return sorted({files[k] for k in keys})


def read_units(source: DataSource, files: Mapping[str, str]) -> list[tuple[str, Any]]:
    """``(partition, chunk)`` units of reading, in file order.

    A chunk is a big CSV's byte range (:meth:`~tasks.data.sources.TabularSource.chunks`),
    else ``None``: the whole partition. Units are what a runner with several workers
    spreads over them: each is read, checked and routed on its own.
    """
    units = []
    for part in sorted(source.partitions()):
        chunks = source.chunks(files, part) if hasattr(source, "chunks") else [None]
        units += [(part, c) for c in chunks]
    return units


def _read(source: DataSource, files: Mapping[str, str], partition: str, batch_size: int,
          chunk: Any) -> Iterator[dict[str, Any]]:
    if chunk is None:
        return source.read_batches(files, partition, batch_size)
    return source.read_batches(files, partition, batch_size, chunk=chunk)


def parsed_once(work_dir: str, source: DataSource, files: Mapping[str, str], partition: str,
                batch_size: int, chunk: Any = None, hold_bytes: int = 0
                ) -> Iterator[dict[str, Any]]:
    """The batches of one unit (a partition or a chunk of it), parsed or read back.

    Whole partitions within the parse cache are parsed (and kept in memory by the source).
    Bigger ones, and chunks of a big file, are streamed from the source the first time,
    while a pickle stream of the batches is written to ``<work_dir>/_parsed``; once
    complete it is renamed into place and every later read, by any worker sharing the work
    directory, streams it instead (a chunk is seldom read by the same worker in every
    stage). With ``hold_bytes`` (the in-process runner, whose later stages read in this
    process) the batches are kept in memory instead while the budget allows, and written
    as above from the batch that would pass it. A write that fails (a full disk) or stops
    half-way (the consumer stopped) leaves nothing behind, and the read goes on from the
    source.
    """
    paths = _partition_paths(source, files, partition)
    stats = [(p, os.stat(p)) for p in paths or ()]
    if not stats or (chunk is None
                     and sum(st.st_size for _, st in stats) <= data_sources.CACHE_LIMIT):
        yield from _read(source, files, partition, batch_size, chunk)
        return
    ident = [(p, st.st_size, st.st_mtime_ns) for p, st in stats]
    where = None if chunk is None else [chunk.start, chunk.end]
    name = hashlib.sha256(json.dumps([ident, partition, batch_size, where]).encode()
                          ).hexdigest()
    final = Path(work_dir) / PARSED / f"{name[:24]}.pickle"
    if str(final) in _HELD:
        yield from _HELD[str(final)][0]
        return
    if final.is_file():
        with open(final, "rb") as fh:
            while True:
                try:
                    yield pickle.load(fh)
                except EOFError:
                    return
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(f"{final.name}.{uuid.uuid4().hex}.part")
    held: list[dict[str, Any]] | None = [] if hold_bytes else None
    size = 0
    out: Any = None if hold_bytes else _parse_file(part, [], paths)
    try:
        for batch in _read(source, files, partition, batch_size, chunk):
            if held is not None:
                got = _nbytes(v for k, v in batch.items() if k != "_bad")
                size += got if got is not None else hold_bytes + 1
                if _fits(size, hold_bytes):
                    held.append(batch)
                    yield batch
                    continue
                out, held = _parse_file(part, held, paths), None  # past the budget: to disk
            if out is not None:
                out = _parse_file(part, [batch], paths, out)
            yield batch
        if held is not None and not _hold(str(final), held, size, hold_bytes):
            out, held = _parse_file(part, held, paths), None  # the budget went elsewhere
        if held is None and out is not None:
            out.close()
            os.replace(part, final)
    finally:
        if out is not None and not out.closed:
            out.close()
        part.unlink(missing_ok=True)


def _parse_file(part: Path, batches: Iterable[dict[str, Any]], paths: Any,
                out: Any = None) -> Any:
    """Append ``batches`` to ``out`` (opened on ``part`` if None) and return it.

    None if the disk refused them (full): the read goes on without keeping the parse.
    """
    try:
        out = out or open(part, "wb")  # noqa: SIM115 - closed by parsed_once
        for batch in batches:
            pickle.dump(batch, out, protocol=pickle.HIGHEST_PROTOCOL)
    except OSError as err:
        log.warning("not keeping the parse of %s (%s)", paths, err)
        if out is not None:
            out.close()
        part.unlink(missing_ok=True)
        return None
    return out


class ReadPartition(beam.DoFn):
    """Emit the column batches of one read unit (rejected rows ride along)."""

    def __init__(self, source: DataSource, files: Mapping[str, str], batch_size: int,
                 work_dir: str, hold_bytes: int = 0) -> None:
        self._source = source
        self._files = dict(files)
        self._batch_size = batch_size
        self._work_dir = work_dir
        self._hold = hold_bytes
        self._rows = Metrics.counter("preprocess", "rows_valid")
        self._bad = Metrics.counter("preprocess", "rows_quarantined")

    def process(self, unit: tuple[str, Any]) -> Iterator[dict[str, Any]]:
        partition, chunk = unit
        for batch in parsed_once(self._work_dir, self._source, self._files, partition,
                                 self._batch_size, chunk, self._hold):
            self._rows.inc(len(batch["row"]))
            self._bad.inc(len(batch["_bad"]))
            yield {"partition": partition, **batch}


def _keys(batch: dict[str, Any], stratify_by: str | None) -> tuple[str, np.ndarray, Any]:
    return batch["partition"], batch["row"], batch[stratify_by] if stratify_by else None


def _locate(batch: dict[str, Any], plan: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    info = plan["partitions"][batch["partition"]]
    idx = np.searchsorted(info["rows"], batch["row"])
    return info["split"][idx], info["pos"][idx]


def _by_split(batch: dict[str, Any], plan: dict[str, Any], columns: Sequence[str]
              ) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    if not len(batch["row"]):
        return
    codes, _ = _locate(batch, plan)
    # One stable gather per column, then a slice per split: the rows of each split in
    # batch order, as boolean masks would give them, at a third of their cost.
    order = np.argsort(codes, kind="stable")
    present = np.unique(codes)
    bounds = np.searchsorted(codes[order], np.append(present, present[-1] + 1))
    grouped = {c: batch[c][order] for c in columns}
    for i, code in enumerate(present):
        yield SPLITS[code], {c: v[bounds[i]:bounds[i + 1]] for c, v in grouped.items()}


class Route(beam.DoFn):
    """Transform each batch's rows and key them by their (split, shard).

    The transformed columns a record holds (and the rows' shuffled positions) cross the
    grouping step as pieces on disk (:func:`spill`); the writer orders, encodes and writes.
    """

    def __init__(self, prep: PreprocessSpec, schema: Mapping[str, Any],
                 shards: Mapping[str, int], work_dir: str, hold_bytes: int = 0) -> None:
        self._prep = prep
        self._schema = dict(schema)
        self._shards = dict(shards)
        self._work_dir = work_dir
        self._hold = hold_bytes

    def process(self, batch: dict[str, Any], plan: dict[str, Any], stats: dict[str, Any]
                ) -> Iterator[tuple[int, dict[str, Any]]]:
        if batch["_bad"]:
            yield _BAD, {"_bad": batch["_bad"]}
        if not len(batch["row"]):
            return
        train = stats.get("train") or {"features": {}}
        classes = label_classes(self._prep, self._schema, stats)
        spec = output_spec(self._prep, self._schema, train, classes)
        cols = dict(batch)
        if PACKED in spec:
            cols[PACKED] = apply_numpy(self._prep.features, train, batch)
        if RAW_INPUTS in spec:
            cols[RAW_INPUTS] = pack_raw(self._prep, batch)
        for key, fs in spec.items():
            if key.startswith(RAW_COLUMN):
                cols[key] = batch[fs["column"]]
        if classes is not None:  # a text label is written as its class index
            cols[self._prep.label] = encode_labels(batch[self._prep.label], classes)
        codes, pos = _locate(batch, plan)
        for code in np.unique(codes):
            name = SPLITS[code]
            split_spec = for_split(spec, name)
            in_split = np.flatnonzero(codes == code)
            n_shards, n_rows = self._shards.get(name, 1), plan["sizes"][name]
            shard = pos[in_split] * n_shards // n_rows
            for s in np.unique(shard):
                sel = in_split[shard == s]
                key = int(code) * _SHARD_BASE + int(s)
                yield key, spill(self._work_dir, key, pos[sel], split_spec,
                                 {k: cols[k][sel] for k in split_spec}, self._hold)


# Text use cases: batches of lines -> token-id windows -> TFRecord pieces (instead of Route).
class TextRoute(beam.DoFn):
    """Tokenise a batch of lines and key its id windows by (split, shard).

    Takes the place of :class:`Route` when the use case has a ``tokens`` feature. Per
    batch of lines (never per line), with the training vocabulary from the full-pass
    analyzer: each line -> token ids (``<eos>`` appended); the lines of each split, in
    file order, are concatenated into one id stream and cut into windows of
    ``sequence_length + 1`` ids (input + the target shifted by one); the windows are
    keyed by (split, shard). Lines keep their file order (a language model
    needs the running text; training shuffles windows instead); which shard a batch goes
    to depends only on its first line number, so output is deterministic. A line with a
    token outside a vocabulary without ``<unk>`` is quarantined.
    """

    def __init__(self, prep: PreprocessSpec, shards: Mapping[str, int],
                 files: Mapping[str, str], work_dir: str, hold_bytes: int = 0) -> None:
        feats = [f for f in prep.features if f.transform == "tokens"]
        if len(feats) != 1 or not isinstance(feats[0], TextFeature):
            raise ValueError("a text use case has exactly one TextFeature (transform tokens)")
        self._prep = prep
        self._feature = feats[0]
        self._shards = dict(shards)
        self._files = dict(files)  # partition -> file, to name it in quarantine records
        self._work_dir = work_dir
        self._hold = hold_bytes
        self._windows = Metrics.counter("preprocess", "windows")

    def process(self, batch: dict[str, Any], plan: dict[str, Any], stats: dict[str, Any]
                ) -> Iterator[tuple[int, dict[str, Any]]]:
        f = self._feature
        bad = list(batch["_bad"])
        rows = batch["row"]
        if len(rows):
            train = stats["train"]
            vocab = train["features"][f.name]["vocab"]
            spec = output_spec(self._prep, {}, train)
            ids = line_ids(batch[f.name].tolist(), f, vocab)
            unknown = [i for i, x in enumerate(ids) if x is None]
            for i in unknown:
                toks = tokens(batch[f.name][i], f.tokenizer)
                unseen = sorted(set(toks) - set(vocab))
                bad.append({"file": self._files.get(batch["partition"]),
                            "partition": batch["partition"],
                            "line": int(rows[i]) + 1, "row": int(rows[i]), "field": f.name,
                            "value": batch[f.name][i][:80],
                            "reason": f"tokens not in the training vocabulary: {unseen[:10]}"})
            codes, _ = _locate(batch, plan)
            part = sorted(plan["partitions"]).index(batch["partition"])
            first = int(rows[0])
            for code in np.unique(codes):
                members = [ids[i] for i in np.flatnonzero(codes == code) if ids[i] is not None]
                if not members:
                    continue
                w = windows(np.concatenate(members), f.sequence_length)
                if not len(w):
                    continue
                name = SPLITS[code]
                shard = (first // self._prep.batch_size) % self._shards.get(name, 1)
                # Window order in the shard: partition, then line, then window.
                pos = part * 10**15 + first * 10**6 + np.arange(len(w), dtype=np.int64)
                self._windows.inc(len(w))
                key = int(code) * _SHARD_BASE + int(shard)
                yield key, spill(self._work_dir, key, pos, spec, {f.name: w}, self._hold)
        if bad:
            yield _BAD, {"_bad": bad}


_BINS = "_bins"  # accumulator key of the training split's histogram-bin sketch


class SplitAnalyzers(beam.CombineFn):
    """Full-pass analyzers of every split at once: accumulator is {split: accumulator}.

    With ``bins``, the training split's rows also feed a :class:`BinSketch`, finished as
    ``stats["train"]["bins"]`` (the histogram bins of every profiled column).
    """

    def __init__(self, analyzer: Analyzer, bins: BinSketch | None = None) -> None:
        self._a = analyzer
        self._bins = bins

    def create_accumulator(self) -> dict[str, Any]:
        return {}

    def add_input(self, acc: dict[str, Any], item: tuple[str, dict[str, np.ndarray]]
                  ) -> dict[str, Any]:
        split, cols = item
        acc[split] = self._a.add(acc.get(split) or self._a.create(), cols)
        if self._bins is not None and split == "train":
            acc[_BINS] = self._bins.add(acc.get(_BINS) or self._bins.create(), cols)
        return acc

    def merge_accumulators(self, accs: Iterable[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, list] = {}
        for acc in accs:
            for split, a in acc.items():
                out.setdefault(split, []).append(a)
        merged = {split: self._a.merge(parts) for split, parts in out.items()
                  if split != _BINS}
        if _BINS in out and self._bins is not None:
            merged[_BINS] = self._bins.merge(out[_BINS])
        return merged

    def extract_output(self, acc: dict[str, Any]) -> dict[str, Any]:
        out = {split: self._a.finish(a) for split, a in sorted(acc.items()) if split != _BINS}
        if self._bins is not None and "train" in out:
            out["train"]["bins"] = self._bins.finish(acc.get(_BINS) or self._bins.create())
        return out


def _histograms(batch: dict[str, Any], plan: dict[str, Any], stats: dict[str, Any],
                profiled: Sequence[ProfileColumn]) -> Iterator[dict[str, Any]]:
    """Histograms of one batch's rows per split, on the training split's bins."""
    bins = (stats.get("train") or {}).get("bins")
    if not bins or not len(batch["row"]):
        return
    codes, _ = _locate(batch, plan)
    h = Histogram(profiled, bins)
    for code, acc in sorted(h.add_coded({}, batch, codes, len(SPLITS)).items()):
        yield {SPLITS[code]: h.finish(acc)}


class MergeHistograms(beam.CombineFn):
    """Sum per-batch histograms into one set per split ({split: {column: histogram}})."""

    def create_accumulator(self) -> dict[str, Any]:
        return {}

    def add_input(self, acc: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
        for split, hists in item.items():
            acc[split] = merge_histograms(acc.get(split, {}), hists)
        return acc

    def merge_accumulators(self, accs: Iterable[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for acc in accs:
            out = self.add_input(out, acc)
        return out

    def extract_output(self, acc: dict[str, Any]) -> dict[str, Any]:
        return dict(sorted(acc.items()))


class WriteShard(beam.DoFn):
    """Write one (split, shard) group as a TFRecord file, rows in shuffled-position order.

    Encoding happens here, per shard, after the rows are ordered (:func:`write_ordered`):
    the shards are what a runner with several workers spreads over them.
    """

    def __init__(self, out_dir: str, shards: Mapping[str, int]) -> None:
        self._out = out_dir
        self._shards = dict(shards)
        self._written = Metrics.counter("preprocess", "rows_written")

    def process(self, element: tuple[int, list[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
        key, parts = element
        if key == _BAD:
            yield {"bad": [r for p in parts for r in p["_bad"]]}
            return
        if key == _HIST:
            merge = MergeHistograms()
            yield {"histograms": merge.merge_accumulators([p["histograms"] for p in parts])}
            return
        split, shard = SPLITS[key // _SHARD_BASE], key % _SHARD_BASE
        rel = shard_name(split, shard, self._shards.get(split, 1))
        rows = write_ordered(Path(self._out) / rel, parts)
        self._written.inc(rows)
        for p in parts:  # written: the pieces are not needed again
            release(p)
        yield {"split": split, "shard": shard, "file": rel, "rows": rows}


def _finalize(records: list[dict[str, Any]], work_dir: str, stats: dict[str, Any],
              plan: dict[str, Any]) -> int:
    shards = sorted((r for r in records if "file" in r), key=lambda r: r["file"])
    merge = MergeHistograms()
    histograms = merge.extract_output(merge.merge_accumulators(
        [r["histograms"] for r in records if "histograms" in r]))
    bad = sorted((b for r in records if "bad" in r for b in r["bad"]),
                 key=lambda b: (b["partition"], b["row"], str(b["field"])))
    write_json(Path(work_dir) / "_summary.json", {
        "shards": shards, "bad": bad, "stats": stats, "histograms": histograms or {},
        "sizes": plan["sizes"], "counts": plan["counts"],
    })
    return len(shards)


# --------------------------------------------------------------------------- the stages
# The graph runs as three pipelines, one after the other: plan, statistics, writing
# (which also counts the histograms). Each stage's small result (the plan, the statistics)
# is stored in the run's work directory and loaded once per worker process by the stages
# after it, instead of travelling as a side input: Beam 2.77's DaskRunner recomputes a side
# input's whole upstream graph inside every task that reads it (each read of the data
# again), so one linear pipeline per stage is what lets the read units spread over its
# workers.
STAGES = "_stages"


@dataclass(frozen=True)
class Stored:
    """A stage's result in a file; :meth:`load` reads it once per process."""

    path: str

    def load(self) -> Any:
        """The stored value (kept for the next calls in this process)."""
        st = os.stat(self.path)
        key = (self.path, st.st_size, st.st_mtime_ns)
        if key not in _LOADED:
            if len(_LOADED) >= 2:  # a run's plan and statistics
                _LOADED.clear()
            with open(self.path, "rb") as fh:
                _LOADED[key] = pickle.load(fh)
        return _LOADED[key]


_LOADED: dict[tuple[str, int, int], Any] = {}


def _store(value: Any, path: str) -> str:
    """Write a stage's result atomically (a retried bundle rewrites the same value)."""
    part = f"{path}.{uuid.uuid4().hex}.part"
    with open(part, "wb") as fh:
        pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(part, path)
    return path


class FoldUnits(beam.DoFn):
    """Read one unit and fold what ``per_batch`` makes of its batches into one accumulator.

    Only accumulators of ``combine`` leave the worker that read the unit: runners that do
    not lift combiners, such as Dask's, would otherwise move every row to one task.
    ``inputs`` are ``per_batch``'s keyword arguments; :class:`Stored` ones are loaded.
    """

    def __init__(self, read: ReadPartition, per_batch: Any, combine: beam.CombineFn,
                 **inputs: Any) -> None:
        self._read = read
        self._per_batch = per_batch
        self._combine = combine
        self._inputs = inputs

    def process(self, unit: tuple[str, Any]) -> Iterator[Any]:
        loaded = {k: v.load() if isinstance(v, Stored) else v for k, v in self._inputs.items()}
        acc = self._combine.create_accumulator()
        for batch in self._read.process(unit):
            for item in self._per_batch(batch, **loaded):
                acc = self._combine.add_input(acc, item)
        yield acc


class MergeAccumulators(beam.CombineFn):
    """``combine`` over inputs that are already its accumulators."""

    def __init__(self, combine: beam.CombineFn) -> None:
        self._combine = combine

    def create_accumulator(self) -> Any:
        return self._combine.create_accumulator()

    def add_input(self, acc: Any, item: Any) -> Any:
        return self._combine.merge_accumulators([acc, item])

    def merge_accumulators(self, accs: Iterable[Any]) -> Any:
        return self._combine.merge_accumulators(list(accs))

    def extract_output(self, acc: Any) -> Any:
        return self._combine.extract_output(acc)


def _keyed(batch: dict[str, Any], stratify_by: str | None) -> Iterator[tuple[str, Any, Any]]:
    yield _keys(batch, stratify_by)


class RouteStored(beam.DoFn):
    """:class:`Route` or :class:`TextRoute` with the plan and statistics from their files.

    With ``profiled`` columns, each batch's histograms on the training split's bins ride
    along under the key ``_HIST``: the writing stage's read of every row counts them,
    instead of a pass of their own.
    """

    def __init__(self, route: beam.DoFn, plan: Stored, stats: Stored,
                 profiled: Sequence[ProfileColumn] = ()) -> None:
        self._route = route
        self._plan = plan
        self._stats = stats
        self._profiled = list(profiled)

    def process(self, batch: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
        plan, stats = self._plan.load(), self._stats.load()
        yield from self._route.process(batch, plan, stats)
        if self._profiled:
            hists = MergeHistograms()
            acc = hists.create_accumulator()
            for item in _histograms(batch, plan, stats, self._profiled):
                acc = hists.add_input(acc, item)
            if acc:
                yield _HIST, {"histograms": acc}


@dataclass(frozen=True)
class Graph:
    """What the stages share: the source, the spec and the run's work directory."""

    source: DataSource
    files: Mapping[str, str]
    prep: PreprocessSpec
    split: SplitSpec
    work_dir: Path
    in_process: bool = False  # the in-process runner: every stage in this one process

    @property
    def hold_bytes(self) -> int:
        """What may stay in memory across stages (:func:`spill`, :func:`parsed_once`)."""
        return HOLD_BYTES if self.in_process else 0

    def units(self, p: beam.Pipeline, label: str) -> beam.PCollection:
        # Create's reshuffle is what spreads the units over a runner's workers; in one
        # process it is only a grouping step and seven more transforms to build per stage.
        return p | f"Units{label}" >> beam.Create(read_units(self.source, self.files),
                                                  reshuffle=not self.in_process)

    def reader(self) -> ReadPartition:
        return ReadPartition(self.source, self.files, self.prep.batch_size, str(self.work_dir),
                             self.hold_bytes)

    def stored(self, name: str) -> Stored:
        return Stored(str(self.work_dir / STAGES / f"{name}.pickle"))

    def profiled(self) -> list[ProfileColumn]:
        return data_columns(self.prep, self.source.schema())


def plan_stage(p: beam.Pipeline, g: Graph) -> beam.PCollection:
    """Stage 1: every unit's row ids (and strata) -> the split + shuffle plan."""
    return (
        g.units(p, "ForPlan")
        | "Keys" >> beam.ParDo(FoldUnits(g.reader(), _keyed, beam.combiners.ToListCombineFn(),
                                         stratify_by=g.split.stratify_by))
        | "CollectKeys" >> beam.CombineGlobally(
            MergeAccumulators(beam.combiners.ToListCombineFn())).without_defaults()
        | "Plan" >> beam.Map(plan_splits, g.split)
    )


def stats_stage(p: beam.Pipeline, g: Graph, plan: Stored) -> beam.PCollection:
    """Stage 2: the full-pass analyzers of every split (and the training split's bins)."""
    columns = sorted({f.name for f in g.prep.features}
                     | ({g.prep.label} if g.prep.label else set()))
    analyzer = Analyzer(list(g.prep.packed) + list(g.prep.text) + _extra_stats(g.prep),
                        g.prep.label, g.prep.label_dtype == "int64")
    profiled = g.profiled()
    combine = SplitAnalyzers(analyzer, BinSketch(profiled) if profiled else None)
    return (
        g.units(p, "ForStats")
        | "BySplit" >> beam.ParDo(FoldUnits(g.reader(), _by_split, combine, plan=plan,
                                            columns=columns))
        | "Analyze" >> beam.CombineGlobally(MergeAccumulators(combine)).without_defaults()
    )


def write_stage(p: beam.Pipeline, g: Graph, plan: Stored, stats: Stored
                ) -> dict[str, beam.PCollection]:
    """Stage 3: transform, count histograms, group by shard, encode and write shards.

    Finalising writes ``_summary.json`` (shards, quarantined rows, statistics, histograms).
    """
    if g.prep.text:
        by_part = {part: g.files[key] for part, fields in g.source.partitions().items()
                   for key in fields.values()}
        route: beam.DoFn = TextRoute(g.prep, g.split.shards, by_part, str(g.work_dir),
                                     g.hold_bytes)
    else:
        route = Route(g.prep, g.source.schema(), g.split.shards, str(g.work_dir),
                      g.hold_bytes)
    shards = (
        g.units(p, "")
        | "Read" >> beam.ParDo(g.reader())
        | "Route" >> beam.ParDo(RouteStored(route, plan, stats, g.profiled()))
        # A list per key by CombinePerKey, not GroupByKey: Beam 2.77's DaskRunner drops the
        # output of a GroupByKey followed by a ParDo.
        | "Group" >> beam.CombinePerKey(beam.combiners.ToListCombineFn())
        | "Write" >> beam.ParDo(WriteShard(str(g.work_dir), g.split.shards))
    )
    done = (
        shards
        | "CollectShards" >> beam.combiners.ToList()
        | "Finalize" >> beam.Map(_finalize_stored, str(g.work_dir), stats, plan)
    )
    return {"shards": shards, "done": done}


def _finalize_stored(records: list[dict[str, Any]], work_dir: str, stats: Stored,
                     plan: Stored) -> int:
    return _finalize(records, work_dir, stats.load(), plan.load())


def run_stages(new_pipeline: Any, g: Graph) -> dict[str, Any]:
    """Run the three stages in order on pipelines from ``new_pipeline()``.

    Returns:
        The Beam counters of the writing stage (the one that reads every row once).

    """
    (g.work_dir / STAGES).mkdir(parents=True, exist_ok=True)

    def run(attach: Any, name: str | None) -> Any:
        p = new_pipeline()
        out = attach(p)
        if name is not None:
            _ = out | f"Store{name}" >> beam.Map(_store, g.stored(name).path)
        t0 = time.perf_counter()
        result = run_to_completion(p)
        log.info("preprocessing stage %s: %.2f s", name or "write", time.perf_counter() - t0)
        return result

    plan, stats = g.stored("plan"), g.stored("stats")
    run(lambda p: plan_stage(p, g), "plan")
    run(lambda p: stats_stage(p, g, plan), "stats")
    result = run(lambda p: write_stage(p, g, plan, stats), None)
    try:
        return {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]}
    except NotImplementedError:  # the DaskRunner collects no metrics (Beam 2.77)
        return {}


def _extra_stats(prep: PreprocessSpec) -> list[Any]:
    """Statistics kept beside the transformed features, as plain ``identity`` analyzers.

    Image features are written raw, but their min/max feed the in-model rescaling; a
    regression label's mean is the baseline (mean predictor) evaluation compares against.
    """
    from dataclasses import replace

    extra = [replace(f, transform="identity") for f in prep.raw]
    if prep.label and prep.label_dtype != "int64":
        extra.append(Feature(prep.label, "identity"))
    return extra


def run_classes(source: DataSource, files: Mapping[str, str], prep: PreprocessSpec,
                stats: Mapping[str, Any]) -> ClassList | None:
    """The run's classes: the source's reading of the data, else its integer label values.

    Sources that can read class names (a label map, annotations, folders, a CIFAR
    ``batches.meta``) implement ``class_list(files) -> ClassList``; for the others the
    names of integer class labels are their values (``"0"`` .. ``"K-1"``, K from the
    source's declared ``num_classes`` or the largest value counted in any split). None
    without classes.
    """
    if hasattr(source, "class_list"):
        return source.class_list(files)
    if not prep.label or prep.label_dtype != "int64":
        return None
    declared = source.schema().get(prep.label, {}).get("num_classes")
    if declared:
        return ClassList(tuple(str(i) for i in range(int(declared))), "label values")
    seen = {k for split in SPLITS for k in (stats.get(split) or {}).get("class_counts", {})}
    return ClassList.from_values(seen)


def with_classes(schema: Mapping[str, Mapping[str, Any]], classes: ClassList | None
                 ) -> dict[str, dict[str, Any]]:
    """The source's schema with the run's class names on its detection columns."""
    out = {k: dict(v) for k, v in schema.items()}
    for col in out.values():
        if col.get("detection") and classes is not None:
            col["class_names"] = list(classes.names)
    return out


def _run_beam(source: DataSource, files: Mapping[str, str], prep: PreprocessSpec,
              split: SplitSpec, work_dir: Path, runner: str, runner_options: Sequence[str]
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the stages into ``work_dir``; return the summary and the Beam counters."""
    try:
        counters = run_stages(lambda: make_pipeline(runner, runner_options),
                              Graph(source, files, prep, split, work_dir,
                                    in_process=runner == "direct"))
    finally:
        release_held(work_dir)
    log.info("beam counters: %s", counters)
    summary = read_json(work_dir / "_summary.json")
    (work_dir / "_summary.json").unlink()
    return summary, counters


def _check_bad_rows(bad: list[dict[str, Any]], good: int, prep: PreprocessSpec,
                    quarantine: Path, origins: Mapping[str, str]) -> None:
    """Write the quarantine file; fail past ``max_bad_fraction`` naming the first bad row.

    Raises:
        PreprocessError: No rows at all, or too many bad ones.

    """
    total = good + len(bad)
    for record in bad:  # name the user's file; the snapshot copy is kept beside it
        if record["file"] in origins:
            record["snapshot_file"], record["file"] = record["file"], origins[record["file"]]
    if bad:
        quarantine.write_text("".join(json.dumps(r, default=str) + "\n" for r in bad))
        log.warning("%d bad rows quarantined to %s", len(bad), quarantine)
    elif quarantine.exists():
        quarantine.unlink()
    refused = bad_rows_message(len(bad), total, prep.max_bad_fraction, bad[0] if bad else {},
                               f"; all in {quarantine}")
    if refused:
        raise PreprocessError(refused)


def _complete_shards(work_dir: Path, split: SplitSpec) -> dict[str, list[str]]:
    """Every declared shard file (empty ones for splits smaller than their shard count)."""
    files_by_split: dict[str, list[str]] = {}
    for name, n_shards in split.shards.items():
        for s in range(n_shards):
            rel = shard_name(name, s, n_shards)
            if not (work_dir / rel).exists():
                (work_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                (work_dir / rel).touch()
            files_by_split.setdefault(name, []).append(rel)
    return files_by_split


def preprocess(
    source: DataSource,
    files: Mapping[str, str],
    prep: PreprocessSpec,
    split: SplitSpec,
    out_dir: Path,
    runner: str = "direct",
    runner_options: Sequence[str] = (),
    origins: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run the Beam preprocessing pipeline and atomically publish its outputs.

    Args:
        source: Data source of the use case.
        files: Snapshot file keys -> paths (from the ingest manifest).
        prep: Features, transforms, label and bad-row tolerance.
        split: Split, shuffle and sharding rule.
        out_dir: Final dataset directory for this run.
        runner: Beam runner (see :func:`tasks.steps.beam_runner.make_pipeline`).
        runner_options: Pass-through Beam options.
        origins: Snapshot file -> the user's file it was copied from, so messages and
            quarantine records name the file the user can fix.

    Returns:
        The dataset manifest (per-split rows and class counts, shard files, counters).

    Raises:
        PreprocessError: Too many bad rows; the quarantine file is kept beside
            ``out_dir`` and named in the message.

    """
    out_dir = Path(out_dir)
    if (out_dir / DATASET_MANIFEST).is_file():
        log.info("dataset %s already complete; reusing it", out_dir)
        return read_json(out_dir / DATASET_MANIFEST)
    quarantine = quarantine_file_for(out_dir)
    with atomic_dir(out_dir) as tmp:
        summary, counters = _run_beam(source, files, prep, split, tmp, runner, runner_options)
        for scratch in (PIECES, PARSED, STAGES):  # retried pieces, parses, stages
            shutil.rmtree(tmp / scratch, ignore_errors=True)
        _check_bad_rows(summary["bad"], sum(summary["sizes"].values()), prep, quarantine,
                        origins or {})
        files_by_split = _complete_shards(tmp, split)
        stats = summary["stats"]
        stats.get("train", {}).pop("bins", None)  # kept in each histogram instead
        for name, hists in summary.get("histograms", {}).items():
            stats.setdefault(name, {})["histograms"] = hists
        schema = source.schema()
        text_classes = label_classes(prep, schema, stats)  # a text label's, in index order
        classes = (ClassList(tuple(text_classes), "label values") if text_classes is not None
                   else run_classes(source, files, prep, stats))
        if classes is not None:
            stats[CLASSES_STATS_KEY] = classes.to_stats()
        write_json(tmp / FEATURE_SPEC,
                   output_spec(prep, with_classes(schema, classes),
                               stats.get("train", {"features": {}}), text_classes))
        write_json(tmp / STATS, stats)
        manifest = {
            "splits": {name: {"rows": summary["sizes"][name],
                              "class_counts": summary["counts"][name],
                              "files": files_by_split.get(name, [])} for name in SPLITS},
            "shards_written": summary["shards"],
            "quarantined_rows": len(summary["bad"]),
            "quarantine_file": str(quarantine) if summary["bad"] else None,
            "seed": split.seed,
            "runner": runner,
            "counters": counters,
            "feature_spec": FEATURE_SPEC,
            "stats": STATS,
        }
        write_json(tmp / DATASET_MANIFEST, manifest)
    if classes is not None:
        log.info("classes (%s): %s", classes.origin, list(classes.names))
    log.info("dataset %s: %s; classes %s", out_dir,
             {k: v["rows"] for k, v in manifest["splits"].items()},
             {k: v["class_counts"] for k, v in manifest["splits"].items()})
    return manifest
