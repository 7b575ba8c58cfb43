"""The Pascal VOC source on small folders written in the real layouts (VOC and pets)."""

import io

import numpy as np
import pytest
from PIL import Image

from tasks.data.sources import SourceError
from tasks.data.voc import VocDetectionSource, parse_annotation, write_annotation

CLASSES = ("cat", "dog")


def _jpeg(path, w, h, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path, "JPEG")


VOC_XML = """<annotation>
  <folder>VOC2007</folder>
  <filename>{name}.jpg</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
  <segmented>0</segmented>
  {objects}
</annotation>"""
OBJ = """<object><name>{cls}</name><pose>Left</pose><truncated>0</truncated>
    <difficult>{diff}</difficult>
    <bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox>
  </object>"""


def _voc(tmp_path):
    """Six train images (four with a problem) and one test image."""
    ann, img, lists = tmp_path / "Annotations", tmp_path / "JPEGImages", \
        tmp_path / "ImageSets" / "Main"
    names = {"train": "trainval.txt", "test": "test.txt"}
    for d in (ann, img, lists):
        d.mkdir(parents=True, exist_ok=True)

    def xml(name, w, h, objs):
        body = "".join(OBJ.format(cls=c, b=b, diff=d) for c, b, d in objs)
        (ann / f"{name}.xml").write_text(VOC_XML.format(name=name, w=w, h=h, objects=body))

    for i, name in enumerate(["good1", "good2", "broken", "outside", "unknown", "noimage",
                              "test1"]):
        if name != "noimage":
            _jpeg(img / f"{name}.jpg", 50, 40, seed=i)
    xml("good1", 50, 40, [("cat", (1, 1, 25, 20), 0), ("dog", (26, 10, 50, 40), 1)])
    xml("good2", 50, 40, [("dog", (5, 5, 45, 35), 0)])
    (ann / "broken.xml").write_text("<annotation><size><width>50</width>")  # truncated XML
    xml("outside", 50, 40, [("cat", (10, 10, 60, 30), 0)])
    xml("unknown", 50, 40, [("cat", (1, 1, 10, 10), 0), ("horse", (5, 5, 20, 20), 0)])
    xml("noimage", 50, 40, [("cat", (1, 1, 10, 10), 0)])
    xml("test1", 50, 40, [("cat", (2, 3, 30, 30), 0)])
    train = ["good1", "good2", "broken", "outside", "unknown", "noimage"]
    (lists / names["train"]).write_text("".join(f"{n}\n" for n in train))
    (lists / names["test"]).write_text("test1\n")
    return tmp_path


def test_reads_boxes_and_quarantines_each_bad_image_with_file_and_reason(tmp_path):
    # (the pets layout as the real data ships it: tests/tasks/data/test_real_formats.py)
    src = VocDetectionSource(class_names=CLASSES, default_location=str(tmp_path))
    files = src.files(str(_voc(tmp_path)))
    facts = src.validate(files)
    assert facts["class_names"] == ["cat", "dog"] and facts["class_origin"] == "spec"
    assert facts["train"] == {"rows": 6, "with_annotation": 6, "with_image": 5}
    assert facts["test"]["rows"] == 1
    (batch,) = list(src.read_batches(files, "train", 100))
    assert batch["row"].tolist() == [0, 1]
    first = batch["scene"][0]
    assert first.source_id == "good1" and (first.width, first.height) == (50, 40)
    np.testing.assert_allclose(first.boxes, [[1 / 50, 1 / 40, 25 / 50, 20 / 40],
                                             [26 / 50, 10 / 40, 1.0, 1.0]], rtol=1e-6)
    assert first.labels == (1, 2) and first.texts == ("cat", "dog")
    assert first.difficult == (0, 1) and first.format == "jpeg"
    bad = {b["value"]: b for b in batch["_bad"]}
    assert set(bad) == {"broken", "outside", "unknown", "noimage"}
    assert "malformed XML" in bad["broken"]["reason"]
    assert bad["broken"]["file"].endswith("broken.xml")
    assert "outside the 50x40 image" in bad["outside"]["reason"]
    assert "unknown class name 'horse'" in bad["unknown"]["reason"]
    assert bad["unknown"]["file"].endswith("unknown.xml")
    assert "no image file" in bad["noimage"]["reason"]
    assert all(b["row"] in (2, 3, 4, 5) and b["field"] == "scene" for b in batch["_bad"])
    (test,) = list(src.read_batches(files, "test", 100))
    assert [s.source_id for s in test["scene"]] == ["test1"] and not test["_bad"]


