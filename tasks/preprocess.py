"""Beam preprocessing step: validate, full-pass statistics, split, global shuffle, TFRecords.

Elements are column batches (dicts of numpy arrays), never single rows: Beam's
per-element overhead (~40 us here) would otherwise dominate. The pipeline:

1. read each source partition as batches, quarantine rows the source flags as bad;
2. full pass over the (small) stratification column -> a deterministic split + shuffle
   plan (seeded), broadcast as a side input;
3. route every batch to (split, shard) pieces, group, sort by shuffled position, and
   write one TFRecord shard per group (raw bytes for images);
4. full-pass statistics per split (min/max/mean/std per feature, class counts).

Outputs land in a temporary directory that is renamed into place only on success.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from tasks.beam_runner import make_pipeline
from tasks.spec import DataSource, SplitSpec
from tasks.util import atomic_dir, read_json, write_json

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
MANIFEST = "manifest.json"
FEATURE_SPEC = "feature_spec.json"
STATS = "stats.json"


class PreprocessError(RuntimeError):
    """Preprocessing refused the input; the message summarises why."""


# --------------------------------------------------------------------------- planning
def _stratified_pick(strata: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k`` rows whose class proportions follow ``strata`` (largest remainder)."""
    classes, counts = np.unique(strata, return_counts=True)
    exact = k * counts / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    short = k - int(quota.sum())
    # Hand the remaining rows to the classes with the largest fractional parts;
    # a stable sort keeps ties in class order, so the plan is deterministic.
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[:short]] += 1
    picked = [
        rng.permutation(np.flatnonzero(strata == c))[:q]
        for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, np.int64)


def plan_splits(
    pieces: Iterable[tuple[str, np.ndarray, np.ndarray | None]], split: SplitSpec
) -> dict[str, Any]:
    """Deterministic split assignment and shuffled positions from row ids and strata.

    Args:
        pieces: ``(partition, row ids, stratification values or None)`` in any order.
        split: The split rule.

    Returns:
        ``{"partitions": {p: {"rows", "split", "pos"}}, "sizes": {split: n}}`` where
        ``rows`` is sorted, ``split`` holds indices into :data:`SPLITS` and ``pos`` is each
        row's position in its split's globally shuffled order.

    """
    by_part: dict[str, list[tuple[np.ndarray, np.ndarray | None]]] = {}
    for part, rows, strata in pieces:
        by_part.setdefault(part, []).append((rows, strata))
    rng = np.random.default_rng(split.seed)
    plan: dict[str, dict[str, np.ndarray]] = {}
    for part in sorted(by_part):
        rows = np.concatenate([r for r, _ in by_part[part]])
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        target = split.partition_to_split.get(part)
        if target not in SPLITS:
            raise PreprocessError(f"partition {part!r} maps to unknown split {target!r}")
        codes = np.full(len(rows), SPLITS.index(target), dtype=np.int8)
        if part == split.validation_from and split.validation_size:
            if split.validation_size >= len(rows):
                raise PreprocessError(
                    f"validation_size {split.validation_size} >= {len(rows)} rows of {part!r}"
                )
            if split.stratify_by:
                strata = np.concatenate([s for _, s in by_part[part]])[order]
                chosen = _stratified_pick(strata, split.validation_size, rng)
            else:
                chosen = np.sort(rng.permutation(len(rows))[: split.validation_size])
            codes[chosen] = SPLITS.index("validation")
        plan[part] = {"rows": rows, "split": codes, "pos": np.zeros(len(rows), np.int64)}
    sizes = {}
    for code, name in enumerate(SPLITS):
        members = [(p, np.flatnonzero(plan[p]["split"] == code)) for p in sorted(plan)]
        n = sum(len(m) for _, m in members)
        sizes[name] = n
        perm = rng.permutation(n)
        start = 0
        for p, m in members:
            plan[p]["pos"][m] = perm[start : start + len(m)]
            start += len(m)
    return {"partitions": plan, "sizes": sizes}


