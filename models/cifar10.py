"""CIFAR-10 colour image classification: the books' CNN with data augmentation.

**Data.** The real CIFAR-10 python batches (``data_batch_1..5``, ``test_batch``,
``batches.meta``) via ``source_dir`` (:class:`tasks.data.cifar.CifarSource`). CIFAR-10
cannot be downloaded here, so the default source is ``synthetic:5000:0``: a seeded
generator writing the same pickle format (5,000 training images over the five batch
files, 1,000 test images; CIFAR's 5:1 ratio; 500 training images are carved out for
validation). Generative model, per image:

- *background*: a 32x32 window of a real photo that a package ships (scikit-image's
  ``skimage.data`` astronaut, coffee, chelsea, rocket, hubble_deep_field,
  immunohistochemistry, motorcycle, retina; the grey brick, grass, gravel, camera, moon
  and coins tinted with a random colour; scikit-learn's ``china.jpg`` and
  ``flower.jpg``), at one of three scales, randomly flipped and rotated by 90° steps;
- the background's contrast about its mean is scaled by 0.4-1 (calm to busy);
- *object* (the class): one of ten shapes (disc, ring, square, triangle, cross, star,
  crescent, bar, double bar, corner) drawn anti-aliased from a signed distance, with
  radius 5-13 px, aspect 0.75-1.33, roughly upright (rotation ±25°) and facing left or
  right with equal probability, centre at 16 ± 3 px (clipped to [9, 23]); its colour is
  any hue with saturation 0.25-1; in 85% of images its brightness is set against the
  ground under it (dark on light, light on dark), otherwise left to chance; it is flat
  with a linear shading of ±30% or (30%) textured by a grey window of another photo, at
  opacity 0.8-1. Classes are defined by shape only, so left-right flips, hue, contrast
  and brightness changes never change the label;
- *clutter*: with probability 0.6 a small ellipse (radius 1.5-3.5 px) elsewhere;
- *lighting*: a linear illumination gradient (strength 0-0.6, any direction),
  per-channel gains 0.8-1.2 (colour cast), gamma 0.7-1.4, Gaussian noise σ 0-0.04.

Same (rows, seed) gives byte-identical files (about 1 ms per image, plus ~5 s to load
the photos). Objects vary in position, scale, colour and lighting over real textures and
there are 450 training images per class, so the CNN that sees each image many times
overfits without augmentation (see the ablation in the README).

**Model** (the books' CIFAR-10 CNN): raw 0-255 pixels (32, 32, 3) -> rescale to [0, 1]
with the training split's full-pass min/max -> ``ImageAugmentation`` (training only:
per-image random 24x24 crop, left-right flip, hue ±0.05, contrast 0.3-1.0, brightness
±0.2, the book's ``pre_process_image``; at inference the centre 24x24 crop, the book's
``resize_image_with_crop_or_pad``) -> conv 5x5 32 + ReLU -> max-pool 2 -> conv 5x5 64 +
ReLU -> max-pool 2 -> FC 256 + ReLU -> dropout 0.5 -> FC 128 + ReLU -> dropout 0.5 -> 10
softmax (the book drops out after both FC layers), Adam, batches of 100. The book fixes
two distorted copies of each image and then samples them 50 times each; here every use
of an image draws a fresh distortion and ``epochs`` counts passes over the original
images.

**Learning rate.** The book's Adam 1e-4 runs 25,000 steps of 100 images (2.5 M image
uses); a run here affords about a third of that per arm (160 epochs x 45 steps). At 1e-4
neither arm converges in such a budget, and then the unaugmented arm, which learns
faster, is ahead at the end: measured on 9,000 generated training images, 60 epochs at
1e-4 left the augmented model at 0.55 validation accuracy and still climbing, and the
unaugmented one ahead all the way (epoch 20: 0.44 vs 0.33). The default is therefore
1e-3; ``--param learning_rate=0.0001`` gives the book's rate.

**Ablation** (same run, same data, seed and budget): the same network without
augmentation (centre crop at training too) is trained as a child MLflow run; the test
accuracy of both arms, their learning curves and ``ablation.json`` are logged with the
registered run. At the default 160 epochs augmentation wins, 0.7720 against 0.6140 test
accuracy: the unaugmented network fits the 4,500 training images by epoch 40 and its
validation loss then rises, the augmented one still improves at epoch 160.

**Serving**: the registered model takes ``pixels`` (N, 32, 32, 3) raw 0-255 and returns
10 class probabilities; it never augments (the layer is inert outside training).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.hardware import PRECISION_HELP, PRECISIONS, resolve_precision
from tasks.data.cifar import TEST_FILES, TRAIN_FILES, CifarSource, write_batch_file, write_meta
from tasks.spec import (
    AblationSpec,
    Feature,
    GateSpec,
    ModelSpec,
    PreprocessSpec,
    RunParam,
    SmokeTest,
    SplitSpec,
    UseCaseSpec,
)

CLASS_NAMES = ("disc", "ring", "square", "triangle", "cross", "star", "crescent", "bar",
               "double_bar", "corner")
SIDE = 32
BOOK_TEST_ACCURACY = 0.7463  # the book's CIFAR-10 figure (25,000 steps of 100 images)

# --------------------------------------------------------------------------- generator
_COLOUR_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
                  "immunohistochemistry", "retina")
_GREY_PHOTOS = ("brick", "grass", "gravel", "camera", "moon", "coins")


def _photos() -> list[np.ndarray]:
    """Real photos shipped by scikit-image and scikit-learn, float32 RGB in [0, 1].

    Each photo is kept at three scales (short side 48, 96 and 192 px), so a 32x32 window
    shows anything from a large part of the scene to a close-up texture.
    """
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    raw: list[np.ndarray] = []
    for name in _COLOUR_PHOTOS:
        raw.append(np.asarray(getattr(skimage.data, name)())[..., :3])
    raw.append(np.asarray(skimage.data.stereo_motorcycle()[0]))
    for name in _GREY_PHOTOS:
        grey = np.asarray(getattr(skimage.data, name)())
        raw.append(np.repeat(grey[..., None], 3, axis=2))  # tinted per image later
    raw.extend(np.asarray(img) for img in load_sample_images().images)
    out = []
    for img in raw:
        pil = Image.fromarray(img.astype(np.uint8))
        for short in (48, 96, 192):
            scale = short / min(pil.size)
            size = (max(SIDE, round(pil.size[0] * scale)), max(SIDE, round(pil.size[1] * scale)))
            out.append(np.asarray(pil.resize(size, Image.Resampling.BILINEAR),
                                  dtype=np.float32) / 255.0)
    return out


def _window(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = photo.shape[:2]
    y, x = rng.integers(0, h - SIDE + 1), rng.integers(0, w - SIDE + 1)
    win = photo[y:y + SIDE, x:x + SIDE]
    if rng.random() < 0.5:
        win = win[:, ::-1]
    return np.rot90(win, int(rng.integers(4)))


def _polygon_radius(theta: np.ndarray, n: int) -> np.ndarray:
    """Boundary radius of a regular n-gon of circumradius 1 at angle ``theta``."""
    sector = 2 * np.pi / n
    return np.cos(np.pi / n) / np.cos(np.mod(theta, sector) - np.pi / n)


def _box(px: np.ndarray, py: np.ndarray, hx: float, hy: float) -> np.ndarray:
    qx, qy = np.abs(px) - hx, np.abs(py) - hy
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0)


def shape_distance(cls: int, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Signed distance (object radius = 1, negative inside) of class ``cls``'s shape."""
    r, theta = np.hypot(px, py), np.arctan2(py, px)
    if cls == 0:  # disc
        return r - 1.0
    if cls == 1:  # ring
        return np.abs(r - 0.72) - 0.28
    if cls == 2:  # square
        return _box(px, py, 0.78, 0.78)
    if cls == 3:  # triangle
        return (r - _polygon_radius(theta, 3)) * 0.5
    if cls == 4:  # cross
        return np.minimum(_box(px, py, 1.0, 0.3), _box(px, py, 0.3, 1.0))
    if cls == 5:  # five-pointed star
        t = np.abs(np.mod(theta, 2 * np.pi / 5) - np.pi / 5) / (np.pi / 5)
        return (r - (0.42 + 0.58 * t)) * 0.6
    if cls == 6:  # crescent
        return np.maximum(r - 1.0, -(np.hypot(px - 0.5, py) - 0.78))
    if cls == 7:  # bar
        return _box(px, py, 1.0, 0.26)
    if cls == 8:  # double bar
        return np.minimum(_box(px, py - 0.5, 1.0, 0.2), _box(px, py + 0.5, 1.0, 0.2))
    if cls == 9:  # corner (an L)
        return np.minimum(_box(px + 0.7, py, 0.28, 1.0), _box(px, py - 0.72, 0.98, 0.28))
    raise ValueError(f"unknown class {cls}")


