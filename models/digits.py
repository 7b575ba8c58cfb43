"""Handwritten digits for the draw-a-digit page: real digits made into MNIST's format.

The books' MNIST chapters recognise handwritten digits, and their demo lets a reader draw
one. MNIST cannot be downloaded here, but scikit-learn bundles **1,797 real handwritten
digits** (UCI's optdigits: 8x8 images, 16 grey levels, 43 writers). The generator turns
them into MNIST's files **the way MNIST itself was made** (LeCun et al.): each digit's ink
(its bounding box) is scaled, keeping its aspect ratio, to fit a 20x20 box with
anti-aliasing (bilinear, so the 16 levels become 0-255 grey levels), then placed in a
28x28 field so that its **centre of mass** is at the field's centre; white ink on black,
as MNIST's ``train-images-idx3-ubyte``. ``bundled:<digits>:<seed>`` writes a seeded,
per-digit stratified 80/20 train/test split of the first ``<digits>`` ones as gzipped
IDX files (``train-*`` and ``t10k-*``); the validation split is carved from train.

The classes are the data's: the label values ``0``-``9`` (recorded with the run and shown
by ``/demo``). ``/demo`` uses this model by default when it is served (``?model=mnist``
for the clothing one). The draw-a-digit page downsamples the drawing exactly so (ink box
into 20x20, centre of mass at the centre).

**Model**: the books' CNN (``models.mnist``: conv 5x5 32 + pool, conv 5x5 64 + pool,
dense 1024 + dropout 0.5, softmax 10; Adam), on raw 0-255 pixels rescaled in the model.
**Deviation from the book**: the book trains on MNIST's 55,000 images; 1,294 are here, so
training shifts and scales the digits a little (Keras' random translation/zoom/rotation
layers, active only while training), as the small set would otherwise teach the CNN the
exact placement of 8x8 pixels that a drawn digit never has.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.idx import write_idx
from tasks.data.sources import IdxImageSource
from tasks.spec import (
    Feature,
    GateSpec,
    ModelSpec,
    PreprocessSpec,
    RunParam,
    SmokeTest,
    SplitSpec,
    UseCaseSpec,
)

BOX, FIELD = 20, 28
TEST_FRACTION = 0.2


def mnist_style(image: np.ndarray) -> np.ndarray:
    """One digit (any size, ink > 0) as MNIST made its images: 28x28 uint8.

    The ink's bounding box is resized, aspect ratio kept, so its longer side is 20 pixels
    (bilinear: anti-aliased grey levels), scaled to 0-255 by the image's own maximum
    level (16 for the bundled digits), and pasted into a 28x28 black field with its centre
    of mass at the centre (rounded to whole pixels, kept inside the field).
    """
    from PIL import Image

    img = np.asarray(image, np.float32)
    rows, cols = np.nonzero(img > 0)
    if not len(rows):
        return np.zeros((FIELD, FIELD), np.uint8)
    ink = img[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = ink.shape
    scale = BOX / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.asarray(Image.fromarray(ink).resize((tw, th), Image.Resampling.BILINEAR))
    small = np.clip(small * (255.0 / max(float(img.max()), 1e-6)), 0, 255)
    mass = small.sum()
    cy = (np.arange(th)[:, None] * small).sum() / mass
    cx = (np.arange(tw)[None, :] * small).sum() / mass
    oy = int(np.clip(round((FIELD - 1) / 2 - cy), 0, FIELD - th))
    ox = int(np.clip(round((FIELD - 1) / 2 - cx), 0, FIELD - tw))
    out = np.zeros((FIELD, FIELD), np.float32)
    out[oy:oy + th, ox:ox + tw] = small
    return np.round(out).astype(np.uint8)


def generate(out_dir: Path, digits: int, seed: int) -> None:
    """Write scikit-learn's bundled digits as MNIST IDX files (module docstring).

    Args:
        out_dir: Folder receiving ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``.
        digits: How many of the 1,797 digits to use (the first ones).
        seed: Seed of the stratified train/test split.

    """
    from sklearn.datasets import load_digits

    d = load_digits()
    n = min(int(digits), len(d.images))
    images = np.stack([mnist_style(im) for im in d.images[:n]])
    labels = d.target[:n].astype(np.uint8)
    rng = np.random.default_rng(seed)
    test = np.zeros(n, bool)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        test[members[:round(len(members) * TEST_FRACTION)]] = True
    out = Path(out_dir)
    for prefix, rows in (("train", ~test), ("t10k", test)):
        order = rng.permutation(np.flatnonzero(rows))
        write_idx(out / f"{prefix}-images-idx3-ubyte.gz", images[order])
        write_idx(out / f"{prefix}-labels-idx1-ubyte.gz", labels[order])


def build_model(params: Mapping[str, Any], stats: Mapping[str, Any]) -> Any:
    """The books' CNN (``models.mnist``), with small random shifts while training.

    Args:
        params: Run params (``learning_rate``, ``augment``).
        stats: Preprocessing statistics (the image min/max the model rescales with).

    Returns:
        A compiled ``keras.Model`` taking ``pixels`` (28, 28) float32 0-255.

    """
    import keras

    from models.mnist import build_model as books_cnn

    cnn = books_cnn({"variant": "cnn", "learning_rate": params.get("learning_rate", 1e-3)},
                    stats)
    if not params.get("augment", True):
        return cnn
    layers = keras.layers
    inp = keras.Input(shape=(FIELD, FIELD), dtype="float32", name="pixels")
    x = layers.Reshape((FIELD, FIELD, 1))(inp)
    x = layers.RandomRotation(0.04, fill_mode="constant", seed=1)(x)
    x = layers.RandomZoom(0.12, fill_mode="constant", seed=2)(x)
    x = layers.RandomTranslation(0.08, 0.08, fill_mode="constant", seed=3)(x)
    x = layers.Reshape((FIELD, FIELD))(x)
    model = keras.Model(inp, cnn(x), name="digits_cnn")
    model.compile(optimizer=keras.optimizers.Adam(float(params.get("learning_rate", 1e-3))),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


SPEC = UseCaseSpec(
    name="digits",
    description=__doc__ or "",
    source=IdxImageSource(default_location="bundled:1797:0", generator=generate),
    preprocess=PreprocessSpec(features=(Feature("image", "uint8"),), label="label"),
    # 1,438 train (of which 144 validation), 359 test.
    split=SplitSpec(validation_from="train", validation_size=144, stratify_by="label",
                    seed=42, shards={"train": 1, "validation": 1, "test": 1}),
    model=ModelSpec(build=build_model, input_key="image", label_key="label",
                    objective="classification"),
    gate=GateSpec(metric="test_accuracy", min_value=0.97, higher_is_better=True,
                  max_regression=0.01),
    params={
        "epochs": RunParam(40, "integer", "Training epochs", minimum=1, maximum=500),
        "batch_size": RunParam(32, "integer", "Mini-batch size", minimum=1, maximum=4096),
        "learning_rate": RunParam(1e-3, "number", "Adam learning rate", minimum=1e-6,
                                  maximum=1.0),
        "augment": RunParam(True, "boolean", "Small random rotations, zooms and shifts "
                            "while training"),
        "validation_size": RunParam(144, "integer", "Training digits carved out for "
                                    "validation", minimum=1),
    },
    # The Chromium test trains it for real (15 epochs), serves it and draws the ten digits.
    smoke=SmokeTest("bundled:300:0", {"epochs": 1, "batch_size": 32, "validation_size": 24},
                    covered_by="tests/tasks/serving/test_draw_digits_browser.py"),
    tags=("images", "classification", "books", "demo"),
)
