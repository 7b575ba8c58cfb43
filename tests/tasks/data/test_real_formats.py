"""Sources on small files written exactly as the real data sets ship them.

- a Pascal VOC folder whose classes the module has never seen (real VOC names), without a
  label map: the classes are the annotations' names, sorted;
- the Oxford-IIIT pets folder with the Object Detection API's ``pet_label_map.pbtxt``:
  XML ``<name>`` is the species, the class is the breed of the file name, boxes exist for
  trainval images only;
- Kaggle's ``creditcard.csv``: every header name quoted, the ``Class`` value quoted.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tasks.data.classes import LabelMapError, read_label_map, write_label_map
from tasks.data.voc import VocDetectionSource, write_annotation

# The real pet_label_map.pbtxt's layout (first three of its 37 items), single quotes.
PET_LABEL_MAP = """item {
  id: 1
  name: 'Abyssinian'
}

item {
  id: 2
  name: 'american_bulldog'
}

item {
  id: 3
  name: 'great_pyrenees'
}
"""

# One of the pets' annotations/xmls files, as shipped (species in <name>, head box).
PET_XML = """<annotation><folder>OXIIIT</folder><filename>{fid}.jpg</filename><source>\
<database>OXFORD-IIIT Pet Dataset</database><annotation>OXIIIT</annotation><image>flickr\
</image></source><size><width>60</width><height>40</height><depth>3</depth></size>\
<segmented>0</segmented><object><name>{species}</name><pose>Frontal</pose><truncated>0\
</truncated><occluded>0</occluded><bndbox><xmin>10</xmin><ymin>5</ymin><xmax>40</xmax>\
<ymax>30</ymax></bndbox><difficult>0</difficult></object></annotation>
"""


def _jpeg(path, w, h, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path, "JPEG")


def write_voc(root, scenes, label_map=None):
    """A VOC folder: ``scenes`` = {split list: [(id, [(name, box), ...]), ...]}."""
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    seed = 0
    for split, items in scenes.items():
        for sid, objects in items:
            _jpeg(root / "JPEGImages" / f"{sid}.jpg", 64, 48, seed)
            seed += 1
            write_annotation(root / "Annotations" / f"{sid}.xml", f"{sid}.jpg", 64, 48,
                             [{"name": n, "box": b} for n, b in objects], folder="VOC2012")
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text(
            "".join(f"{sid}\n" for sid, _ in items))
    if label_map is not None:
        write_label_map(root / "label_map.pbtxt", label_map)
    return root


VOC_SCENES = {
    "trainval": [("2008_000001", [("pottedplant", (2, 2, 30, 30)), ("aeroplane", (31, 5, 60, 40))]),
                 ("2008_000002", [("bicycle", (5, 5, 50, 45))]),
                 ("2008_000003", [("aeroplane", (1, 1, 20, 20))])],
    "test": [("2008_000004", [("bicycle", (3, 3, 33, 33)), ("pottedplant", (40, 10, 60, 30))])],
}


def test_voc_classes_the_module_never_saw_come_from_the_annotations(tmp_path):
    src = VocDetectionSource(default_location=str(tmp_path))
    files = src.files(str(write_voc(tmp_path, VOC_SCENES)))
    facts = src.validate(files)
    assert facts["class_names"] == ["aeroplane", "bicycle", "pottedplant"]
    assert facts["class_origin"] == "annotations"
    (batch,) = list(src.read_batches(files, "train", 100))
    assert not batch["_bad"]
    first = batch["scene"][0]
    assert first.texts == ("pottedplant", "aeroplane") and first.labels == (3, 1)
    assert src.schema()["scene"]["class_names"] == []  # the run's come from the data


def test_a_label_map_fixes_ids_and_order_and_unknown_names_are_quarantined(tmp_path):
    src = VocDetectionSource(default_location=str(tmp_path))
    root = write_voc(tmp_path, VOC_SCENES, label_map=("bicycle", "aeroplane"))
    files = src.files(str(root))
    assert "label_map.pbtxt" in files
    classes = src.class_list(files)
    assert classes.names == ("bicycle", "aeroplane") and classes.origin.startswith("label map")
    (batch,) = list(src.read_batches(files, "train", 100))
    assert [s.source_id for s in batch["scene"]] == ["2008_000002", "2008_000003"]
    assert batch["scene"][1].labels == (2,)
    (bad,) = batch["_bad"]
    assert "unknown class name 'pottedplant'" in bad["reason"]
    assert bad["file"].endswith("2008_000001.xml")


def test_pets_folder_as_shipped_with_its_label_map(tmp_path):
    root = tmp_path / "pets"
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "xmls").mkdir(parents=True)
    (root / "pet_label_map.pbtxt").write_text(PET_LABEL_MAP)
    breeds = {"Abyssinian": ("cat", 1, 1), "american_bulldog": ("dog", 2, 2),
              "great_pyrenees": ("dog", 3, 2)}
    trainval, test = [], []
    seed = 0
    for breed, (species, class_id, species_id) in breeds.items():
        for n in range(1, 8):
            fid = f"{breed}_{n}"
            _jpeg(root / "images" / f"{fid}.jpg", 60, 40, seed)
            seed += 1
            line = f"{fid} {class_id} {species_id} {n}\n"
            if n <= 5:  # the pets give head boxes for trainval images only
                (root / "annotations" / "xmls" / f"{fid}.xml").write_text(
                    PET_XML.format(fid=fid, species=species))
                trainval.append(line)
            else:
                test.append(line)
    header = "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n"
    (root / "annotations" / "trainval.txt").write_text("".join(trainval))
    (root / "annotations" / "test.txt").write_text("".join(test))
    (root / "annotations" / "list.txt").write_text(header + "".join(trainval + test))

    src = VocDetectionSource(default_location=str(root))
    files = src.files(str(root))
    assert "pet_label_map.pbtxt" in files
    facts = src.validate(files)
    assert facts["class_names"] == ["Abyssinian", "american_bulldog", "great_pyrenees"]
    assert facts["class_origin"] == "label map pet_label_map.pbtxt"
    assert facts["test_ids_without_boxes"] == 6
    # trainval's 15 annotated images, 30% of them carved out as test (seeded)
    assert facts["train"]["rows"] + facts["test"]["rows"] == 15 and facts["test"]["rows"] == 4
    scenes = [s for p in ("train", "test") for b in src.read_batches(files, p, 100)
              for s in b["scene"]]
    assert len(scenes) == 15
    for s in scenes:
        breed = s.source_id.rsplit("_", 1)[0]
        assert s.texts == (breed,)
        assert s.labels == (facts["class_names"].index(breed) + 1,)
    bad = [r for p in ("train", "test") for b in src.read_batches(files, p, 100)
           for r in b["_bad"]]
    assert bad == []


def test_label_map_errors_name_the_file(tmp_path):
    path = tmp_path / "label_map.pbtxt"
    path.write_text("item { id: 2 name: 'a' }\nitem { id: 3 name: 'b' }\n")
    with pytest.raises(LabelMapError, match=r"label_map.pbtxt: ids must be 1..2"):
        read_label_map(path)
    path.write_text("item { id: 1 }\n")
    with pytest.raises(LabelMapError, match=r"item 1 needs both an id and a name"):
        read_label_map(path)
    path.write_text("item { id: 1 name: 'a' \n")
    with pytest.raises(LabelMapError, match=r"not a label map in protobuf text format"):
        read_label_map(path)
    # newer label maps carry more fields (display names, keypoints): they are skipped
    path.write_text("item {\n  name: '/m/01g317'\n  id: 1\n  display_name: 'person'\n"
                    "  keypoints { id: 0 label: 'nose' }\n}\n")
    assert read_label_map(path) == ("/m/01g317",)
    assert read_label_map(write_label_map(path, ["x", "y"])) == ("x", "y")


def test_kaggle_creditcard_csv_with_quoted_header_and_class(tmp_path):
    """Kaggle's file quotes every header name and the Class value: ``...,149.62,"0"``."""
    from models.creditcard_fraud import SPEC

    src = SPEC.source
    names = [c.name for c in src.columns]
    assert names[0] == "Time" and names[-2:] == ["Amount", "Class"]
    rows = [
        [0, *np.linspace(-1.3, 1.3, 28).round(6), 149.62, '"0"'],
        [0, *np.linspace(1.1, -0.9, 28).round(6), 2.69, '"0"'],
        [406, *np.linspace(-2.3, 1.9, 28).round(6), 0.0, '"1"'],
    ]
    text = ",".join(f'"{n}"' for n in names) + "\n"
    text += "".join(",".join(str(v) for v in r) + "\n" for r in rows)
    (tmp_path / "creditcard.csv").write_text(text)
    files = src.files(str(tmp_path))
    src.check(files)
    src.validate(files)
    (part,) = src.partitions()
    batches = list(src.read_batches(files, part, 100))
    assert not [b for batch in batches for b in batch["_bad"]]
    got = np.concatenate([b["Class"] for b in batches])
    assert got.tolist() == [0, 0, 1]
    np.testing.assert_allclose(np.concatenate([b["Amount"] for b in batches]),
                               [149.62, 2.69, 0.0])
