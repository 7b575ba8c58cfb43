"""Object detection by transfer learning: a small single-stage detector on the cifar10 champion.

The books' Object Detection chapter retrains a pretrained detector (Faster R-CNN from the
Object Detection API's model zoo) on new classes (the Oxford-IIIT pets) from TFRecords
with bounding boxes, and serves it over REST. Here nothing can be downloaded, so the
pretrained part is another model of this platform: the backbone of the registered
``cifar10`` champion.

**Data.** Pascal VOC XML annotations via ``source_dir``, in the VOC layout
(``JPEGImages/``, ``Annotations/``, ``ImageSets/Main/{trainval,test}.txt``) or the pets'
(``images/``, ``annotations/xmls/``, ``annotations/{trainval,test}.txt``); see
:mod:`tasks.data.voc` (malformed XML, boxes outside the image, class names outside the
label map go to quarantine with the file and the reason). **The classes come from the
data**, as in the book's pets example: from the folder's label map (``label_map.pbtxt``
or ``<name>_label_map.pbtxt``, the Object Detection API's format, e.g. the pets'
``pet_label_map.pbtxt``), or without one from the names the annotations use, sorted; the
detector's heat maps, the served ``detection_classes`` ids and the names in the model's
metadata and card follow them, so a folder of new classes needs no edit here. The
default, ``synthetic:800:0``, is **generated**: a seeded generator writes the same VOC
layout (800 trainval scenes, of which 150 are carved out for validation, and 200 test
scenes; JPEG quality 90) with its ``label_map.pbtxt``. Per scene:

- *background*: a window (96-144 px a side) of a real photo that a package ships
  (scikit-image's astronaut, coffee, chelsea, rocket, hubble_deep_field,
  immunohistochemistry, motorcycle, retina; the grey brick, grass, gravel, camera and
  coins tinted with a random colour; scikit-learn's ``china.jpg`` and ``flower.jpg``) at
  a random scale, flipped and rotated by 90° steps, its contrast scaled by 0.4-1;
- *objects*: 1-4, each of one of four shapes **the cifar10 model never saw** (hexagon,
  heart, arrow, bow tie: transfer to new classes, as the book's pets), radius 8-22 px,
  aspect 0.75-1.33, rotated ±25°, mirrored at random, placed so that no two boxes
  overlap by more than 0.2 IoU; colour of any hue, set against the ground under it in
  85% of objects, flat with a linear shading or textured by another photo; drawn
  anti-aliased (3x3 supersampling); the box is the tight box of the drawn shape;
- *lighting*: a linear illumination gradient, per-channel gains 0.8-1.2, gamma 0.7-1.4,
  Gaussian noise.

**Records**: one ``tf.train.Example`` per image in the Object Detection API's layout
(``image/encoded``, ``image/object/bbox/{xmin,ymin,xmax,ymax}``,
``image/object/class/{text,label}`` ...: :mod:`tasks.data.detection`).

**Model** (CenterNet-like single-stage detector, :mod:`tasks.features.detection`): the
image resized to 96x96 (stretched; boxes are normalised) -> /255 -> **backbone**: the
cifar10 CNN's convolutional layers (conv 5x5 32 + ReLU -> max-pool 2 -> conv 5x5 64 +
ReLU -> max-pool 2; stride 4), their weights **copied** from the registered ``cifar10``
champion (resolved by name and alias when the run starts; version recorded as the
parent: tags ``parent_model``, ``parent_version`` on the run and the registered version)
-> head: conv 3x3 96 stride 2 -> 2 x conv 3x3 96 (all ReLU; a 12x12 map, stride 8) ->
per cell a heat-map logit per class, box size and centre offset. Loss: CenterNet's
penalty-reduced focal loss + L1. Training flips images and boxes left-right at random.
Adam, batches of 32. The copied weights are fine-tuned with the rest.

**Transfer ablation** (same run, same data, seed, epochs and batches): the same detector
with a randomly initialised backbone (``backbone=scratch``), as a child MLflow run; both
arms' mAP@0.5 on validation and test are logged (``ablation_<arm>_test_map_50``).

**Evaluation**: mAP@0.5 on the test split with ``pycocotools`` (COCO's evaluation, IoU
0.5, all areas, 100 detections), gated; COCO's mAP@[.5:.95] beside it; a PNG of the
predicted boxes on test images.

**Serving**: the registered model takes an encoded image (base64 JPEG/PNG of any size)
and answers the Object Detection API's ``detection_boxes`` (normalised ``[ymin, xmin,
ymax, xmax]``), ``detection_classes`` (1-based label-map ids; the generated data's label
map: 1 hexagon, 2 heart, 3 arrow, 4 bowtie; the names are in ``GET
/v1/models/object_detection/metadata`` and the model card), ``detection_scores`` and
``num_detections`` (the top 20 local maxima).

**Deviations from the book, and why**: the book retrains the Object Detection API's
Faster R-CNN (COCO-pretrained, downloaded) with its TF 1 Estimator scripts on Cloud ML;
here nothing can be downloaded and TF 2 has no such scripts, so the pretrained part is
this platform's ``cifar10`` champion and the detector is a small single-stage one trained
by Keras; the data is generated unless a VOC or pets folder is given.
"""

