"""The object_detection use case: its generated VOC data and the detector built on cifar10."""

import numpy as np
import pytest

from models import object_detection as od

STATS = {"train": {"features": {"image": {"min": 0.0, "max": 255.0}}},
         "classes": {"names": list(od.CLASS_NAMES), "origin": "label map label_map.pbtxt"}}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    path = tmp_path_factory.mktemp("voc")
    od.generate(path, 8, 5)
    return path


def test_generator_is_seeded_and_writes_the_voc_layout(generated, tmp_path):
    od.generate(tmp_path, 8, 5)
    for rel in ("ImageSets/Main/trainval.txt", "ImageSets/Main/test.txt",
                "JPEGImages/scene_000003.jpg", "Annotations/scene_000009.xml"):
        assert (tmp_path / rel).read_bytes() == (generated / rel).read_bytes()
    assert len((generated / "ImageSets/Main/test.txt").read_text().split()) == 8


def test_generated_scenes_load_without_quarantine_with_tight_boxes(generated):
    files = od.SOURCE.files(str(generated))
    scenes = [s for part in ("train", "test")
              for b in od.SOURCE.read_batches(files, part, 100) if not b["_bad"]
              for s in b["scene"]]
    assert len(scenes) == 16
    counts = [len(s.labels) for s in scenes]
    assert min(counts) >= 1 and max(counts) <= 4
    from io import BytesIO

    from PIL import Image

    for s in scenes:
        img = np.asarray(Image.open(BytesIO(s.encoded)), np.float32)
        assert 96 <= s.width <= 144 and 96 <= s.height <= 144
        assert (s.boxes >= 0).all() and (s.boxes <= 1).all()
        for box in s.boxes:  # an object differs from what surrounds its box
            x0, y0, x1, y1 = np.round(box * [s.width, s.height, s.width, s.height]).astype(int)
            assert x1 - x0 >= 3 and y1 - y0 >= 3
            assert img[y0:y1, x0:x1].std() > 0


def _cifar_parent():
    import keras

    from models.cifar10 import build_model

    keras.utils.set_random_seed(7)
    return build_model({"augment": True}, STATS)


def test_backbone_is_copied_from_the_parent_and_kept_after_it_is_gone():
    import keras

    parent = _cifar_parent()
    model = od.build_model({"backbone": "parent"}, STATS, parent)
    convs = od.parent_convolutions(parent)
    for mine, theirs in zip(("backbone_conv1", "backbone_conv2"), convs, strict=True):
        for a, b in zip(model.get_layer(mine).get_weights(), theirs.get_weights(),
                        strict=True):
            np.testing.assert_array_equal(a, b)
    before = model.get_layer("backbone_conv1").get_weights()[0].copy()
    # a copy, not a shared variable: changing the parent leaves the detector as it was
    convs[0].set_weights([w * 0 for w in convs[0].get_weights()])
    np.testing.assert_array_equal(model.get_layer("backbone_conv1").get_weights()[0], before)
    keras.utils.set_random_seed(8)  # (seed 7 would draw the parent's own initial values)
    scratch = od.build_model({"backbone": "scratch"}, STATS, None)
    assert not np.array_equal(scratch.get_layer("backbone_conv1").get_weights()[0], before)
    assert model.output.shape[1:] == (12, 12, len(od.CLASS_NAMES) + 4)


def test_a_parent_without_the_cifar_convolutions_is_refused():
    import keras

    inp = keras.Input((8, 8, 3))
    other = keras.Model(inp, keras.layers.Conv2D(4, 3)(inp))
    with pytest.raises(ValueError, match=r"needs the cifar10 CNN's"):
        od.build_model({}, STATS, other)


def test_the_parent_is_wanted_unless_the_backbone_is_from_scratch():
    parent = od.SPEC.model.parent
    assert (parent.name, parent.alias) == ("cifar10", "champion")
    assert parent.wanted({"backbone": "parent"}) and not parent.wanted({"backbone": "scratch"})
    assert od.SPEC.model.ablation.arms == {"from_scratch": {"backbone": "scratch"}}
