"""Breast-cancer diagnosis by logistic regression (the books' binary classification).

Data: scikit-learn's bundled Wisconsin diagnostic breast-cancer set (569 real cases, 30
numeric features), exported to CSV by the ingest step. Model: sigmoid(Wx + b) on the
z-scored features — logistic regression with a decision boundary, as in the books.
Target: 1 = benign, 0 = malignant (scikit-learn's coding).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.data.sources import Column, TabularSource
from tasks.spec import (
    RATIO,
    Choice,
    Feature,
    GateSpec,
    LogUniform,
    ModelSpec,
    PreprocessSpec,
    RunParam,
    SmokeTest,
    SplitSpec,
    UseCaseSpec,
)

FEATURES = (
    "mean_radius", "mean_texture", "mean_perimeter", "mean_area", "mean_smoothness",
    "mean_compactness", "mean_concavity", "mean_concave_points", "mean_symmetry",
    "mean_fractal_dimension", "radius_error", "texture_error", "perimeter_error",
    "area_error", "smoothness_error", "compactness_error", "concavity_error",
    "concave_points_error", "symmetry_error", "fractal_dimension_error", "worst_radius",
    "worst_texture", "worst_perimeter", "worst_area", "worst_smoothness",
    "worst_compactness", "worst_concavity", "worst_concave_points", "worst_symmetry",
    "worst_fractal_dimension",
)


def export_bundled(out_dir: Path, rows: int, seed: int) -> None:
    """Write scikit-learn's breast-cancer data as ``breast_cancer.csv`` (rows/seed unused)."""
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = [n.replace(" ", "_") for n in data.feature_names]
    if tuple(names) != FEATURES:
        raise RuntimeError(f"unexpected scikit-learn feature names: {names}")
    frame = pd.DataFrame(data.data, columns=names)
    frame["target"] = data.target
    frame.to_csv(Path(out_dir) / "breast_cancer.csv", index=False, float_format="%.6g")


def build_model(params: Mapping[str, Any], stats: Mapping[str, Any]) -> Any:
    """Logistic regression: one sigmoid unit on the 30 standardised features."""
    import keras

    inp = keras.Input(shape=(len(FEATURES),), name="features")
    out = keras.layers.Dense(1, activation="sigmoid", name="probability_benign")(inp)
    model = keras.Model(inp, out, name="logistic_regression")
    model.compile(optimizer=keras.optimizers.Adam(float(params["learning_rate"])),
                  loss="binary_crossentropy", metrics=["accuracy"])
    return model


SPEC = UseCaseSpec(
    name="breast_cancer",
    description=__doc__ or "",
    source=TabularSource(
        columns=(*(Column(c, min=0.0) for c in FEATURES),
                 Column("target", dtype="int64", values=(0, 1))),
        layout={"all": "breast_cancer.csv"},
        default_location="bundled:569:0",
        generator=export_bundled,
    ),
    preprocess=PreprocessSpec(features=tuple(Feature(c, "zscore") for c in FEATURES),
                              label="target", label_dtype="int64", batch_size=1024),
    split=SplitSpec(stratify_by="target", partition_to_split={"all": RATIO},
                    ratios={"train": 0.6, "validation": 0.2, "test": 0.2}, seed=42,
                    shards={"train": 1, "validation": 1, "test": 1}),
    model=ModelSpec(build=build_model, input_key="features", label_key="target",
                    objective="binary", class_names=("malignant", "benign")),
    gate=GateSpec(metric="test_accuracy", min_value=0.95, max_regression=0.02),
    params={
        "epochs": RunParam(60, "integer", "Training epochs", minimum=1, maximum=1000),
        "batch_size": RunParam(16, "integer", "Mini-batch size", minimum=1, maximum=4096,
                               search=Choice((8, 16, 32, 64))),
        "learning_rate": RunParam(0.01, "number", "Adam learning rate", minimum=1e-6,
                                  maximum=10.0, search=LogUniform(1e-3, 0.3)),
    },
    # `mlp tune breast_cancer` varies the two params above; trials are judged on the
    # validation loss (the default TuneSpec): finer than accuracy on 114 rows.
    # The tiny end-to-end test's run (tests/e2e/test_use_cases.py).
    smoke=SmokeTest("bundled:569:0", {"epochs": 20}),
    tags=("tabular", "classification", "books"),
)
