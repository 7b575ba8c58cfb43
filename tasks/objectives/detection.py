"""Object detection: boxes and classes per image, measured by mAP@0.5 with pycocotools.

The dataset is one Object Detection API record per image (:mod:`tasks.data.detection`).
Fitting reads them with :func:`detection_dataset`: decode, resize to the detector's
square input (:func:`tasks.features.detection.resize_image`, the served model's resize),
a random left-right flip of image and boxes in training, then the CenterNet target
(:func:`tasks.features.detection.encode_targets`). The input geometry comes from the use
case's front end, ``ModelSpec.serving_input`` (a
:class:`~tasks.features.detection.DetectorInput`), which also makes the served model
take an encoded image and answer the Object Detection API's outputs.

Evaluation decodes the test images' detections exactly as the served model does and scores
them with the COCO evaluation of ``pycocotools`` (boxes in the original image's pixels):
``test_map_50`` (AP at IoU 0.5, all areas, up to 100 detections: the gate metric; the
PASCAL VOC metric the books report), ``test_map`` (COCO's AP averaged over IoU 0.5:0.95),
``test_map_75``, ``test_recall_100`` and AP@0.5 per class. VOC ``difficult`` objects are
given to COCO as crowd regions, so detecting them is neither rewarded nor punished (VOC's
rule). It draws the predicted boxes (with the ground truth) on test images, one PNG.

For the ablation step, :meth:`Detection.ablation_scores` gives every arm the same mAP@0.5
on validation and test, so arms are compared on it rather than on the loss.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.detection import decode, parse
from tasks.data.tfrecord import DatasetReader, split_files
from tasks.features.detection import decode_map, encode_targets, flip_left_right, resize_image
from tasks.objectives.base import EvalOutput, Objective
from tasks.objectives.plots import pyplot
from tasks.spec import ModelSpec, SpecError

log = logging.getLogger(__name__)

TASK = "detection"
PLOT_IMAGES = 8
PLOT_MIN_SCORE = 0.3


def _geometry(model: ModelSpec, reader: DatasetReader) -> Any:
    """The detector's input geometry, with the number of classes of this run's data."""
    front = model.serving_input
    if front is None or not all(hasattr(front, a) for a in ("size", "stride", "num_classes")):
        raise SpecError("a detection model declares its input geometry as "
                        "ModelSpec.serving_input=DetectorInput(size, stride)")
    names = class_names(reader, model)
    return replace(front, num_classes=len(names)) if names else front


def class_names(reader: DatasetReader, model: ModelSpec) -> list[str]:
    """The run's label map (id = position + 1), as the records' feature spec names it."""
    return list(reader.feature_spec[model.input_key].get("class_names", ())
                or model.classes(reader.stats))


def detection_dataset(reader: DatasetReader, model: ModelSpec, split: str, batch_size: int,
                      shuffle_seed: int | None = None) -> Any:
    """Batched ``(pixels, target)`` of one split; shuffled and flipped when seeded."""
    import tensorflow as tf

    geo = _geometry(model, reader)
    files = split_files(reader.dataset_dir, split)
    if not files:
        raise FileNotFoundError(f"{reader.dataset_dir}/{split}: no TFRecord shards")

    def load(record: Any) -> tuple[Any, Any, Any]:
        ex = parse(record)
        return resize_image(ex["image"], geo.size), ex["boxes"], ex["labels"]

    def target(image: Any, boxes: Any, labels: Any) -> tuple[Any, Any]:
        return image, encode_targets(boxes, labels, geo.grid, geo.num_classes)

    def flip(image: Any, boxes: Any, labels: Any) -> tuple[Any, Any, Any]:
        image, boxes = tf.cond(tf.random.uniform([], seed=shuffle_seed) < 0.5,
                               lambda: flip_left_right(image, boxes), lambda: (image, boxes))
        return image, boxes, labels

    ds = tf.data.TFRecordDataset(files).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.cache()
    if shuffle_seed is not None:
        ds = ds.shuffle(10_000, seed=shuffle_seed, reshuffle_each_iteration=True).map(flip)
    return (ds.map(target, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
            .prefetch(tf.data.AUTOTUNE))


def split_images(reader: DatasetReader, model: ModelSpec, split: str
                 ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """All images of a split resized for the detector, and their ground truth.

    Returns:
        ``(pixels (n, size, size, 3) float32, [{"boxes" (k, 4) [ymin, xmin, ymax, xmax]
        normalised, "labels", "difficult", "height", "width", "source_id", "image"}])``.

    """
    import tensorflow as tf

    geo = _geometry(model, reader)
    pixels, truth = [], []
    for record in tf.data.TFRecordDataset(split_files(reader.dataset_dir, split)):
        ex = parse(record)
        pixels.append(resize_image(ex["image"], geo.size).numpy())
        img = ex["image"].numpy()
        truth.append({"boxes": ex["boxes"].numpy(), "labels": ex["labels"].numpy(),
                      "difficult": ex["difficult"].numpy(), "height": img.shape[0],
                      "width": img.shape[1], "source_id": ex["source_id"].numpy().decode(),
                      "image": img})
    size = geo.size
    return (np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.float32)), truth


def detect(trained: Any, pixels: np.ndarray, geo: Any, batch_size: int = 64
           ) -> dict[str, np.ndarray]:
    """The served model's decoding of the trained network's maps, batch by batch.

    Args:
        trained: The trained network (pixels -> raw map).
        pixels: Images resized for it.
        geo: The run's geometry (``num_classes``, ``max_detections``).
        batch_size: Images per call.

    """
    outs: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(pixels), batch_size):
        raw = trained.predict_on_batch(pixels[start:start + batch_size])
        for k, v in decode_map(raw, geo.num_classes, geo.max_detections).items():
            outs.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in outs.items()}


def coco_map(truth: Sequence[Mapping[str, Any]], dets: Mapping[str, np.ndarray],
             names: Sequence[str]) -> dict[str, Any]:
    """COCO evaluation (pycocotools) of the detections against the ground truth.

    Boxes are scaled to each original image's pixels. Returns ``test_map_50`` and the
    other COCO summary figures, plus AP@0.5 per class.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, results = [], [], []
    for i, t in enumerate(truth):
        h, w = int(t["height"]), int(t["width"])
        images.append({"id": i, "height": h, "width": w})
        for box, label, diff in zip(t["boxes"], t["labels"], t["difficult"], strict=True):
            y0, x0, y1, x1 = (float(box[0]) * h, float(box[1]) * w, float(box[2]) * h,
                              float(box[3]) * w)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(label),
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                         "iscrowd": int(diff)})
        n = int(dets["num_detections"][i])
        for box, cls, score in zip(dets["detection_boxes"][i][:n],
                                   dets["detection_classes"][i][:n],
                                   dets["detection_scores"][i][:n], strict=True):
            y0, x0, y1, x1 = (float(box[0]) * h, float(box[1]) * w, float(box[2]) * h,
                              float(box[3]) * w)
            results.append({"image_id": i, "category_id": int(cls), "score": float(score),
                            "bbox": [x0, y0, max(x1 - x0, 0.0), max(y1 - y0, 0.0)]})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)]}
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        gt.createIndex()
        if not results:
            return {"test_map_50": 0.0, "test_map": 0.0, "test_map_75": 0.0,
                    "test_recall_100": 0.0, "ap50_per_class": {n: 0.0 for n in names},
                    "test_images": len(images), "test_objects": len(anns),
                    "test_detections": 0}
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = ev.stats
    # precision[T, R, K, A, M]: IoU 0.5 is T=0, area "all" A=0, 100 detections M=2
    per_class = {}
    for k, name in enumerate(names):
        p = ev.eval["precision"][0, :, k, 0, 2]
        per_class[name] = float(p[p > -1].mean()) if (p > -1).any() else 0.0
    return {"test_map_50": float(max(stats[1], 0.0)), "test_map": float(max(stats[0], 0.0)),
            "test_map_75": float(max(stats[2], 0.0)),
            "test_recall_100": float(max(stats[8], 0.0)),
            "ap50_per_class": per_class, "test_images": len(images),
            "test_objects": len(anns), "test_detections": len(results),
            "coco_summary": quiet.getvalue().strip().splitlines()[-12:]}