def _hsv_colour(rng: np.random.Generator) -> np.ndarray:
    import colorsys

    return np.asarray(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.25, 1.0),
                                          rng.uniform(0.3, 1.0)), np.float32)


def render(cls: int, rng: np.random.Generator, photos: list[np.ndarray]) -> np.ndarray:
    """One 32x32x3 uint8 image of class ``cls`` (see the module docstring)."""
    bg = _window(photos[rng.integers(len(photos))], rng).astype(np.float32)
    if np.allclose(bg[..., 0], bg[..., 1]):  # a grey texture: tint it
        bg = bg * (0.5 + _hsv_colour(rng))
    mean = bg.mean(axis=(0, 1))
    bg = mean + (bg - mean) * rng.uniform(0.4, 1.0)  # calmer or busier backgrounds
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32) + 0.5
    # clutter first, so the object may cover it
    if rng.random() < 0.6:
        cy, cx = rng.uniform(2, SIDE - 2, size=2)
        ry, rx = rng.uniform(1.5, 3.5, size=2)
        m = np.clip(1.5 - np.hypot((yy - cy) / ry, (xx - cx) / rx) * 1.5, 0, 1)[..., None]
        bg = bg * (1 - m) + _hsv_colour(rng) * m
    radius = rng.uniform(5.0, 13.0)
    aspect = np.exp(rng.uniform(np.log(0.75), np.log(1.33)))
    cy, cx = np.clip(16 + rng.normal(0, 3, size=2), 9, 23)
    angle = np.deg2rad(rng.uniform(-25, 25))  # roughly upright, as photographed objects
    mirror = 1.0 if rng.random() < 0.5 else -1.0  # facing left or right
    dy, dx = (yy - cy) / radius, (xx - cx) / radius
    px = mirror * (np.cos(angle) * dx + np.sin(angle) * dy) / aspect
    py = (-np.sin(angle) * dx + np.cos(angle) * dy) * aspect
    alpha = np.clip(0.5 - shape_distance(cls, px, py) * radius, 0, 1)
    alpha = (alpha * rng.uniform(0.8, 1.0))[..., None]
    colour = _hsv_colour(rng)
    if rng.random() < 0.85:  # mostly a light object on a dark ground or the reverse
        ground = float(bg[alpha[..., 0] > 0.5].mean()) if (alpha > 0.5).any() else 0.5
        want = rng.uniform(0.05, 0.45) if ground > 0.5 else rng.uniform(0.55, 1.0)
        colour = colour * (want / max(float(colour.max()), 1e-3))
    if rng.random() < 0.3:  # textured by another photo's grey window
        tex = _window(photos[rng.integers(len(photos))], rng).mean(axis=2, keepdims=True)
        fg = colour * (0.6 + 0.8 * tex)
    else:  # flat colour with a linear shading
        d = rng.normal(size=2)
        d /= np.linalg.norm(d) + 1e-9
        shade = 1 + rng.uniform(0, 0.3) * (d[0] * (yy - cy) + d[1] * (xx - cx)) / radius
        fg = colour * shade[..., None]
    img = bg * (1 - alpha) + fg * alpha
    d = rng.normal(size=2)
    d /= np.linalg.norm(d) + 1e-9
    light = 1 + rng.uniform(0, 0.6) * (d[0] * (yy - 16) + d[1] * (xx - 16)) / SIDE
    img = img * light[..., None] * rng.uniform(0.8, 1.2, size=3)
    img = np.clip(img, 0, 1) ** rng.uniform(0.7, 1.4)
    img = img + rng.normal(0, rng.uniform(0, 0.04), size=img.shape)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def generate(out_dir: Path, rows: int, seed: int) -> None:
    """Write a synthetic CIFAR-10-format data set (see the module docstring).

    Args:
        out_dir: Directory for ``data_batch_1..5``, ``test_batch`` and ``batches.meta``.
        rows: Training images (spread over the five batch files); the test batch gets
            ``rows // 5`` (CIFAR-10's 50,000 : 10,000).
        seed: Random seed; the same (rows, seed) gives byte-identical files.

    """
    rng = np.random.default_rng(seed)
    photos = _photos()
    n_test = max(rows // 5, 10)
    per_file = np.full(len(TRAIN_FILES), rows // len(TRAIN_FILES))
    per_file[: rows % len(TRAIN_FILES)] += 1
    for name, n, label in [*zip(TRAIN_FILES, per_file, range(1, 6), strict=True),
                           (TEST_FILES[0], n_test, 0)]:
        # balanced classes in random order, as in CIFAR-10
        labels = rng.permutation(np.arange(int(n)) % len(CLASS_NAMES))
        images = np.stack([render(int(c), rng, photos) for c in labels])
        title = f"training batch {label} of 5" if label else "testing batch 1 of 1"
        write_batch_file(Path(out_dir) / name, images, labels, title)
    write_meta(Path(out_dir) / "batches.meta", CLASS_NAMES, int(per_file[0]))


# --------------------------------------------------------------------------- model
def build_model(params: Mapping[str, Any], stats: Mapping[str, Any]) -> Any:
    """The books' CIFAR-10 CNN, with or without training-time augmentation.

    Args:
        params: Run params (``augment``, ``learning_rate``).
        stats: Preprocessing statistics; the image feature's min/max rescale to [0, 1].

    Returns:
        A compiled ``keras.Model`` taking ``pixels`` (32, 32, 3), float32, 0-255. Its
        layers ``augment`` (24x24 out) and ``cnn`` (the network after it) are named so
        tests can rebuild the deterministic path.

    """
    import keras

    from tasks.features.layers import image_augmentation_layer

    img = stats["train"]["features"]["image"]
    lo, hi = float(img["min"]), float(img["max"])
    span = (hi - lo) or 1.0
    layers = keras.layers
    inp = keras.Input(shape=(SIDE, SIDE, 3), dtype="float32", name="pixels")
    # float32 whatever the global dtype policy: the distortions' colour maths needs it.
    x = layers.Rescaling(1.0 / span, offset=-lo / span, name="normalise", dtype="float32")(inp)
    if params.get("augment", True):
        x = image_augmentation_layer()(
            crop=24, hue=0.05, contrast=(0.3, 1.0), brightness=0.2,
            seed=int(params.get("seed", 42)), name="augment", dtype="float32")(x)
    else:
        x = layers.CenterCrop(24, 24, name="augment")(x)
    # The distortions stay float32; the network computes in bf16 with precision=
    # mixed_bfloat16 (fp32 weights) and its softmax stays float32.
    dt = resolve_precision(params.get("precision", "float32"))
    cnn = keras.Sequential([
        keras.Input(shape=(24, 24, 3)),
        layers.Conv2D(32, 5, padding="same", activation="relu", dtype=dt),
        layers.MaxPooling2D(2, padding="same", dtype=dt),
        layers.Conv2D(64, 5, padding="same", activation="relu", dtype=dt),
        layers.MaxPooling2D(2, padding="same", dtype=dt),
        layers.Flatten(dtype=dt),
        layers.Dense(256, activation="relu", dtype=dt),
        layers.Dropout(0.5, dtype=dt),
        layers.Dense(128, activation="relu", dtype=dt),
        layers.Dropout(0.5, dtype=dt),
        layers.Dense(10, activation="softmax", dtype="float32"),
    ], name="cnn")
    out = layers.Identity(name="probabilities")(cnn(x))
    model = keras.Model(inp, out, name="cifar10_cnn")
    model.compile(optimizer=keras.optimizers.Adam(float(params.get("learning_rate", 1e-3))),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


SOURCE = CifarSource(default_location="synthetic:5000:0", generator=generate)

SPEC = UseCaseSpec(
    name="cifar10",
    description=__doc__ or "",
    source=SOURCE,
    preprocess=PreprocessSpec(features=(Feature("image", "uint8"),), label="label"),
    # CIFAR-10 has no validation file: 10% of training is carved out, stratified.
    split=SplitSpec(validation_from="train", validation_size=500, stratify_by="label",
                    seed=42, shards={"train": 4, "validation": 1, "test": 1}),
    model=ModelSpec(
        build=build_model, input_key="image", label_key="label", objective="classification",
        class_names=CLASS_NAMES, book_figures={"test_accuracy": BOOK_TEST_ACCURACY},
        ablation=AblationSpec(baseline="augmentation",
                              arms={"no_augmentation": {"augment": False}}),
    ),
    gate=GateSpec(metric="test_accuracy", min_value=0.6, higher_is_better=True,
                  max_regression=0.01),
    params={
        "epochs": RunParam(160, "integer", "Passes over the training images (each pass draws "
                           "fresh distortions)", minimum=1, maximum=500),
        "batch_size": RunParam(100, "integer", "Mini-batch size (the book: 100)", minimum=1,
                               maximum=8192),
        "learning_rate": RunParam(1e-3, "number", "Adam learning rate (the book: 1e-4 for "
                                  "25,000 steps; see the module docstring)",
                                  minimum=1e-6, maximum=1.0),
        "augment": RunParam(True, "boolean", "Train the registered model with the book's "
                            "augmentation"),
        "ablation": RunParam(True, "boolean", "Also train the arms of the ablation "
                             "(no augmentation) with the same budget"),
        "precision": RunParam("float32", "string", PRECISION_HELP, enum=PRECISIONS),
        "validation_size": RunParam(500, "integer", "Rows carved from train for validation",
                                    minimum=1),
    },
    smoke=SmokeTest("synthetic:300:0", {"epochs": 2},
                    covered_by="tests/e2e/test_cifar10_dag.py"),
    tags=("images", "classification", "books", "augmentation"),
)
