import json
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tasks.data.idx import write_idx
from tasks.data.sources import IdxImageSource
from tasks.spec import Feature, PreprocessSpec, SplitSpec
from tasks.steps.ingest import ingest, snapshot_files
from tasks.steps.preprocess import (
    Graph,
    PreprocessError,
    _store,
    plan_splits,
    preprocess,
    run_stages,
    stats_stage,
    write_stage,
)

PREP = PreprocessSpec(features=(Feature("image", "uint8"),), label="label", batch_size=64)

SPLIT = SplitSpec(validation_size=60, stratify_by="label", seed=7,
                  shards={"train": 3, "validation": 1, "test": 2})


def _pipeline():
    # The in-process runner, chosen explicitly (no Prism download attempt).
    return TestPipeline(runner=FnApiRunner(), options=PipelineOptions([]))


@pytest.fixture()
def snapshot(mnist_dir, tmp_path):
    dest = tmp_path / "raw"
    ingest(IdxImageSource(), str(mnist_dir), dest)
    return snapshot_files(dest)


def _load(files):
    from tasks.data.idx import read_idx
    return {k: read_idx(v) for k, v in files.items()}


def test_stats_and_counts_equal_numpy(snapshot, tmp_path):
    raw = _load(snapshot)
    plan = plan_splits([("train", np.arange(300), raw["train.label"].astype(np.int64)),
                        ("test", np.arange(100), raw["test.label"].astype(np.int64))], SPLIT)
    val_rows = np.flatnonzero(plan["partitions"]["train"]["split"] == 1)
    train_rows = np.flatnonzero(plan["partitions"]["train"]["split"] == 0)
    train_imgs = raw["train.image"][train_rows].astype(np.float64)
    work = tmp_path / "work"
    g = Graph(IdxImageSource(), snapshot, PREP, SPLIT, work)
    (work / "_stages").mkdir(parents=True)
    stored_plan = g.stored("plan")
    _store(plan, stored_plan.path)  # the plan the first stage makes from the same rows
    with _pipeline() as p:
        stats = stats_stage(p, g, stored_plan)

        def check_stats(items):
            (stats,) = items
            assert set(stats) == {"train", "validation", "test"}
            img = stats["train"]["features"]["image"]
            assert img["count"] == train_imgs.size
            assert img["min"] == train_imgs.min() and img["max"] == train_imgs.max()
            assert img["mean"] == pytest.approx(train_imgs.mean(), rel=1e-9)
            assert img["std"] == pytest.approx(train_imgs.std(), rel=1e-6)
            assert stats["validation"]["rows"] == 60 == len(val_rows)
            assert stats["train"]["rows"] == 240
            assert stats["test"]["rows"] == 100
            labels, counts = np.unique(raw["test.label"], return_counts=True)
            assert stats["test"]["class_counts"] == {
                str(k): int(v) for k, v in zip(labels, counts, strict=True)}

        assert_that(stats, check_stats, label="stats")
    # All three stages, each its own pipeline; the writing stage checked with assert_that.
    run_stages(_pipeline, g)
    assert g.stored("plan").load()["sizes"] == plan["sizes"]
    with _pipeline() as p:
        out = write_stage(p, g, g.stored("plan"), g.stored("stats"))
        shard_rows = (out["shards"] | beam.Filter(lambda r: "file" in r)
                      | beam.Map(lambda r: (r["split"], r["shard"], r["rows"])))
        assert_that(shard_rows, equal_to([("train", 0, 80), ("train", 1, 80), ("train", 2, 80),
                                          ("validation", 0, 60), ("test", 0, 50),
                                          ("test", 1, 50)]), label="shards")
        assert_that(out["shards"] | beam.Filter(lambda r: "bad" in r), equal_to([]),
                    label="no_bad")


def test_plan_is_stratified_exact_and_deterministic():
    rng = np.random.default_rng(0)
    labels = rng.choice(10, size=60_000, p=np.r_[np.full(9, 0.105), 0.055])
    split = SplitSpec(validation_size=5000, stratify_by="label", seed=3)
    a = plan_splits([("train", np.arange(60_000), labels)], split)
    # Pieces may arrive in any order and chunking: same plan.
    pieces = [("train", np.arange(s, min(s + 7000, 60_000)), labels[s:s + 7000])
              for s in range(0, 60_000, 7000)][::-1]
    b = plan_splits(pieces, split)
    for k in ("rows", "split", "pos"):
        np.testing.assert_array_equal(a["partitions"]["train"][k], b["partitions"]["train"][k])
    codes = a["partitions"]["train"]["split"]
    assert (codes == 1).sum() == 5000 and a["sizes"] == {"train": 55000, "validation": 5000,
                                                         "test": 0}
    for c in range(10):
        expected = 5000 * (labels == c).sum() / len(labels)
        assert abs((labels[codes == 1] == c).sum() - expected) <= 1
    # positions are a permutation of each split
    pos = a["partitions"]["train"]["pos"]
    assert sorted(pos[codes == 0].tolist()) == list(range(55000))
    c = plan_splits([("train", np.arange(60_000), labels)], SplitSpec(
        validation_size=5000, stratify_by="label", seed=4))
    assert not np.array_equal(c["partitions"]["train"]["split"], codes)


