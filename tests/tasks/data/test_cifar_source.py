"""CIFAR-10 python batches: the real format written by the test, checks, quarantine, Beam."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from tasks.data.cifar import (
    META,
    TEST_FILES,
    TRAIN_FILES,
    CifarSource,
    read_batch_file,
    write_batch_file,
    write_meta,
)
from tasks.data.sources import SourceError

NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
         "truck")


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _write_real_layout(path: Path, obj: dict) -> None:
    """Pickle a dict the way the CIFAR-10 python files hold it (protocol 2, byte keys)."""
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


@pytest.fixture()
def cifar_dir(tmp_path: Path) -> Path:
    """Five training batches of 12 images and a test batch of 10, plus batches.meta."""
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for i, name in enumerate(TRAIN_FILES):
        write_batch_file(d / name, _images(12, i), np.arange(12) % 10,
                         f"training batch {i + 1} of 5")
    write_batch_file(d / TEST_FILES[0], _images(10, 9), np.arange(10), "testing batch 1 of 1")
    write_meta(d / META, NAMES, 12)
    return d


def test_layout_is_cifars_channel_planar_rows(tmp_path):
    """The first 1024 bytes of a row are the red plane, row-major, as CIFAR documents."""
    img = _images(2, 0)
    path = write_batch_file(tmp_path / "data_batch_1", img, [3, 7], "b")
    with open(path, "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    assert set(raw) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert raw[b"data"].shape == (2, 3072) and raw[b"data"].dtype == np.uint8
    assert np.array_equal(raw[b"data"][1, :1024], img[1, :, :, 0].ravel())
    assert np.array_equal(raw[b"data"][1, 2048:], img[1, :, :, 2].ravel())
    images, labels = read_batch_file(str(path))
    assert np.array_equal(images, img) and list(labels) == [3, 7]


def test_reads_text_keys_and_numpy_labels(tmp_path):
    img = _images(3, 1)
    data = img.transpose(0, 3, 1, 2).reshape(3, -1)
    _write_real_layout(tmp_path / "b", {"data": data, "labels": np.array([1, 2, 3])})
    images, labels = read_batch_file(str(tmp_path / "b"))
    assert np.array_equal(images, img) and [int(v) for v in labels] == [1, 2, 3]


def test_files_validate_partitions_and_read(cifar_dir):
    src = CifarSource(default_location=str(cifar_dir))
    files = src.files(str(cifar_dir))
    assert set(files) == {*TRAIN_FILES, *TEST_FILES, META}
    facts = src.validate(files)
    assert facts["train"] == {"rows": 60} and facts["test"] == {"rows": 10}
    assert facts["label_names"] == list(NAMES)
    assert src.partitions() == {"train": {n: n for n in TRAIN_FILES},
                                "test": {"test_batch": "test_batch"}}
    batches = list(src.read_batches(files, "train", 7))
    rows = np.concatenate([b["row"] for b in batches])
    assert np.array_equal(rows, np.arange(60))  # numbered across the five files
    img = np.concatenate([b["image"] for b in batches])
    assert img.shape == (60, 32, 32, 3) and img.dtype == np.uint8
    assert np.array_equal(img[12:24], _images(12, 1))  # data_batch_2, in file order
    assert src.schema()["image"] == {"dtype": "uint8", "shape": [32, 32, 3]}


def test_missing_file_is_named(cifar_dir):
    (cifar_dir / "data_batch_3").unlink()
    with pytest.raises(SourceError, match="missing CIFAR batch file data_batch_3"):
        CifarSource(default_location="").files(str(cifar_dir))


@pytest.mark.parametrize(("content", "reason"), [
    (b"this is not a pickle", "not a readable CIFAR pickle"),
    (None, "not a readable CIFAR pickle"),  # truncated
    ({b"labels": [1]}, "no 'data' entry"),
    ({b"data": np.zeros((2, 3072), np.uint8)}, "no 'labels' entry"),
    ({b"data": np.zeros((2, 1024), np.uint8), b"labels": [1, 2]}, r"N x 3072.*\[2, 1024\]"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [1, 2]}, "must be uint8"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, "1 labels for 2 images"),
    ([1, 2, 3], "expected a pickled dict"),
])
def test_malformed_file_fails_ingest_with_file_and_reason(cifar_dir, content, reason):
    bad = cifar_dir / "data_batch_4"
    if content is None:
        bad.write_bytes(bad.read_bytes()[:500])
    elif isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        _write_real_layout(bad, content)
    src = CifarSource(default_location="")
    with pytest.raises(SourceError, match=reason) as err:
        src.validate(src.files(str(cifar_dir)))
    assert str(bad) in str(err.value)


def test_pickle_that_would_run_code_is_refused(cifar_dir, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    _write_real_layout(cifar_dir / "test_batch", {b"data": Evil(), b"labels": []})
    src = CifarSource(default_location="")
    with pytest.raises(SourceError, match=r"test_batch: .*refuses to load posix.mkdir"):
        src.validate(src.files(str(cifar_dir)))
    assert not marker.exists()


def test_bad_labels_are_quarantined_with_file_and_row(cifar_dir):
    labels = [0, 10, 2, -1, "cat", 5, 6, 7, 8, 9, 1, 2]
    write_batch_file_raw = {b"data": _images(12, 5).transpose(0, 3, 1, 2).reshape(12, -1),
                            b"labels": labels}
    _write_real_layout(cifar_dir / "data_batch_2", write_batch_file_raw)
    src = CifarSource(default_location="")
    files = src.files(str(cifar_dir))
    src.validate(files)  # row problems do not fail the file
    batches = list(src.read_batches(files, "train", 100))
    bad = [r for b in batches for r in b["_bad"]]
    assert [(r["file"], r["row"], r["file_row"], r["value"]) for r in bad] == [
        (files["data_batch_2"], 13, 1, 10), (files["data_batch_2"], 15, 3, -1),
        (files["data_batch_2"], 16, 4, "cat")]
    assert all("label is not an integer in [0, 10)" == r["reason"] for r in bad)
    rows = np.concatenate([b["row"] for b in batches])
    assert len(rows) == 57 and not {13, 15, 16} & set(rows.tolist())


def test_beam_preprocessing_writes_raw_colour_images(cifar_dir, tmp_path):
    """Through the platform's Beam pipeline: raw (32, 32, 3) bytes back from TFRecords."""
    from tasks.data.tfrecord import DatasetReader
    from tasks.spec import Feature, PreprocessSpec, SplitSpec
    from tasks.steps.preprocess import preprocess

    src = CifarSource(default_location="")
    files = src.files(str(cifar_dir))
    prep = PreprocessSpec(features=(Feature("image", "uint8"),), label="label")
    split = SplitSpec(validation_size=10, stratify_by="label",
                      shards={"train": 2, "validation": 1, "test": 1})
    manifest = preprocess(src, files, prep, split, tmp_path / "ds")
    assert {k: v["rows"] for k, v in manifest["splits"].items()} == {
        "train": 50, "validation": 10, "test": 10}
    spec = json.loads((tmp_path / "ds" / "feature_spec.json").read_text())
    assert spec["image"] == {"dtype": "uint8", "shape": [32, 32, 3], "encoding": "raw"}
    x, y = next(iter(DatasetReader.open(tmp_path / "ds").split("test", "image", "label", 100)))
    assert x.shape == (10, 32, 32, 3)
    test_images, test_labels = read_batch_file(files["test_batch"])
    # the test split is shuffled: match every image back to its source row
    for img, lab in zip(x.numpy().astype(np.uint8), y.numpy(), strict=True):
        hit = [i for i in range(10) if np.array_equal(test_images[i], img)]
        assert len(hit) == 1 and test_labels[hit[0]] == lab