# --------------------------------------------------------------------------- Beam pieces
class ReadPartition(beam.DoFn):
    """Emit column batches of one source partition, quarantining bad rows."""

    BAD = "bad"

    def __init__(self, source: DataSource, files: Mapping[str, str], batch_size: int) -> None:
        self._source = source
        self._files = dict(files)
        self._batch_size = batch_size
        self._rows = Metrics.counter("preprocess", "rows_read")
        self._bad = Metrics.counter("preprocess", "rows_quarantined")

    def process(self, partition: str) -> Iterator[Any]:
        fields = self._source.partitions()[partition]
        for batch in self._source.read_batches(self._files, partition, self._batch_size):
            n = len(batch["row"])
            self._rows.inc(n)
            errors = self._source.row_errors(batch)
            if errors:
                keep = np.ones(n, bool)
                for i, field, value, reason in errors:
                    keep[i] = False
                    yield beam.pvalue.TaggedOutput(self.BAD, {
                        "file": self._files.get(fields.get(field, ""), ""),
                        "partition": partition, "row": int(batch["row"][i]),
                        "field": field, "value": value, "reason": reason,
                    })
                self._bad.inc(int((~keep).sum()))
                batch = {k: v[keep] for k, v in batch.items()}
            yield {"partition": partition, **batch}


def _route(
    batch: dict[str, Any], plan: dict[str, Any], shards: Mapping[str, int], columns: Sequence[str]
) -> Iterator[tuple[tuple[str, int], dict[str, np.ndarray]]]:
    info = plan["partitions"][batch["partition"]]
    idx = np.searchsorted(info["rows"], batch["row"])
    codes, pos = info["split"][idx], info["pos"][idx]
    for code in np.unique(codes):
        name = SPLITS[code]
        in_split = codes == code
        n_shards, n_rows = shards.get(name, 1), plan["sizes"][name]
        shard = pos[in_split] * n_shards // n_rows
        for s in np.unique(shard):
            sel = np.flatnonzero(in_split)[shard == s]
            yield (name, int(s)), {"pos": pos[sel], **{c: batch[c][sel] for c in columns}}


def _example_bytes(
    spec: Mapping[str, Mapping[str, Any]], cols: Mapping[str, np.ndarray]
) -> list[bytes]:
    import tensorflow as tf

    n = len(next(iter(cols.values())))
    out = []
    for i in range(n):
        feats = {}
        for name, fs in spec.items():
            v = cols[name][i]
            if fs["encoding"] == "raw":
                feats[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.tobytes()]))
            elif fs["encoding"] == "int64":
                feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=np.ravel(v)))
            else:
                feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=np.ravel(v)))
        ex = tf.train.Example(features=tf.train.Features(feature=feats))
        # deterministic=True sorts the feature map: identical bytes across runs.
        out.append(ex.SerializeToString(deterministic=True))
    return out


def shard_name(split: str, shard: int, n_shards: int) -> str:
    """Relative path of one TFRecord shard."""
    return f"{split}/part-{shard:05d}-of-{n_shards:05d}.tfrecord"


class WriteShard(beam.DoFn):
    """Write one (split, shard) group as a TFRecord file in shuffled-position order."""

    def __init__(self, out_dir: str, spec: Mapping[str, Any], shards: Mapping[str, int]) -> None:
        self._out = out_dir
        self._spec = dict(spec)
        self._shards = dict(shards)
        self._written = Metrics.counter("preprocess", "rows_written")

    def process(
        self, element: tuple[tuple[str, int], Iterable[dict[str, np.ndarray]]]
    ) -> Iterator[Any]:
        import tensorflow as tf

        (split, shard), parts = element
        parts = list(parts)
        pos = np.concatenate([p["pos"] for p in parts])
        order = np.argsort(pos, kind="stable")
        cols = {c: np.concatenate([p[c] for p in parts])[order] for c in self._spec}
        rel = shard_name(split, shard, self._shards.get(split, 1))
        path = Path(self._out) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with tf.io.TFRecordWriter(str(path)) as writer:
            for record in _example_bytes(self._spec, cols):
                writer.write(record)
        self._written.inc(len(order))
        yield {"split": split, "shard": shard, "file": rel, "rows": int(len(order))}


