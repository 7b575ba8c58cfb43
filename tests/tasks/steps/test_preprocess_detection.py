"""Beam preprocessing of a Pascal VOC folder: Object Detection API records and quarantine."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tasks.data.detection import decode
from tasks.data.tfrecord import split_files
from tasks.data.voc import VocDetectionSource, write_annotation
from tasks.spec import Feature, PreprocessSpec, SplitSpec
from tasks.steps.ingest import ingest, snapshot_files, snapshot_origins
from tasks.steps.preprocess import PreprocessError, preprocess

CLASSES = ("cat", "dog")
PREP = PreprocessSpec(features=(Feature("scene", "detection"),), label=None,
                      max_bad_fraction=0.2, batch_size=4)
SPLIT = SplitSpec(validation_size=2, seed=1, shards={"train": 1, "validation": 1, "test": 1})


@pytest.fixture()
def voc(tmp_path):
    root = tmp_path / "voc"
    for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = [f"im{i}" for i in range(12)]
    for i, sid in enumerate(ids):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
            root / "JPEGImages" / f"{sid}.jpg", "JPEG")
        name = "bird" if sid == "im3" else CLASSES[i % 2]  # im3: an unknown class
        write_annotation(root / "Annotations" / f"{sid}.xml", f"{sid}.jpg", 50, 40,
                         [{"name": name, "box": (2 + i, 3, 30 + i, 35)}])
    (root / "ImageSets/Main/trainval.txt").write_text("\n".join(ids[:10]) + "\n")
    (root / "ImageSets/Main/test.txt").write_text("\n".join(ids[10:]) + "\n")
    return root


def test_voc_folder_becomes_od_records_and_bad_images_are_quarantined(voc, tmp_path):
    src = VocDetectionSource(class_names=CLASSES, default_location=str(voc))
    snap = tmp_path / "raw"
    ingest(src, str(voc), snap)
    out = tmp_path / "dataset"
    manifest = preprocess(src, snapshot_files(snap), PREP, SPLIT, out,
                          origins=snapshot_origins(snap))
    assert {k: v["rows"] for k, v in manifest["splits"].items()} == {
        "train": 7, "validation": 2, "test": 2}
    spec = json.loads((out / "feature_spec.json").read_text())
    assert spec["scene"]["encoding"] == "tf_object_detection"
    assert spec["scene"]["class_names"] == list(CLASSES)
    scenes = [decode(r.numpy()) for split in ("train", "validation", "test")
              for r in tf.data.TFRecordDataset(split_files(out, split))]
    assert sorted(s.source_id for s in scenes) == sorted(
        f"im{i}" for i in range(12) if i != 3)
    one = next(s for s in scenes if s.source_id == "im5")
    assert one.texts == ("dog",) and one.labels == (2,)
    np.testing.assert_allclose(one.boxes, [[7 / 50, 3 / 40, 35 / 50, 35 / 40]], rtol=1e-6)
    assert one.encoded == (voc / "JPEGImages" / "im5.jpg").read_bytes()
    (bad,) = [json.loads(line) for line in
              open(manifest["quarantine_file"], encoding="utf-8")]
    assert bad["file"] == str((voc / "Annotations" / "im3.xml").resolve())
    assert "unknown class name 'bird'" in bad["reason"] and bad["value"] == "im3"


def test_too_many_bad_images_fail_naming_the_first(voc, tmp_path):
    for i in (0, 1, 2):
        (voc / "Annotations" / f"im{i}.xml").write_text("<annotation>")
    src = VocDetectionSource(class_names=CLASSES, default_location=str(voc))
    snap = tmp_path / "raw"
    ingest(src, str(voc), snap)
    with pytest.raises(PreprocessError, match=r"4 of 12 rows are bad.*im0\.xml.*malformed XML"):
        preprocess(src, snapshot_files(snap), PREP, SPLIT, tmp_path / "dataset",
                   origins=snapshot_origins(snap))


def test_classes_read_from_the_annotations_are_recorded_with_the_run(voc, tmp_path):
    """No class list in the spec: the annotations' names (bird included), sorted."""
    src = VocDetectionSource(default_location=str(voc))
    snap = tmp_path / "raw"
    manifest = ingest(src, str(voc), snap)
    assert manifest["facts"]["class_names"] == ["bird", "cat", "dog"]
    out = tmp_path / "dataset"
    manifest = preprocess(src, snapshot_files(snap), PREP, SPLIT, out)
    assert manifest["quarantined_rows"] == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["classes"] == {"names": ["bird", "cat", "dog"], "origin": "annotations"}
    spec = json.loads((out / "feature_spec.json").read_text())
    assert spec["scene"]["class_names"] == ["bird", "cat", "dog"]
    scenes = {decode(r.numpy()).source_id: decode(r.numpy())
              for split in ("train", "validation", "test")
              for r in tf.data.TFRecordDataset(split_files(out, split))}
    assert scenes["im3"].labels == (1,) and scenes["im5"].labels == (3,)