def test_bad_label_rows_reach_the_quarantine_file(cifar_dir, tmp_path):
    from tasks.spec import Feature, PreprocessSpec, SplitSpec
    from tasks.steps.preprocess import PreprocessError, preprocess

    labels = list(range(10)) + [11, 3]
    _write_real_layout(cifar_dir / "data_batch_5", {
        b"data": _images(12, 4).transpose(0, 3, 1, 2).reshape(12, -1), b"labels": labels})
    src = CifarSource(default_location="")
    files = src.files(str(cifar_dir))
    prep = PreprocessSpec(features=(Feature("image", "uint8"),), label="label")
    with pytest.raises(PreprocessError, match=r"data_batch_5 row 58 field 'label'"):
        preprocess(src, files, prep, SplitSpec(validation_size=10), tmp_path / "ds")
    lines = (tmp_path / "ds.quarantine.jsonl").read_text().splitlines()
    assert [json.loads(line)["value"] for line in lines] == [11]
    assert not (tmp_path / "ds").exists()
    manifest = preprocess(src, files, PreprocessSpec(
        features=(Feature("image", "uint8"),), label="label", max_bad_fraction=0.05),
        SplitSpec(validation_size=10), tmp_path / "ok")
    assert manifest["quarantined_rows"] == 1 and manifest["splits"]["train"]["rows"] == 49
