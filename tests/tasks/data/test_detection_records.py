"""Object Detection API records: written with tf.train.Example, read back in Python and in TF."""

import io

import numpy as np
import pytest
from PIL import Image

from tasks.data import detection as od


def _jpeg(h=30, w=40, seed=0):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _scene(**kw):
    args = dict(encoded=_jpeg(), format="jpeg", filename="a.jpg", source_id="a", height=30,
                width=40, boxes=[[0.1, 0.2, 0.5, 0.9], [0.0, 0.0, 1.0, 1.0]],
                labels=(2, 1), texts=("heart", "hexagon"), difficult=(0, 1))
    args.update(kw)
    return od.AnnotatedImage(**args)


def test_records_use_the_object_detection_api_keys_and_read_back():
    from tensorflow.core.example import example_pb2

    scene = _scene()
    (record,) = od.encode([scene])
    ex = example_pb2.Example.FromString(record)
    f = ex.features.feature
    assert f["image/encoded"].bytes_list.value[0] == scene.encoded
    assert f["image/format"].bytes_list.value[0] == b"jpeg"
    assert list(f["image/object/bbox/xmin"].float_list.value) == pytest.approx([0.1, 0.0])
    assert list(f["image/object/bbox/ymax"].float_list.value) == pytest.approx([0.9, 1.0])
    assert list(f["image/object/class/text"].bytes_list.value) == [b"heart", b"hexagon"]
    assert list(f["image/object/class/label"].int64_list.value) == [2, 1]
    assert f["image/height"].int64_list.value[0] == 30
    assert f["image/width"].int64_list.value[0] == 40
    back = od.decode(record)
    assert back == scene
    np.testing.assert_array_equal(back.boxes, scene.boxes)
    assert back.difficult == (0, 1) and back.truncated == (0, 0)
    assert od.encode([scene]) == [record]  # deterministic bytes


def test_tensorflow_reader_gives_decoded_image_and_yx_boxes():
    (record,) = od.encode([_scene()])
    out = od.parse(record)
    assert out["image"].shape == (30, 40, 3) and out["image"].dtype.name == "uint8"
    np.testing.assert_allclose(out["boxes"].numpy(), [[0.2, 0.1, 0.9, 0.5], [0, 0, 1, 1]],
                               atol=1e-6)
    assert out["labels"].numpy().tolist() == [2, 1]
    assert out["difficult"].numpy().tolist() == [0, 1]
    assert out["source_id"].numpy() == b"a"


def test_inconsistent_annotations_are_refused_naming_the_file():
    with pytest.raises(ValueError, match="a.jpg: 2 boxes, 1 labels"):
        _scene(labels=(1,))
    with pytest.raises(ValueError, match="image format 'gif'"):
        _scene(format="gif")


def test_a_record_without_detection_keys_is_refused():
    from tensorflow.core.example import example_pb2

    ex = example_pb2.Example()
    ex.features.feature["image"].bytes_list.value.append(b"x")
    with pytest.raises(ValueError, match="no 'image/object/bbox/xmin'"):
        od.decode(ex.SerializeToString())


def test_the_dataset_encoder_writes_detection_features_as_whole_records():
    from tasks.data.tfrecord import encode_examples

    spec = {"scene": od.feature_spec(["hexagon", "heart"])}
    col = np.empty(1, dtype=object)
    col[0] = _scene()
    assert encode_examples(spec, {"scene": col}) == od.encode([col[0]])
    with pytest.raises(ValueError, match="nothing else"):
        encode_examples({**spec, "label": {"encoding": "int64", "dtype": "int64",
                                           "shape": []}},
                        {"scene": col, "label": np.zeros(1)})