class FeatureStats(beam.CombineFn):
    """Full-pass statistics of one split: per-feature min/max/mean/std and class counts."""

    def __init__(self, spec: Mapping[str, Mapping[str, Any]]) -> None:
        self._spec = dict(spec)

    def create_accumulator(self) -> dict[str, Any]:
        return {"rows": 0, "features": {}, "classes": {}}

    def add_input(self, acc: dict[str, Any], batch: dict[str, np.ndarray]) -> dict[str, Any]:
        acc["rows"] += len(batch["pos"])
        for name, fs in self._spec.items():
            v = batch[name]
            if "num_classes" in fs:
                labels, counts = np.unique(v, return_counts=True)
                for lab, cnt in zip(labels.tolist(), counts.tolist(), strict=True):
                    acc["classes"][lab] = acc["classes"].get(lab, 0) + cnt
                continue
            x = v.astype(np.float64, copy=False)
            f = acc["features"].setdefault(
                name, {"count": 0, "sum": 0.0, "sumsq": 0.0, "min": np.inf, "max": -np.inf}
            )
            f["count"] += x.size
            f["sum"] += float(x.sum())
            f["sumsq"] += float(np.square(x).sum())
            f["min"] = min(f["min"], float(x.min()))
            f["max"] = max(f["max"], float(x.max()))
        return acc

    def merge_accumulators(self, accs: Iterable[dict[str, Any]]) -> dict[str, Any]:
        out = self.create_accumulator()
        for a in accs:
            out["rows"] += a["rows"]
            for lab, cnt in a["classes"].items():
                out["classes"][lab] = out["classes"].get(lab, 0) + cnt
            for name, f in a["features"].items():
                g = out["features"].setdefault(
                    name, {"count": 0, "sum": 0.0, "sumsq": 0.0, "min": np.inf, "max": -np.inf}
                )
                g["count"] += f["count"]
                g["sum"] += f["sum"]
                g["sumsq"] += f["sumsq"]
                g["min"] = min(g["min"], f["min"])
                g["max"] = max(g["max"], f["max"])
        return out

    def extract_output(self, acc: dict[str, Any]) -> dict[str, Any]:
        feats = {}
        for name, f in acc["features"].items():
            mean = f["sum"] / f["count"] if f["count"] else 0.0
            var = max(f["sumsq"] / f["count"] - mean * mean, 0.0) if f["count"] else 0.0
            feats[name] = {"min": f["min"], "max": f["max"], "mean": mean,
                           "std": float(np.sqrt(var)), "count": f["count"]}
        classes = {str(k): v for k, v in sorted(acc["classes"].items())}
        return {"rows": acc["rows"], "features": feats, "class_counts": classes}


def _dump(path: Path) -> beam.PTransform:
    def write(items: list[Any]) -> None:
        write_json(path, items)

    return beam.combiners.ToList() | beam.Map(write)


# --------------------------------------------------------------------------- the step
def build_pipeline(
    p: beam.Pipeline,
    source: DataSource,
    files: Mapping[str, str],
    split: SplitSpec,
    work_dir: Path,
    batch_size: int = 2048,
) -> dict[str, beam.PCollection]:
    """Attach the preprocessing graph to ``p``; side outputs are JSON files in ``work_dir``.

    Returns:
        The intermediate PCollections (``good``, ``bad``, ``routed``, ``stats``,
        ``written``) so tests can assert on them with ``assert_that``.

    """
    spec = source.feature_spec()
    columns = list(spec)
    read = (
        p
        | "Partitions" >> beam.Create(sorted(source.partitions()))
        | "Read" >> beam.ParDo(ReadPartition(source, files, batch_size)).with_outputs(
            ReadPartition.BAD, main="good"
        )
    )
    good, bad = read.good, read[ReadPartition.BAD]
    strat = split.stratify_by
    plan = (
        good
        | "Keys" >> beam.Map(lambda b: (b["partition"], b["row"], b[strat] if strat else None))
        | "CollectKeys" >> beam.combiners.ToList()
        | "Plan" >> beam.Map(plan_splits, split)
    )
    routed = good | "Route" >> beam.FlatMap(
        _route, plan=beam.pvalue.AsSingleton(plan), shards=dict(split.shards), columns=columns
    )
    stats = (
        routed
        | "BySplit" >> beam.Map(lambda kv: (kv[0][0], kv[1]))
        | "Stats" >> beam.CombinePerKey(FeatureStats(spec))
    )
    written = (
        routed
        | "Group" >> beam.GroupByKey()
        | "Write" >> beam.ParDo(WriteShard(str(work_dir), spec, split.shards))
    )
    _ = stats | "DumpStats" >> _dump(work_dir / "_stats.json")
    _ = written | "DumpShards" >> _dump(work_dir / "_shards.json")
    _ = bad | "DumpBad" >> _dump(work_dir / "_bad.json")
    return {"good": good, "bad": bad, "routed": routed, "stats": stats, "written": written}


