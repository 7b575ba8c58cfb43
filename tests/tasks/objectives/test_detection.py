"""mAP@0.5 with pycocotools, and the PNG of predicted boxes."""

import numpy as np
import pytest

from tasks.objectives import KINDS, get
from tasks.objectives.detection import coco_map, plot_detections

NAMES = ("a", "b")


def _truth():
    img = np.zeros((40, 50, 3), np.uint8)
    return [
        {"boxes": np.array([[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.9, 0.9]], np.float32),
         "labels": np.array([1, 2]), "difficult": np.array([0, 0]), "height": 40,
         "width": 50, "source_id": "x", "image": img},
        {"boxes": np.array([[0.2, 0.2, 0.8, 0.6]], np.float32), "labels": np.array([1]),
         "difficult": np.array([0]), "height": 40, "width": 50, "source_id": "y",
         "image": img},
    ]


def _dets(boxes, classes, scores):
    k = max(len(b) for b in boxes)
    pad = [np.pad(np.asarray(b, np.float32).reshape(-1, 4), ((0, k - len(b)), (0, 0)))
           for b in boxes]
    return {"detection_boxes": np.stack(pad),
            "detection_classes": np.stack([np.pad(np.asarray(c, float), (0, k - len(c)))
                                           for c in classes]),
            "detection_scores": np.stack([np.pad(np.asarray(s, float), (0, k - len(s)))
                                          for s in scores]),
            "num_detections": np.array([len(s) for s in scores], float)}


def test_detection_is_a_registered_kind_gated_on_map50():
    assert "detection" in KINDS and "test_map_50" in get("detection").metrics


def test_perfect_detections_score_one_and_misses_lower_it():
    t = _truth()
    perfect = _dets([t[0]["boxes"], t[1]["boxes"]], [[1, 2], [1]], [[0.9, 0.8], [0.7]])
    assert coco_map(t, perfect, NAMES)["test_map_50"] == pytest.approx(1.0)
    # the class-2 object is missed and a box of class 1 is half off: AP of class 1 is 0.5
    # (one of two found, ranked first), class 2 has 0
    worse = _dets([[t[0]["boxes"][0]], [[0.6, 0.6, 1.0, 1.0]]], [[1], [1]], [[0.9], [0.8]])
    report = coco_map(t, worse, NAMES)
    assert report["ap50_per_class"]["b"] == 0.0
    assert report["ap50_per_class"]["a"] == pytest.approx(0.5, abs=0.01)
    assert report["test_map_50"] == pytest.approx(0.25, abs=0.01)
    assert report["test_objects"] == 3 and report["test_images"] == 2


def test_wrong_classes_score_zero_and_difficult_objects_are_ignored():
    t = _truth()
    swapped = _dets([t[0]["boxes"], t[1]["boxes"]], [[2, 1], [2]], [[0.9, 0.8], [0.7]])
    assert coco_map(t, swapped, NAMES)["test_map_50"] == 0.0
    t[0]["difficult"] = np.array([0, 1])  # the class-2 object is difficult: not required
    only_easy = _dets([t[0]["boxes"][:1], t[1]["boxes"]], [[1], [1]], [[0.9], [0.7]])
    assert coco_map(t, only_easy, NAMES)["ap50_per_class"]["a"] == pytest.approx(1.0)


def test_no_detections_at_all_score_zero():
    empty = _dets([[[0, 0, 0, 0]], [[0, 0, 0, 0]]], [[1], [1]], [[0.0], [0.0]])
    empty["num_detections"][:] = 0
    assert coco_map(_truth(), empty, NAMES)["test_map_50"] == 0.0


def test_detections_png_is_written(tmp_path):
    t = _truth()
    png = plot_detections(t, _dets([t[0]["boxes"], t[1]["boxes"]], [[1, 2], [1]],
                                   [[0.9, 0.2], [0.7]]), NAMES, tmp_path / "d.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