def plot_detections(truth: Sequence[Mapping[str, Any]], dets: Mapping[str, np.ndarray],
                    names: Sequence[str], path: Path, min_score: float = PLOT_MIN_SCORE,
                    n: int = PLOT_IMAGES) -> Path:
    """The first ``n`` test images with their boxes, one PNG.

    Predicted boxes (score >= ``min_score``) are solid, with class and score; the ground
    truth is dashed white.
    """
    plt = pyplot()
    n = min(n, len(truth))
    cols = 4
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        t = truth[i]
        h, w = t["height"], t["width"]
        ax.imshow(t["image"])
        for box in t["boxes"]:
            ax.add_patch(plt.Rectangle((box[1] * w, box[0] * h), (box[3] - box[1]) * w,
                                       (box[2] - box[0]) * h, fill=False, ec="white",
                                       lw=1.2, ls="--"))
        shown = 0
        for box, cls, score in zip(dets["detection_boxes"][i], dets["detection_classes"][i],
                                   dets["detection_scores"][i], strict=True):
            if score < min_score:
                continue
            c = colours((int(cls) - 1) % 10)
            ax.add_patch(plt.Rectangle((box[1] * w, box[0] * h), (box[3] - box[1]) * w,
                                       (box[2] - box[0]) * h, fill=False, ec=c, lw=2))
            ax.text(box[1] * w, box[0] * h - 1, f"{names[int(cls) - 1]} {score:.2f}",
                    color="white", fontsize=7, va="bottom",
                    bbox={"facecolor": c, "alpha": 0.8, "pad": 1, "lw": 0})
            shown += 1
        ax.set_title(f"{t['source_id']}: {len(t['boxes'])} true, {shown} found", fontsize=8)
    fig.suptitle(f"Predicted boxes (score >= {min_score}, solid) and ground truth (dashed)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


class Detection(Objective):
    """CenterNet-style detection over Object Detection API records, scored by mAP@0.5."""

    kind = TASK
    metrics = ("test_map_50", "test_map", "test_map_75", "test_recall_100")

    def dataset(self, reader: DatasetReader, model: ModelSpec, split: str, batch_size: int,
                shuffle_seed: int | None = None) -> Any:
        return detection_dataset(reader, model, split, batch_size, shuffle_seed)

    def serving_example(self, model: ModelSpec, reader: DatasetReader) -> Any:
        """The first two test images' files (JPEG/PNG bytes), as a client sends them."""
        import tensorflow as tf

        records = tf.data.TFRecordDataset(split_files(reader.dataset_dir, "test")).take(2)
        out = [decode(r.numpy()).encoded for r in records]
        return np.array(out, dtype=object) if out else None

    def ablation_scores(self, trained: Any, reader: DatasetReader, model: ModelSpec,
                        split: str) -> dict[str, float]:
        """mAP@0.5 of one split (the ablation step compares arms on it)."""
        pixels, truth = split_images(reader, model, split)
        report = coco_map(truth, detect(trained, pixels, _geometry(model, reader)),
                          class_names(reader, model))
        return {"map_50": report["test_map_50"], "map": report["test_map"]}

    def evaluate(self, trained: Any, reader: DatasetReader, model: ModelSpec,
                 calibration: Mapping[str, Any], out_dir: Path) -> EvalOutput:
        names = class_names(reader, model)
        pixels, truth = split_images(reader, model, "test")
        dets = detect(trained, pixels, _geometry(model, reader))
        report = coco_map(truth, dets, names)
        report["class_names"] = names
        report["label_map"] = {str(i): n for i, n in enumerate(names, 1)}  # detection_classes
        report["examples"] = [
            {"source_id": t["source_id"],
             "detections": [{"class": names[int(c) - 1], "score": round(float(s), 4),
                             "box": [round(float(v), 4) for v in b]}
                            for b, c, s in zip(dets["detection_boxes"][i],
                                               dets["detection_classes"][i],
                                               dets["detection_scores"][i], strict=True)
                            if s >= PLOT_MIN_SCORE]}
            for i, t in enumerate(truth[:PLOT_IMAGES])]
        png = plot_detections(truth, dets, names, Path(out_dir) / "detections.png")
        log.info("detection: mAP@0.5 %.4f on %d test images (%d objects)",
                 report["test_map_50"], report["test_images"], report["test_objects"])
        return EvalOutput(report, [png])