from __future__ import annotations

import colorsys
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.classes import write_label_map
from tasks.data.voc import VocDetectionSource, write_annotation
from tasks.features.detection import DetectorInput
from tasks.spec import (
    AblationSpec,
    Feature,
    GateSpec,
    ModelSpec,
    ParentModel,
    PreprocessSpec,
    RunParam,
    SmokeTest,
    SplitSpec,
    UseCaseSpec,
    data_class_names,
)

# The generated scenes' shapes, in the order of the label map the generator writes; the
# detector's classes are the run's data's (module docstring).
CLASS_NAMES = ("hexagon", "heart", "arrow", "bowtie")
SIZE, STRIDE = 96, 8
PARENT = "cifar10"
FRONT = DetectorInput(size=SIZE, stride=STRIDE, max_detections=20)

# --------------------------------------------------------------------------- generator
_COLOUR_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
                  "immunohistochemistry", "retina")
_GREY_PHOTOS = ("brick", "grass", "gravel", "camera", "coins")


def _photos() -> list[np.ndarray]:
    """Real photos shipped by scikit-image and scikit-learn, float32 RGB in [0, 1]."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    out = [np.asarray(getattr(skimage.data, n)())[..., :3] for n in _COLOUR_PHOTOS]
    out.append(np.asarray(skimage.data.stereo_motorcycle()[0]))
    out.extend(np.repeat(np.asarray(getattr(skimage.data, n)())[..., None], 3, axis=2)
               for n in _GREY_PHOTOS)
    out.extend(np.asarray(img) for img in load_sample_images().images)
    return [np.asarray(p, np.float32) / 255.0 for p in out]


def _background(photo: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    ph, pw = photo.shape[:2]
    scale = rng.uniform(max(h / ph, w / pw) * 1.05, max(h / ph, w / pw) * 4.0)
    pil = Image.fromarray(np.round(photo * 255).astype(np.uint8))
    pil = pil.resize((max(w, round(pw * scale)), max(h, round(ph * scale))),
                     Image.Resampling.BILINEAR)
    arr = np.asarray(pil, np.float32) / 255.0
    y, x = rng.integers(0, arr.shape[0] - h + 1), rng.integers(0, arr.shape[1] - w + 1)
    win = arr[y:y + h, x:x + w]
    if rng.random() < 0.5:
        win = win[:, ::-1]
    if rng.random() < 0.5:
        win = win[::-1]
    return np.ascontiguousarray(win)


def inside(cls: int, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Whether points (object radius 1, y down) are inside class ``cls``'s shape."""
    r, theta = np.hypot(px, py), np.arctan2(py, px)
    if cls == 0:  # hexagon
        sector = 2 * np.pi / 6
        return r <= np.cos(np.pi / 6) / np.cos(np.mod(theta, sector) - np.pi / 6)
    if cls == 1:  # heart (the classic implicit curve, point down)
        x, y = px * 1.15, -py * 1.15 + 0.15
        return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0
    if cls == 2:  # arrow pointing right: shaft + head
        shaft = (px >= -1) & (px <= 0.15) & (np.abs(py) <= 0.22)
        head = (px >= 0.15) & (px <= 1) & (np.abs(py) <= 0.85 * (1 - px))
        return shaft | head
    if cls == 3:  # bow tie: two triangles meeting at the centre
        return (np.abs(px) <= 1) & (np.abs(py) <= 0.8 * np.abs(px) + 0.08)
    raise ValueError(f"unknown class {cls}")