def test_size_mismatch_and_non_image_files_are_quarantined(tmp_path):
    root = _voc(tmp_path)
    (root / "JPEGImages" / "good2.jpg").write_bytes(b"not a jpeg at all")
    _jpeg(root / "JPEGImages" / "good1.jpg", 64, 40)
    src = VocDetectionSource(class_names=CLASSES, default_location=str(root))
    files = src.files(str(root))
    (batch,) = list(src.read_batches(files, "train", 100))
    bad = {b["value"]: b["reason"] for b in batch["_bad"]}
    assert "annotation size 50x40 differs from the image's 64x40" in bad["good1"]
    assert "not a readable JPEG/PNG" in bad["good2"]
    assert len(batch["row"]) == 0


def test_missing_split_list_or_layout_fails_naming_it(tmp_path):
    root = _voc(tmp_path)
    (root / "ImageSets" / "Main" / "test.txt").unlink()
    src = VocDetectionSource(class_names=CLASSES, default_location=str(root))
    with pytest.raises(SourceError, match="missing the test split list ImageSets/Main/test.txt"):
        src.files(str(root))
    with pytest.raises(SourceError, match="not a Pascal VOC folder"):
        src.files(str(tmp_path / "ImageSets"))


def test_train_and_val_lists_are_read_when_there_is_no_trainval(tmp_path):
    root = _voc(tmp_path)
    main = root / "ImageSets" / "Main"
    (main / "trainval.txt").unlink()
    (main / "train.txt").write_text("good1\n")
    (main / "val.txt").write_text("good2\n")
    src = VocDetectionSource(class_names=CLASSES, default_location=str(root))
    (batch,) = list(src.read_batches(src.files(str(root)), "train", 100))
    assert [s.source_id for s in batch["scene"]] == ["good1", "good2"]


def test_annotation_writer_round_trips_through_the_parser(tmp_path):
    path = write_annotation(tmp_path / "a.xml", "a.jpg", 50, 40,
                            [{"name": "dog", "box": (3, 4, 20, 30), "difficult": 1}])
    ann = parse_annotation(path.read_bytes())
    assert ann["filename"] == "a.jpg" and (ann["width"], ann["height"]) == (50, 40)
    assert ann["objects"] == [{"name": "dog", "box": (3.0, 4.0, 20.0, 30.0), "difficult": 1,
                               "truncated": 0}]


def test_bytes_of_the_snapshot_are_what_the_record_keeps(tmp_path):
    root = _voc(tmp_path)
    src = VocDetectionSource(class_names=CLASSES, default_location=str(root))
    (batch,) = list(src.read_batches(src.files(str(root)), "test", 100))
    scene = batch["scene"][0]
    assert scene.encoded == (root / "JPEGImages" / "test1.jpg").read_bytes()
    assert Image.open(io.BytesIO(scene.encoded)).size == (50, 40)


def test_missing_or_non_numeric_box_fields_are_annotation_errors():
    from tasks.data.voc import AnnotationError

    xml = VOC_XML.format(name="a", w=50, h=40, objects=OBJ.format(cls="cat", diff=0,
                                                                  b=("x1", 2, 30, 30)))
    with pytest.raises(AnnotationError, match=r"object 1: <bndbox/xmin> is not a number"):
        parse_annotation(xml.encode())
    xml = VOC_XML.format(name="a", w=50, h=40, objects="<object><name>cat</name></object>")
    with pytest.raises(AnnotationError, match=r"object 1: no <bndbox/xmin>"):
        parse_annotation(xml.encode())
    with pytest.raises(AnnotationError, match="root element is <voc>"):
        parse_annotation(b"<voc/>")