def preprocess(
    source: DataSource,
    files: Mapping[str, str],
    split: SplitSpec,
    out_dir: Path,
    runner: str = "direct",
    runner_options: Sequence[str] = (),
    max_bad_fraction: float = 0.0,
    batch_size: int = 2048,
) -> dict[str, Any]:
    """Run the Beam preprocessing pipeline and atomically publish its outputs.

    Args:
        source: Data source of the use case.
        files: Snapshot file keys -> paths (from the ingest manifest).
        split: Split, shuffle and sharding rule.
        out_dir: Final dataset directory for this run.
        runner: Beam runner (see :func:`tasks.beam_runner.make_pipeline`).
        runner_options: Pass-through Beam options.
        max_bad_fraction: Largest tolerated fraction of quarantined rows.
        batch_size: Rows per Beam element.

    Returns:
        The dataset manifest (paths, per-split rows and class counts, statistics).

    Raises:
        PreprocessError: Too many bad rows; the quarantine file is kept beside
            ``out_dir`` and named in the message.

    """
    out_dir = Path(out_dir)
    if (out_dir / MANIFEST).is_file():
        log.info("dataset %s already complete; reusing it", out_dir)
        return read_json(out_dir / MANIFEST)
    quarantine = out_dir.parent / f"{out_dir.name}.quarantine.jsonl"
    with atomic_dir(out_dir) as tmp:
        p = make_pipeline(runner, runner_options)
        build_pipeline(p, source, files, split, tmp, batch_size)
        result = p.run()
        result.wait_until_finish()
        counters = {
            c.key.metric.name: c.committed
            for c in result.metrics().query()["counters"]
        }
        log.info("beam counters: %s", counters)
        bad = read_json(tmp / "_bad.json")
        stats = {s: v for s, v in read_json(tmp / "_stats.json")}
        shards = read_json(tmp / "_shards.json")
        total = sum(v["rows"] for v in stats.values()) + len(bad)
        if bad:
            quarantine.write_text("".join(json.dumps(r, default=str) + "\n" for r in bad))
            log.warning("%d bad rows quarantined to %s", len(bad), quarantine)
        if total == 0:
            raise PreprocessError("no rows were read from the source")
        if len(bad) / total > max_bad_fraction:
            first = bad[0]
            raise PreprocessError(
                f"{len(bad)} of {total} rows are bad (max fraction {max_bad_fraction}); "
                f"first: {first['file']} row {first['row']} field {first['field']!r}: "
                f"{first['reason']} (value {first['value']!r}); all in {quarantine}"
            )
        files_by_split: dict[str, list[str]] = {}
        for name, n_shards in split.shards.items():
            for s in range(n_shards):
                rel = shard_name(name, s, n_shards)
                if not (tmp / rel).exists():  # a split smaller than its shard count
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    (tmp / rel).touch()
                files_by_split.setdefault(name, []).append(rel)
        for f in ("_bad.json", "_stats.json", "_shards.json"):
            (tmp / f).unlink()
        spec = source.feature_spec()
        write_json(tmp / FEATURE_SPEC, spec)
        write_json(tmp / STATS, stats)
        manifest = {
            "splits": {
                name: {
                    "rows": stats.get(name, {}).get("rows", 0),
                    "class_counts": stats.get(name, {}).get("class_counts", {}),
                    "files": files_by_split.get(name, []),
                }
                for name in SPLITS
            },
            "shards_written": sorted(shards, key=lambda r: r["file"]),
            "quarantined_rows": len(bad),
            "seed": split.seed,
            "runner": runner,
            "counters": counters,
            "feature_spec": FEATURE_SPEC,
            "stats": STATS,
        }
        write_json(tmp / MANIFEST, manifest)
    log.info("dataset %s: %s", out_dir, {k: v["rows"] for k, v in manifest["splits"].items()})
    return manifest
