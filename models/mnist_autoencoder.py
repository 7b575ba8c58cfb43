"""MNIST-format image autoencoder (the books' 784-256-128-16-128-256-784).

Same images and split as ``mnist`` (Fashion-MNIST by default). The encoder compresses a
28x28 image to 16 numbers, the decoder reconstructs it; sigmoid output, squared-error
loss against the image rescaled to [0, 1] with the training split's min/max. The served
model takes raw 0-255 pixels and returns the reconstruction in [0, 1] (28x28), which the
browser demo shows beside the drawing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.mnist import SOURCE
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


def _range(stats: Mapping[str, Any]) -> tuple[float, float]:
    img = stats["train"]["features"]["image"]
    return float(img["min"]), (float(img["max"]) - float(img["min"])) or 1.0


def target(x: Any, y: Any, stats: Mapping[str, Any]) -> Any:
    """The image itself, rescaled to [0, 1]: what the decoder must reproduce."""
    lo, span = _range(stats)
    return (x - lo) / span


def build_model(params: Mapping[str, Any], stats: Mapping[str, Any]) -> Any:
    """784-256-128-16-128-256-784 with ReLU inside and a sigmoid output."""
    import keras

    lo, span = _range(stats)
    layers = keras.layers
    inp = keras.Input(shape=(28, 28), dtype="float32", name="pixels")
    x = layers.Rescaling(1.0 / span, offset=-lo / span, name="normalise")(inp)
    x = layers.Flatten()(x)
    for units in (256, 128):
        x = layers.Dense(units, activation="relu")(x)
    x = layers.Dense(16, activation="relu", name="code")(x)
    for units in (128, 256):
        x = layers.Dense(units, activation="relu")(x)
    x = layers.Dense(784, activation="sigmoid")(x)
    out = layers.Reshape((28, 28), name="reconstruction")(x)
    model = keras.Model(inp, out, name="mnist_autoencoder")
    model.compile(optimizer=keras.optimizers.Adam(float(params["learning_rate"])), loss="mse")
    return model


SPEC = UseCaseSpec(
    name="mnist_autoencoder",
    description=__doc__ or "",
    source=SOURCE,
    preprocess=PreprocessSpec(features=(Feature("image", "uint8"),), label="label"),
    split=SplitSpec(validation_from="train", validation_size=5000, stratify_by="label",
                    seed=42, shards={"train": 4, "validation": 1, "test": 1}),
    model=ModelSpec(build=build_model, input_key="image", label_key="label",
                    objective="autoencoder", target=target),
    gate=GateSpec(metric="test_reconstruction_mse", max_value=0.03, higher_is_better=False,
                  max_regression=0.002),
    params={
        "epochs": RunParam(10, "integer", "Training epochs", minimum=1, maximum=500),
        "batch_size": RunParam(256, "integer", "Mini-batch size", minimum=1, maximum=8192),
        "learning_rate": RunParam(1e-3, "number", "Adam learning rate", minimum=1e-6,
                                  maximum=1.0),
        "validation_size": RunParam(5000, "integer", "Rows carved from train for validation",
                                    minimum=1),
    },
    # The tiny end-to-end test's run (tests/e2e/test_use_cases.py).
    smoke=SmokeTest(None, {"epochs": 2, "batch_size": 64, "validation_size": 50}),
    tags=("images", "autoencoder", "books"),
)