def _read_split(dataset_dir: Path, split: str):
    import tensorflow as tf
    spec = json.loads((dataset_dir / "feature_spec.json").read_text())
    assert spec["image"]["encoding"] == "raw"
    imgs, labels = [], []
    for f in sorted((dataset_dir / split).glob("*.tfrecord")):
        for rec in tf.data.TFRecordDataset(str(f)):
            ex = tf.train.Example.FromString(rec.numpy())
            imgs.append(np.frombuffer(ex.features.feature["image"].bytes_list.value[0], np.uint8))
            labels.append(ex.features.feature["label"].int64_list.value[0])
    return np.stack(imgs).reshape(-1, 28, 28), np.array(labels)


def test_preprocess_outputs_shuffled_complete_and_byte_identical(snapshot, tmp_path):
    m1 = preprocess(IdxImageSource(), snapshot, PREP, SPLIT, tmp_path / "a" / "dataset")
    m2 = preprocess(IdxImageSource(), snapshot, PREP, SPLIT, tmp_path / "b" / "dataset")
    assert {k: v["rows"] for k, v in m1["splits"].items()} == {
        "train": 240, "validation": 60, "test": 100}
    assert m2["splits"] == m1["splits"]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.tfrecord"))
    assert [str(f) for f in files] == [
        "dataset/test/part-00000-of-00002.tfrecord", "dataset/test/part-00001-of-00002.tfrecord",
        "dataset/train/part-00000-of-00003.tfrecord", "dataset/train/part-00001-of-00003.tfrecord",
        "dataset/train/part-00002-of-00003.tfrecord",
        "dataset/validation/part-00000-of-00001.tfrecord"]
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    # The records crossed the grouping step on disk; none of those pieces is published.
    assert not list((tmp_path / "a").rglob("_pieces")) and not list((tmp_path / "a").rglob(
        "*.npy"))
    raw = _load(snapshot)
    test_imgs, test_labels = _read_split(tmp_path / "a" / "dataset", "test")
    # Same multiset of (image, label) rows as the raw test file, but globally shuffled.
    def rows(images, labels):
        return sorted(i.tobytes() + bytes([int(y)]) for i, y in zip(images, labels, strict=True))

    assert rows(test_imgs, test_labels) == rows(raw["test.image"], raw["test.label"])
    assert not np.array_equal(test_labels, raw["test.label"])
    # Re-running for the same output is a no-op that returns the same manifest.
    assert preprocess(IdxImageSource(), snapshot, PREP, SPLIT, tmp_path / "a" / "dataset") == m1


def test_bad_labels_are_quarantined_and_fail_with_clear_error(snapshot, tmp_path):
    labels = _load(snapshot)["train.label"].copy()
    labels[[5, 17]] = [11, 200]
    write_idx(Path(snapshot["train.label"]), labels)
    out = tmp_path / "run" / "dataset"
    with pytest.raises(PreprocessError, match=r"2 of 400 rows are bad .*train-labels-idx1-ubyte"
                                              r".*row 5 field 'label'.*outside \[0, 10\)"):
        preprocess(IdxImageSource(), snapshot, PREP, SPLIT, out)
    assert not out.exists()
    q = [json.loads(line) for line in (tmp_path / "run" / "dataset.quarantine.jsonl")
         .read_text().splitlines()]
    assert [(r["row"], r["field"], r["value"]) for r in q] == [(5, "label", 11),
                                                              (17, "label", 200)]
    # With a tolerance the good rows go through and the bad ones stay quarantined.
    from dataclasses import replace
    m = preprocess(IdxImageSource(), snapshot, replace(PREP, max_bad_fraction=0.01), SPLIT, out)
    assert m["quarantined_rows"] == 2
    assert sum(v["rows"] for v in m["splits"].values()) == 398


