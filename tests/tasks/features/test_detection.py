"""The detector's target encoding, loss and output decoding (CenterNet-like)."""

import numpy as np
import pytest

from tasks.features.detection import (
    DetectorInput,
    decode_map,
    detection_classes,
    encode_targets,
    flip_left_right,
)

BOXES = np.array([[0.10, 0.20, 0.40, 0.45], [0.55, 0.60, 0.95, 0.90]], np.float32)
LABELS = np.array([2, 1])


def _perfect_logits(target, num_classes):
    """The raw map a perfect detector would output for ``target``."""
    heat = np.clip(target[..., :num_classes], 1e-6, 1 - 1e-6)
    off = np.clip(target[..., num_classes + 2:num_classes + 4], 1e-6, 1 - 1e-6)
    return np.concatenate([np.log(heat / (1 - heat)), target[..., num_classes:num_classes + 2],
                           np.log(off / (1 - off))], axis=-1)[None].astype(np.float32)


def test_targets_peak_at_object_centres_and_decode_back_to_the_boxes():
    t = encode_targets(BOXES, LABELS, 12, 3).numpy()
    assert t.shape == (12, 12, 3 + 5)
    # object 1 (class 2): centre (0.25, 0.325) * 12 = (3.0, 3.9) -> cell (3, 3)
    assert t[3, 3, 1] == pytest.approx(1.0) and t[3, 3, 0] == 0
    assert t[3, 3, 3:5] == pytest.approx([0.30 * 12, 0.25 * 12], rel=1e-5)  # h, w in cells
    assert t[3, 3, 5:7] == pytest.approx([0.0, 0.9], abs=1e-5)  # offset in the cell
    assert t[..., 7].sum() == 2 and t[..., 1].max() == 1.0
    assert 0 < t[4, 3, 1] < 1  # the Gaussian around the centre
    out = {k: v.numpy() for k, v in decode_map(_perfect_logits(t, 3), 3, 5).items()}
    top = out["detection_scores"][0] > 0.9
    assert top.sum() == 2
    got = sorted(zip(out["detection_classes"][0][top].tolist(),
                     out["detection_boxes"][0][top].tolist(), strict=True))
    np.testing.assert_allclose(got[0][1], BOXES[1], atol=1e-4)  # class 1
    np.testing.assert_allclose(got[1][1], BOXES[0], atol=1e-4)  # class 2
    assert [c for c, _ in got] == [1.0, 2.0]
    assert out["num_detections"][0] == 5  # every peak answered, scores sorted
    assert np.all(np.diff(out["detection_scores"][0]) <= 0)


def test_an_image_without_objects_has_an_empty_target():
    t = encode_targets(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 6, 2).numpy()
    assert t.shape == (6, 6, 7) and not t.any()


def test_loss_is_lower_for_the_perfect_map_than_for_a_shifted_one():
    loss = detection_classes()["CenterNetLoss"](3)
    t = encode_targets(BOXES, LABELS, 12, 3).numpy()[None]
    perfect = _perfect_logits(t[0], 3)
    shifted = np.roll(perfect, 2, axis=1)
    assert float(loss(t, perfect)) < 0.05 < float(loss(t, shifted))
    cfg = loss.get_config()
    assert type(loss).from_config(cfg).num_classes == 3


def test_flip_mirrors_boxes():
    img = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)
    fimg, fbox = flip_left_right(img, BOXES)
    np.testing.assert_array_equal(fimg.numpy(), img[:, ::-1])
    np.testing.assert_allclose(fbox.numpy()[0], [0.10, 0.55, 0.40, 0.80], atol=1e-6)


def test_served_front_end_decodes_any_size_image_and_answers_od_outputs():
    import keras

    front = DetectorInput(size=32, stride=8, num_classes=2, max_detections=7)
    raw, pixels = front.build()
    net = keras.layers.Conv2D(6, 1)(keras.layers.AveragePooling2D(8)(pixels))
    model = keras.Model(raw, front.outputs(net, []))
    out = model(np.array(front.example()), training=False)
    assert set(out) == {"detection_boxes", "detection_classes", "detection_scores",
                        "num_detections"}
    assert out["detection_boxes"].shape == (2, 7, 4)
    assert out["num_detections"].shape == (2,)
    classes = out["detection_classes"].numpy()
    assert set(np.unique(classes)) <= {1.0, 2.0}
