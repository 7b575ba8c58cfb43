"""Tabular preprocessing: schema/value validation, quarantine, splits, analyzers, transforms."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline

from models.creditcard_fraud import SPEC, V_COLUMNS, generate
from tasks.data.sources import SourceError
from tasks.spec import RATIO, SplitSpec
from tasks.steps.preprocess import Graph, PreprocessError, plan_splits, preprocess, run_stages

SOURCE = SPEC.source
PREP = replace(SPEC.preprocess, batch_size=500)
SPLIT = replace(SPEC.split, shards={"train": 2, "validation": 1, "test": 1})


@pytest.fixture()
def cc_dir(tmp_path):
    d = tmp_path / "cc"
    d.mkdir()
    generate(d, 3000, seed=1)
    return d


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_generator_is_seeded_and_has_kaggle_schema(tmp_path, cc_dir):
    other = tmp_path / "again"
    other.mkdir()
    generate(other, 3000, seed=1)
    assert (other / "creditcard.csv").read_bytes() == (cc_dir / "creditcard.csv").read_bytes()
    header = SOURCE.header(str(cc_dir / "creditcard.csv"))  # quoted, like Kaggle's file
    assert header == ["Time", *V_COLUMNS, "Amount", "Class"]
    classes = [line.rsplit(",", 1)[1] for line in _lines(cc_dir / "creditcard.csv")[1:]]
    assert classes.count("1") == round(3000 * 492 / 284_807)


def test_missing_and_extra_columns_name_file_and_columns(cc_dir):
    path = cc_dir / "creditcard.csv"
    lines = _lines(path)
    lines[0] = lines[0].replace("V7", "V7x")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError, match=r"creditcard.csv: columns do not match the schema: "
                                          r"missing \['V7'\], unexpected \['V7x'\]"):
        SOURCE.validate(SOURCE.files(str(cc_dir)))


def _corrupt(cc_dir: Path) -> Path:
    """Write five kinds of bad rows into the CSV at known lines."""
    path = cc_dir / "creditcard.csv"
    lines = _lines(path)

    def set_field(line_no, col, value):
        fields = lines[line_no - 1].split(",")
        fields[(["Time", *V_COLUMNS, "Amount", "Class"]).index(col)] = value
        lines[line_no - 1] = ",".join(fields)

    set_field(5, "V3", "abc")           # non-numeric
    set_field(9, "Amount", "")          # missing
    set_field(12, "V28", "nan")         # NaN
    set_field(20, "Amount", "-5.0")     # out of range
    set_field(33, "Class", "7")         # not an allowed label
    lines[40 - 1] = ",".join(lines[40 - 1].split(",")[:-2])  # ragged: 29 fields
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_rows_are_quarantined_with_line_field_reason(cc_dir, tmp_path):
    path = _corrupt(cc_dir)
    raw_before = path.read_bytes()
    files = SOURCE.files(str(cc_dir))
    out = tmp_path / "run" / "dataset"
    with pytest.raises(PreprocessError, match=r"6 of 3000 rows are bad \(max_bad_fraction 0\); "
                                              r"first: .*creditcard.csv line 5 field 'V3': "
                                              r"not a number \(value 'abc'\)"):
        preprocess(SOURCE, files, PREP, SPLIT, out)
    assert not out.exists() and path.read_bytes() == raw_before  # raw data untouched
    q = [json.loads(x) for x in _lines(tmp_path / "run" / "dataset.quarantine.jsonl")]
    assert [(r["line"], r["field"], r["reason"]) for r in q] == [
        (5, "V3", "not a number"),
        (9, "Amount", "missing value"),
        (12, "V28", "NaN or infinite value"),
        (20, "Amount", "below minimum 0.0"),
        (33, "Class", "not one of [0, 1]"),
        (40, None, "expected 31 fields, got 29"),
    ]
    # Tolerating 1% lets the 2994 good rows through; the quarantine file stays.
    m = preprocess(SOURCE, files, replace(PREP, max_bad_fraction=0.01), SPLIT, out)
    assert m["quarantined_rows"] == 6
    assert sum(v["rows"] for v in m["splits"].values()) == 2994


def test_parquet_source_reads_the_same_rows(cc_dir, tmp_path):
    import pyarrow.parquet as pq
    from pyarrow import csv

    pq_dir = tmp_path / "pq"
    pq_dir.mkdir()
    pq.write_table(csv.read_csv(cc_dir / "creditcard.csv"), pq_dir / "creditcard.parquet")
    src = replace(SOURCE, format="parquet", layout={"all": "creditcard.parquet"})
    a = list(SOURCE.read_batches(SOURCE.files(str(cc_dir)), "all", 1000))
    b = list(src.read_batches(src.files(str(pq_dir)), "all", 1000))
    for col in ("row", "V1", "Amount", "Class"):
        np.testing.assert_array_equal(np.concatenate([x[col] for x in a]),
                                      np.concatenate([x[col] for x in b]))


def test_fraud_rule_never_trains_on_fraud_and_counts_are_exact():
    rng = np.random.default_rng(0)
    labels = (rng.random(100_000) < 0.00172).astype(np.int64)
    plan = plan_splits([("all", np.arange(100_000), labels)], SPEC.split)
    n_fraud, n_normal = int(labels.sum()), int((labels == 0).sum())
    assert plan["counts"]["train"] == {"0": round(0.6 * n_normal)} or abs(
        plan["counts"]["train"]["0"] - 0.6 * n_normal) <= 1
    assert "1" not in plan["counts"]["train"]
    for split in ("validation", "test"):
        assert abs(plan["counts"][split]["1"] - 0.5 * n_fraud) <= 1
        assert abs(plan["counts"][split]["0"] - 0.2 * n_normal) <= 1
    assert sum(plan["sizes"].values()) == 100_000


@pytest.mark.parametrize("n", [10, 999, 10_001])
def test_ratio_split_counts_within_one_row(n):
    split = SplitSpec(partition_to_split={"all": RATIO},
                      ratios={"train": 0.7, "validation": 0.15, "test": 0.15}, seed=5)
    plan = plan_splits([("all", np.arange(n), None)], split)
    for name, r in split.ratios.items():
        assert abs(plan["sizes"][name] - r * n) <= 1
    assert sum(plan["sizes"].values()) == n


def test_analyzers_equal_numpy_and_test_frauds_are_not_at_the_end(cc_dir, tmp_path):
    files = SOURCE.files(str(cc_dir))
    data = {k: np.concatenate([b[k] for b in SOURCE.read_batches(files, "all", 4096)])
            for k in ("row", "V1", "V14", "Class")}
    keys = [("all", data["row"], data["Class"])]
    plan = plan_splits(keys, SPEC.split)
    train = plan["partitions"]["all"]["split"] == 0
    work = tmp_path / "w"
    work.mkdir()
    g = Graph(SOURCE, files, PREP, SPLIT, work)
    run_stages(lambda: TestPipeline(runner=FnApiRunner(), options=PipelineOptions([])), g)
    stats = g.stored("stats").load()
    for col in ("V1", "V14"):
        st = stats["train"]["features"][col]
        x = data[col][train]
        assert st["min"] == x.min() and st["max"] == x.max()
        assert st["mean"] == pytest.approx(x.mean(), rel=1e-9, abs=1e-12)
        assert st["std"] == pytest.approx(x.std(), rel=1e-9)
    assert stats["train"]["class_counts"] == {"0": int(train.sum())}
    m = preprocess(SOURCE, files, PREP, SPLIT, tmp_path / "ds")
    import tensorflow as tf

    spec = json.loads((tmp_path / "ds" / "feature_spec.json").read_text())
    assert spec["features"]["shape"] == [28] and spec["features"]["encoding"] == "raw"
    labels, feats = [], []
    for rec in tf.data.TFRecordDataset(sorted(str(f) for f in (tmp_path / "ds" / "test")
                                              .glob("*.tfrecord"))):
        ex = tf.train.Example.FromString(rec.numpy()).features.feature
        labels.append(ex["Class"].int64_list.value[0])
        feats.append(np.frombuffer(ex["features"].bytes_list.value[0], "<f4"))
    labels, feats = np.array(labels), np.stack(feats)
    assert labels.sum() == m["splits"]["test"]["class_counts"]["1"]
    # Shuffled after concatenation: frauds are spread, not all at the end of the file.
    assert np.flatnonzero(labels).min() < 0.5 * len(labels)
    # Min-max scaling used the training split: train rows land in [0, 1].
    assert feats.shape[1] == 28


def test_test_split_keeps_raw_inputs_of_the_same_rows(cc_dir, tmp_path):
    from tasks.data.tfrecord import PACKED, RAW_COLUMN, DatasetContractError, DatasetReader
    from tasks.features.transforms import tabular_layer

    preprocess(SOURCE, SOURCE.files(str(cc_dir)), PREP, SPLIT, tmp_path / "ds")
    reader = DatasetReader.open(tmp_path / "ds")
    assert reader.feature_spec[RAW_COLUMN + "V1"]["splits"] == ["test"]
    raw, labels = reader.raw_rows("test", PACKED, "Class")
    cols = reader.arrays("test", [PACKED, "Class"])
    assert list(raw) == list(V_COLUMNS)  # one named column per feature, in order
    assert raw["V1"].shape == (reader.manifest["splits"]["test"]["rows"],)
    np.testing.assert_array_equal(labels, cols["Class"])
    # The raw rows are the unscaled CSV values: the transform layer maps them onto the
    # stored features of the same rows.
    data = np.genfromtxt(cc_dir / "creditcard.csv", delimiter=",", skip_header=1)
    v1 = data[:, 1].astype(np.float32)
    assert np.isin(raw["V1"], v1).all() and not np.isin(cols[PACKED][:, 0], v1).all()
    layer = tabular_layer(PREP.packed, dict.fromkeys(V_COLUMNS, "float32"),
                          reader.stats["train"])
    got = np.asarray(layer(raw))
    np.testing.assert_allclose(got, cols[PACKED], rtol=1e-5, atol=1e-5)
    head, _ = reader.raw_rows("test", PACKED, "Class", limit=3)
    np.testing.assert_array_equal(head["V28"], raw["V28"][:3])
    with pytest.raises(DatasetContractError, match="split 'train' has no feature"):
        reader.arrays("train", [RAW_COLUMN + "V1"])


def test_keras_transform_layer_matches_numpy():
    from tasks.features.transforms import Analyzer, apply_numpy, keras_layer
    from tasks.spec import Feature

    rng = np.random.default_rng(0)
    cols = {"a": rng.normal(3, 2, 500), "b": rng.lognormal(1, 1, 500), "c": rng.normal(0, 5, 500)}
    feats = [Feature("a", "minmax"), Feature("b", "zscore", log1p=True),
             Feature("c", "clip", clip_quantiles=(0.05, 0.95))]
    an = Analyzer(feats, None, False)
    stats = an.finish(an.merge([an.add(an.create(), {k: v[:250] for k, v in cols.items()}),
                                an.add(an.create(), {k: v[250:] for k, v in cols.items()})]))
    assert stats["features"]["c"]["clip_low"] == pytest.approx(np.quantile(cols["c"], 0.05),
                                                               abs=0.1)
    expected = apply_numpy(feats, stats, cols)
    layer = keras_layer(feats, stats)
    got = np.asarray(layer(np.stack([cols["a"], cols["b"], cols["c"]], axis=1)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert layer.__class__.from_config(layer.get_config()) is not None
    onehot = [Feature("k", "onehot"), Feature("a", "zscore")]
    k = np.array([1.0, 2.0, 2.0, 3.0, 9.0])
    st = an2 = Analyzer(onehot, None, False)
    st = an2.finish(an2.add(an2.create(), {"k": k[:4], "a": cols["a"][:4]}))
    raw = np.stack([k, cols["a"][:5]], axis=1)
    np.testing.assert_allclose(np.asarray(keras_layer(onehot, st)(raw)),
                               apply_numpy(onehot, st, {"k": k, "a": cols["a"][:5]}),
                               rtol=1e-5, atol=1e-5)


def test_onehot_and_vocab_transforms():
    from tasks.features.transforms import Analyzer, apply_numpy
    from tasks.spec import Feature

    cols = {"s": np.array(["b", "a", "b", "c", "b", "a"], dtype=object)}
    an = Analyzer([Feature("s", "onehot")], None, False)
    stats = an.finish(an.add(an.create(), cols))
    assert stats["features"]["s"]["vocab"] == ["b", "a", "c"]
    out = apply_numpy([Feature("s", "onehot")], stats, {"s": np.array(["a", "zz"], object)})
    np.testing.assert_array_equal(out, [[0, 1, 0, 0], [0, 0, 0, 1]])
    idx = apply_numpy([Feature("s", "vocab")], stats, {"s": np.array(["c"], object)})
    assert idx.tolist() == [[2.0]]


def test_split_spec_rejects_bad_ratios():
    from tasks.spec import SpecError

    with pytest.raises(SpecError, match="sum to 1"):
        SplitSpec(partition_to_split={"all": RATIO}, ratios={"train": 0.5, "test": 0.4})
    with pytest.raises(SpecError, match="no ratios"):
        SplitSpec(partition_to_split={"all": RATIO})


def _tfrecords(dataset: Path) -> dict[str, bytes]:
    return {str(p.relative_to(dataset)): p.read_bytes()
            for p in sorted(dataset.rglob("*.tfrecord"))}


def test_a_csv_above_the_parse_cache_is_parsed_once_per_run(cc_dir, tmp_path, monkeypatch):
    """Three stages read the snapshot; a big file is parsed by the first, read back after."""
    from tasks.data import sources
    from tasks.data.sources import TabularSource

    files = SOURCE.files(str(cc_dir))
    expected = preprocess(SOURCE, files, PREP, SPLIT, tmp_path / "cached" / "dataset")
    parses = []
    real = TabularSource.read_batches

    def counted(self, *args, **kwargs):
        parses.append(args[1])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(sources, "CACHE_LIMIT", 1000)  # bytes: the CSV is bigger
    monkeypatch.setattr(TabularSource, "read_batches", counted)
    sources.clear_cache()
    got = preprocess(SOURCE, files, PREP, SPLIT, tmp_path / "spilled" / "dataset")
    assert parses == ["all"]  # once, not once per stage
    assert got["splits"] == expected["splits"]
    assert _tfrecords(tmp_path / "spilled" / "dataset") == _tfrecords(
        tmp_path / "cached" / "dataset")
    assert not list((tmp_path / "spilled").rglob("_parsed"))  # never published


def test_a_parse_stopped_half_way_leaves_nothing(cc_dir, tmp_path, monkeypatch):
    from tasks.data import sources
    from tasks.steps.preprocess import PARSED, parsed_once

    monkeypatch.setattr(sources, "CACHE_LIMIT", 1000)
    files = SOURCE.files(str(cc_dir))
    reader = parsed_once(str(tmp_path), SOURCE, files, "all", 500)
    first = next(reader)
    reader.close()  # the consumer stopped: no half-written parse may be read back
    assert len(first["row"]) == 500
    assert not list((tmp_path / PARSED).iterdir())
    whole = list(parsed_once(str(tmp_path), SOURCE, files, "all", 500))
    assert [p.suffix for p in (tmp_path / PARSED).iterdir()] == [".pickle"]
    again = list(parsed_once(str(tmp_path), SOURCE, files, "all", 500))
    for a, b in zip(whole, again, strict=True):
        for col in ("row", "V1", "Amount", "Class"):
            np.testing.assert_array_equal(a[col], b[col])
    # Data below the cache size is never written out.
    monkeypatch.setattr(sources, "CACHE_LIMIT", 1 << 30)
    list(parsed_once(str(tmp_path / "small"), SOURCE, files, "all", 500))
    assert not (tmp_path / "small").exists()


def test_a_held_parse_is_read_from_memory_and_goes_to_disk_past_the_budget(
        cc_dir, tmp_path, monkeypatch):
    """The in-process runner's later stages read a big file's parse from memory."""
    from tasks.data import sources
    from tasks.data.sources import TabularSource
    from tasks.steps import preprocess as pre

    monkeypatch.setattr(sources, "CACHE_LIMIT", 1000)
    files = SOURCE.files(str(cc_dir))
    whole = list(pre.parsed_once(str(tmp_path / "disk"), SOURCE, files, "all", 500))
    held = list(pre.parsed_once(str(tmp_path / "held"), SOURCE, files, "all", 500,
                                hold_bytes=1 << 30))
    assert not (tmp_path / "held" / pre.PARSED).exists() or not list(
        (tmp_path / "held" / pre.PARSED).iterdir())
    per_batch = pre._nbytes(v for k, v in whole[0].items() if k != "_bad")
    assert pre._HELD_BYTES[0] >= per_batch * (len(whole) - 1)
    real = TabularSource.read_batches
    monkeypatch.setattr(TabularSource, "read_batches", lambda *a, **k: pytest.fail(
        "parsed again"))
    again = list(pre.parsed_once(str(tmp_path / "held"), SOURCE, files, "all", 500,
                                 hold_bytes=1 << 30))
    monkeypatch.setattr(TabularSource, "read_batches", real)
    # Within a budget of two batches: the rest goes to disk, with the batches held so far.
    pre.release_held(tmp_path / "held")
    assert not pre._HELD and pre._HELD_BYTES[0] == 0
    assert len(whole) > 3
    list(pre.parsed_once(str(tmp_path / "small"), SOURCE, files, "all", 500,
                         hold_bytes=2 * per_batch))
    assert not pre._HELD
    assert [p.suffix for p in (tmp_path / "small" / pre.PARSED).iterdir()] == [".pickle"]
    back = list(pre.parsed_once(str(tmp_path / "small"), SOURCE, files, "all", 500))
    for got in (held, again, back):
        assert len(got) == len(whole)
        for a, b in zip(whole, got, strict=True):
            for col in ("row", "V1", "Amount", "Class"):
                np.testing.assert_array_equal(a[col], b[col])


def test_a_parse_the_budget_or_the_disk_refuses_still_reads_every_batch(
        cc_dir, tmp_path, monkeypatch):
    import pickle

    from tasks.data import sources
    from tasks.steps import preprocess as pre

    monkeypatch.setattr(sources, "CACHE_LIMIT", 1000)
    files = SOURCE.files(str(cc_dir))
    whole = list(pre.parsed_once(str(tmp_path / "a"), SOURCE, files, "all", 500))
    per_batch = pre._nbytes(v for k, v in whole[0].items() if k != "_bad")
    # The budget went to something else before the parse ended: it is kept on disk.
    with monkeypatch.context() as m:
        m.setattr(pre, "_hold", lambda *a: False)
        assert len(list(pre.parsed_once(str(tmp_path / "b"), SOURCE, files, "all", 500,
                                        hold_bytes=1 << 30))) == len(whole)
    assert [p.suffix for p in (tmp_path / "b" / pre.PARSED).iterdir()] == [".pickle"]
    assert not pre._HELD
    # A full disk, with or without a budget: every batch still comes, nothing half-written
    # stays, and the later stages parse again.
    real_dump, calls = pickle.dump, []

    def dump(obj, fh, protocol=None):
        calls.append(1)
        if len(calls) > 3:
            raise OSError(28, "No space left on device")
        real_dump(obj, fh, protocol=protocol)

    monkeypatch.setattr(pickle, "dump", dump)
    for hold in (0, 2 * per_batch):
        calls.clear()
        got = list(pre.parsed_once(str(tmp_path / f"full{hold}"), SOURCE, files, "all", 500,
                                   hold_bytes=hold))
        assert len(got) == len(whole) and len(calls) == 4
        assert not list((tmp_path / f"full{hold}" / pre.PARSED).iterdir())
    assert not pre._HELD


def test_a_csv_read_in_chunks_writes_the_same_records_parsing_each_chunk_once(
        cc_dir, tmp_path, monkeypatch):
    """Cut into byte-range units (what spreads over a runner's workers): same output."""
    from tasks.data import sources
    from tasks.data.sources import TabularSource

    files = SOURCE.files(str(cc_dir))
    sources.clear_cache()
    expected = preprocess(SOURCE, files, PREP, SPLIT, tmp_path / "whole" / "dataset")
    parses = []
    real = TabularSource.read_batches

    def counted(self, *args, **kwargs):
        parses.append(kwargs.get("chunk"))
        return real(self, *args, **kwargs)

    size = Path(files["all"]).stat().st_size
    monkeypatch.setattr(sources, "CHUNK_BYTES", size // 5)
    monkeypatch.setattr(TabularSource, "read_batches", counted)
    sources.clear_cache()
    got = preprocess(SOURCE, files, PREP, SPLIT, tmp_path / "chunked" / "dataset")
    chunks = SOURCE.chunks(files, "all")
    assert len(chunks) >= 5
    assert sorted(parses, key=lambda c: c.start) == chunks  # each once, for three stages
    assert got["splits"] == expected["splits"]
    assert _tfrecords(tmp_path / "chunked" / "dataset") == _tfrecords(
        tmp_path / "whole" / "dataset")
    stats = json.loads((tmp_path / "chunked" / "dataset" / "stats.json").read_text())
    whole = json.loads((tmp_path / "whole" / "dataset" / "stats.json").read_text())
    assert stats["train"]["features"]["V1"]["mean"] == pytest.approx(
        whole["train"]["features"]["V1"]["mean"], rel=1e-12)
    assert not list((tmp_path / "chunked").rglob("_parsed"))  # never published
    assert not list((tmp_path / "chunked").rglob("_stages"))