def test_spilled_pieces_round_trip_and_are_written_in_position_order(tmp_path):
    from tasks.data.tfrecord import encode_examples
    from tasks.steps.preprocess import spill, unspill, write_ordered

    spec = {"x": {"encoding": "float", "dtype": "float32", "shape": []},
            "img": {"encoding": "raw", "dtype": "uint8", "shape": [2]},
            "word": {"encoding": "bytes", "dtype": "string", "shape": []}}
    cols = {"x": np.array([0.5, 1.5, 2.5, 3.5], np.float32),
            "img": np.arange(8, dtype=np.uint8).reshape(4, 2),
            "word": np.array(["", "b", "\u00e9t\u00e9", "d\n"], object)}
    piece = spill(str(tmp_path), 7, np.array([3, 1, 0, 2]), spec, cols)
    assert piece["rows"] == 4 and Path(piece["spill"]).parent.name == "7"
    pos, got_spec, back = unspill(piece)
    assert pos.tolist() == [3, 1, 0, 2] and got_spec == spec
    assert all(np.array_equal(back[k], cols[k]) for k in spec)
    # Two pieces of one shard: the file holds every row once, in position order, as the
    # encoder makes them.
    other = spill(str(tmp_path), 7, np.array([5, 4]), spec,
                  {k: v[:2] for k, v in cols.items()})
    out = tmp_path / "shard.tfrecord"
    assert write_ordered(out, [piece, other]) == 6
    by_pos = {3: 0, 1: 1, 0: 2, 2: 3}
    order = [by_pos[p] for p in range(4)]
    want = (encode_examples(spec, {k: v[order] for k, v in cols.items()})
            + encode_examples(spec, {k: v[[1, 0]] for k, v in cols.items()}))
    import tensorflow as tf

    assert [r.numpy() for r in tf.data.TFRecordDataset(str(out))] == want


def test_in_process_pieces_are_held_within_budget_with_the_same_bytes(snapshot, tmp_path,
                                                                      monkeypatch):
    from tasks.steps import preprocess as pre

    spec = {"x": {"encoding": "float", "dtype": "float32", "shape": []}}
    # Held while the budget allows, then spilled; objects (strings) always go to disk.
    held = pre.spill(str(tmp_path), 1, np.arange(4), spec, {"x": np.ones(4)}, hold_bytes=60)
    spilled = pre.spill(str(tmp_path), 1, np.arange(4), spec, {"x": np.ones(4)}, hold_bytes=60)
    assert held["held"] == 4 * 8 + 4 * 4 and not Path(held["spill"]).exists()
    assert "held" not in spilled and Path(spilled["spill"]).exists()
    words = {"w": {"encoding": "bytes", "dtype": "string", "shape": []}}
    assert "held" not in pre.spill(str(tmp_path), 2, np.arange(1), words,
                                   {"w": np.array(["a"], object)}, hold_bytes=1 << 20)
    assert np.array_equal(pre.unspill(held)[2]["x"], np.ones(4, np.float32))
    pre.release(held)
    pre.release_held(tmp_path)
    assert not pre._HELD and pre._HELD_BYTES[0] == 0

    # A run whose pieces are all held, one whose pieces all went to disk and one split
    # between both write the same bytes, and leave nothing held.
    runs = {}
    for name, budget in (("held", pre.HOLD_BYTES), ("disk", 0), ("both", 20_000)):
        monkeypatch.setattr(pre, "HOLD_BYTES", budget)
        seen = []
        real_spill = pre.spill
        monkeypatch.setattr(pre, "spill", lambda *a, _s=seen, _f=real_spill: _s.append(
            _f(*a)) or _s[-1])
        preprocess(IdxImageSource(), snapshot, PREP, SPLIT, tmp_path / name / "dataset")
        runs[name] = {p.relative_to(tmp_path / name): p.read_bytes()
                      for p in (tmp_path / name).rglob("*.tfrecord")}
        kinds = {"held" in p for p in seen}
        assert kinds == {"held": {True}, "disk": {False}, "both": {True, False}}[name], name
        assert not pre._HELD and pre._HELD_BYTES[0] == 0
    assert runs["held"] == runs["disk"] == runs["both"] and len(runs["held"]) == 6

    # A run that fails after routing releases what it held.
    monkeypatch.setattr(pre, "HOLD_BYTES", 1 << 30)
    monkeypatch.setattr(pre, "write_ordered", lambda *a: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(Exception, match="disk"):
        preprocess(IdxImageSource(), snapshot, PREP, SPLIT, tmp_path / "failed" / "dataset")
    assert not pre._HELD and pre._HELD_BYTES[0] == 0