def _colour(rng: np.random.Generator) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.25, 1.0),
                                          rng.uniform(0.3, 1.0)), np.float32)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def render_scene(rng: np.random.Generator, photos: list[np.ndarray]
                 ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One scene (h, w, 3) uint8 and its objects ``[{"name", "box"}]`` (VOC pixels)."""
    h, w = int(rng.integers(96, 145)), int(rng.integers(96, 145))
    img = _background(photos[rng.integers(len(photos))], h, w, rng)
    if np.allclose(img[..., 0], img[..., 1]):  # a grey texture: tint it
        img = img * (0.5 + _colour(rng))
    mean = img.mean(axis=(0, 1))
    img = mean + (img - mean) * rng.uniform(0.4, 1.0)
    objects: list[dict[str, Any]] = []
    boxes: list[tuple[float, ...]] = []
    sub = (np.arange(3) + 0.5) / 3  # 3x3 supersampling offsets
    for _ in range(int(rng.integers(1, 5))):
        for _try in range(30):
            radius = rng.uniform(8.0, 22.0)
            cy, cx = rng.uniform(radius * 0.8, h - radius * 0.8), rng.uniform(
                radius * 0.8, w - radius * 0.8)
            guess = (cx - radius, cy - radius, cx + radius, cy + radius)
            if all(_iou(guess, b) <= 0.2 for b in boxes):
                break
        else:
            continue
        cls = int(rng.integers(len(CLASS_NAMES)))
        aspect = np.exp(rng.uniform(np.log(0.75), np.log(1.33)))
        angle = np.deg2rad(rng.uniform(-25, 25))
        mirror = 1.0 if rng.random() < 0.5 else -1.0
        y0, y1 = max(0, int(cy - 1.5 * radius)), min(h, int(cy + 1.5 * radius) + 1)
        x0, x1 = max(0, int(cx - 1.5 * radius)), min(w, int(cx + 1.5 * radius) + 1)
        yy = np.arange(y0, y1)[:, None, None, None] + sub[None, None, :, None]
        xx = np.arange(x0, x1)[None, :, None, None] + sub[None, None, None, :]
        dy, dx = (yy - cy) / radius, (xx - cx) / radius
        px = mirror * (np.cos(angle) * dx + np.sin(angle) * dy) / aspect
        py = (-np.sin(angle) * dx + np.cos(angle) * dy) * aspect
        alpha = inside(cls, px, py).mean(axis=(2, 3))  # (y1 - y0, x1 - x0) coverage
        on = np.argwhere(alpha >= 0.5)
        if len(on) < 9:
            continue
        colour = _colour(rng)
        region = img[y0:y1, x0:x1]
        if rng.random() < 0.85:  # light on dark ground or the reverse
            ground = float(region[alpha >= 0.5].mean())
            want = rng.uniform(0.05, 0.4) if ground > 0.5 else rng.uniform(0.6, 1.0)
            colour = colour * (want / max(float(colour.max()), 1e-3))
        if rng.random() < 0.3:  # textured by another photo
            tex = _background(photos[rng.integers(len(photos))], y1 - y0, x1 - x0, rng)
            fg = colour * (0.6 + 0.8 * tex.mean(axis=2, keepdims=True))
        else:
            d = rng.normal(size=2)
            d /= np.linalg.norm(d) + 1e-9
            gy, gx = np.mgrid[y0:y1, x0:x1]
            shade = 1 + rng.uniform(0, 0.3) * (d[0] * (gy - cy) + d[1] * (gx - cx)) / radius
            fg = colour * shade[..., None]
        a = (alpha * rng.uniform(0.85, 1.0))[..., None]
        img[y0:y1, x0:x1] = region * (1 - a) + fg * a
        by0, bx0 = on.min(axis=0)
        by1, bx1 = on.max(axis=0)
        # VOC pixel coordinates: 1-based, inclusive
        box = (float(x0 + bx0 + 1), float(y0 + by0 + 1), float(x0 + bx1 + 1),
               float(y0 + by1 + 1))
        boxes.append((box[0], box[1], box[2], box[3]))
        cut = box[0] <= 1 or box[1] <= 1 or box[2] >= w or box[3] >= h  # at the border
        objects.append({"name": CLASS_NAMES[cls], "box": box, "truncated": int(cut)})
    if not objects:  # every placement failed (rare): try again with the next draws
        return render_scene(rng, photos)
    d = rng.normal(size=2)
    d /= np.linalg.norm(d) + 1e-9
    gy, gx = np.mgrid[0:h, 0:w]
    light = 1 + rng.uniform(0, 0.5) * (d[0] * (gy - h / 2) + d[1] * (gx - w / 2)) / max(h, w)
    img = img * light[..., None] * rng.uniform(0.8, 1.2, size=3)
    img = np.clip(img, 0, 1) ** rng.uniform(0.7, 1.4)
    img = img + rng.normal(0, rng.uniform(0, 0.03), size=img.shape)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8), objects


def generate(out_dir: Path, rows: int, seed: int) -> None:
    """Write a generated detection data set in the Pascal VOC layout (module docstring).

    Args:
        out_dir: Folder receiving ``JPEGImages/``, ``Annotations/``,
            ``ImageSets/Main/{trainval,test}.txt`` and ``label_map.pbtxt``.
        rows: Trainval scenes; the test list gets ``max(rows // 4, 8)`` more.
        seed: Random seed; the same (rows, seed) gives identical files.

    """
    from PIL import Image

    out = Path(out_dir)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = _photos()
    lists: dict[str, list[str]] = {"trainval": [], "test": []}
    n_test = max(rows // 4, 8)
    for i in range(rows + n_test):
        sid = f"scene_{i:06d}"
        img, objects = render_scene(rng, photos)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        (out / "JPEGImages" / f"{sid}.jpg").write_bytes(buf.getvalue())
        write_annotation(out / "Annotations" / f"{sid}.xml", f"{sid}.jpg", img.shape[1],
                         img.shape[0], objects, folder="generated")
        lists["trainval" if i < rows else "test"].append(sid)
    for name, ids in lists.items():
        (out / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(ids) + "\n")
    write_label_map(out / "label_map.pbtxt", CLASS_NAMES)


# --------------------------------------------------------------------------- model
def uses_parent(params: Mapping[str, Any]) -> bool:
    """The backbone comes from the registered cifar10 champion unless ``backbone=scratch``."""
    return params.get("backbone", "parent") == "parent"


def parent_convolutions(parent: Any) -> list[Any]:
    """The cifar10 CNN's two convolutions (5x5x3x32, 5x5x32x64), in order.

    Raises:
        ValueError: The parent model has no such layers.

    """
    import keras

    layers = [lay for lay in _all_layers(parent) if isinstance(lay, keras.layers.Conv2D)]
    shapes = [tuple(lay.kernel.shape) for lay in layers[:2]]
    if shapes != [(5, 5, 3, 32), (5, 5, 32, 64)]:
        raise ValueError(f"the parent model's first convolutions have kernels {shapes}; the "
                         "detector's backbone needs the cifar10 CNN's (5,5,3,32), (5,5,32,64)")
    return layers[:2]


def _all_layers(model: Any) -> list[Any]:
    out = []
    for lay in model.layers:
        out.extend(_all_layers(lay) if hasattr(lay, "layers") else [lay])
    return out


def build_model(params: Mapping[str, Any], stats: Mapping[str, Any], parent: Any) -> Any:
    """The detector; its backbone copied from ``parent`` (the cifar10 champion) or fresh.

    Args:
        params: Run params (``backbone``, ``learning_rate``).
        stats: Preprocessing statistics: the run's classes (one heat map each). Pixels
            are scaled by 1/255, which is the cifar10 model's own min/max rescaling.
        parent: The loaded parent model, or None (``backbone=scratch``).

    Returns:
        A compiled ``keras.Model``: ``pixels`` (96, 96, 3) float 0-255 -> the raw
        (12, 12, classes + 4) map. Backbone layers are named ``backbone_conv1/2``.

    """
    import keras

    from tasks.features.detection import detection_classes

    n_classes = len(data_class_names(stats))
    if not n_classes:
        raise ValueError("the run's statistics name no classes (stats.json 'classes')")

    layers = keras.layers
    inp = keras.Input(shape=(SIZE, SIZE, 3), dtype="float32", name="pixels")
    x = layers.Rescaling(1.0 / 255.0, name="normalise")(inp)
    conv1 = layers.Conv2D(32, 5, padding="same", activation="relu", name="backbone_conv1")
    conv2 = layers.Conv2D(64, 5, padding="same", activation="relu", name="backbone_conv2")
    x = layers.MaxPooling2D(2, padding="same", name="backbone_pool1")(conv1(x))
    x = layers.MaxPooling2D(2, padding="same", name="backbone_pool2")(conv2(x))
    if parent is not None:  # copies: the detector keeps no reference to the parent
        for mine, theirs in zip((conv1, conv2), parent_convolutions(parent), strict=True):
            mine.set_weights([np.array(w) for w in theirs.get_weights()])
    x = layers.Conv2D(96, 3, strides=2, padding="same", activation="relu", name="head_conv1")(x)
    x = layers.Conv2D(96, 3, padding="same", activation="relu", name="head_conv2")(x)
    x = layers.Conv2D(96, 3, padding="same", activation="relu", name="head_conv3")(x)
    heat = layers.Conv2D(n_classes, 1, name="heatmap",
                         bias_initializer=keras.initializers.Constant(-2.19))(x)
    reg = layers.Conv2D(4, 1, name="size_offset")(x)
    out = layers.Concatenate(name="raw_map")([heat, reg])
    model = keras.Model(inp, out, name="detector")
    model.compile(optimizer=keras.optimizers.Adam(float(params.get("learning_rate", 1e-3))),
                  loss=detection_classes()["CenterNetLoss"](n_classes))
    return model


# No class_names: the classes are the data's (a label map, else the annotations' names).
SOURCE = VocDetectionSource(default_location="synthetic:800:0", generator=generate)

SPEC = UseCaseSpec(
    name="object_detection",
    description=__doc__ or "",
    source=SOURCE,
    # Real annotation folders have a few broken files: up to 5% of images may be
    # quarantined (with file and reason) before the run fails.
    preprocess=PreprocessSpec(features=(Feature("scene", "detection"),), label=None,
                              max_bad_fraction=0.05, batch_size=64),
    split=SplitSpec(validation_from="train", validation_size=150, seed=42,
                    shards={"train": 2, "validation": 1, "test": 1}),
    model=ModelSpec(
        build=build_model, input_key="scene", label_key=None, objective="detection",
        serving_input=FRONT,
        parent=ParentModel(PARENT, "champion", used=uses_parent),
        ablation=AblationSpec(baseline="transfer", arms={"from_scratch": {"backbone": "scratch"}}),
    ),
    gate=GateSpec(metric="test_map_50", min_value=0.6, higher_is_better=True,
                  max_regression=0.02),
    params={
        "epochs": RunParam(20, "integer", "Passes over the training scenes", minimum=1,
                           maximum=1000),
        "batch_size": RunParam(32, "integer", "Mini-batch size", minimum=1, maximum=1024),
        "learning_rate": RunParam(1e-3, "number", "Adam learning rate", minimum=1e-6,
                                  maximum=1.0),
        "backbone": RunParam("parent", "string", "Backbone of the registered model: copied "
                             "from the cifar10 champion ('parent') or random ('scratch')",
                             enum=("parent", "scratch")),
        "ablation": RunParam(True, "boolean", "Also train the from-scratch arm with the same "
                             "budget (the transfer ablation)"),
        "validation_size": RunParam(150, "integer", "Trainval scenes carved out for "
                                    "validation", minimum=1),
    },
    smoke=SmokeTest("synthetic:40:1", {"epochs": 1, "batch_size": 8, "validation_size": 8},
                    covered_by="tests/e2e/test_object_detection_dag.py"),
    tags=("images", "detection", "books", "transfer-learning"),
)
