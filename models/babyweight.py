"""Baby weight regression — the books' production-pipeline example.

Predict a newborn's weight (pounds) from the mother's age, plurality, gestation weeks and
the baby's sex; preprocess with Beam at scale, serve over REST, retrain on a schedule and
deploy only above a bar (here: at least 20% lower RMSE than always predicting the mean).

Data: the natality columns the books export from BigQuery (``weight_pounds``,
``is_male``, ``mother_age``, ``plurality``, ``gestation_weeks``; sex coded 0/1 and
plurality 1-4 so the served model takes plain numbers). The public natality table is not
reachable offline, so the default source is a seeded synthetic generator with this
documented generative model:

    mother_age      ~ clip(N(27, 6), 14, 50)
    plurality       ~ 1 (96.5%), 2 (3%), 3 (0.4%), 4 (0.1%)
    gestation_weeks ~ clip(N(39, 2) - 2·(plurality - 1), 22, 45), rounded
    is_male         ~ Bernoulli(0.512)
    weight_pounds   = 7.4 + 0.45·(gestation - 39) - 1.2·(plurality - 1) + 0.25·is_male
                      + 0.012·(age - 27) - 0.0015·(age - 27)² + N(0, 0.9), clipped to [0.5, 14]

Point ``source_dir`` at a directory with a real ``natality.csv`` of these columns to
train on real births.
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


def generate(out_dir: Path, rows: int, seed: int) -> None:
    """Write ``natality.csv`` from the generative model in the module docstring."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    age = np.clip(rng.normal(27, 6, rows), 14, 50).round()
    plurality = rng.choice([1, 2, 3, 4], size=rows, p=[0.965, 0.03, 0.004, 0.001])
    gestation = np.clip(rng.normal(39, 2, rows) - 2 * (plurality - 1), 22, 45).round()
    is_male = (rng.random(rows) < 0.512).astype(int)
    weight = (7.4 + 0.45 * (gestation - 39) - 1.2 * (plurality - 1) + 0.25 * is_male
              + 0.012 * (age - 27) - 0.0015 * (age - 27) ** 2 + rng.normal(0, 0.9, rows))
    pd.DataFrame({
        "weight_pounds": np.clip(weight, 0.5, 14).round(3),
        "is_male": is_male,
        "mother_age": age.astype(int),
        "plurality": plurality,
        "gestation_weeks": gestation.astype(int),
    }).to_csv(Path(out_dir) / "natality.csv", index=False)


def build_model(params: Mapping[str, Any], stats: Mapping[str, Any]) -> Any:
    """A small DNN regressor (the books' custom-estimator regression, RMSE metric)."""
    import keras

    width = sum(len(stats["train"]["features"][f]["vocab"]) + 1
                for f in ("plurality", "is_male")) + 2
    inp = keras.Input(shape=(width,), name="features")
    x = inp
    for units in (64, 32):
        x = keras.layers.Dense(units, activation="relu")(x)
    out = keras.layers.Dense(1, name="weight_pounds")(x)
    model = keras.Model(inp, out, name="babyweight_dnn")
    model.compile(optimizer=keras.optimizers.Adam(float(params["learning_rate"])),
                  loss="mse", metrics=[keras.metrics.RootMeanSquaredError(name="rmse")])
    return model


SPEC = UseCaseSpec(
    name="babyweight",
    description=__doc__ or "",
    source=TabularSource(
        columns=(
            Column("weight_pounds", min=0.0, max=25.0),
            Column("is_male", dtype="int64", values=(0, 1)),
            Column("mother_age", min=10.0, max=65.0),
            Column("plurality", dtype="int64", values=(1, 2, 3, 4, 5)),
            Column("gestation_weeks", min=17.0, max=47.0),
        ),
        layout={"all": "natality.csv"},
        default_location="synthetic:200000:0",
        generator=generate,
    ),
    preprocess=PreprocessSpec(
        features=(Feature("mother_age", "zscore"), Feature("gestation_weeks", "zscore"),
                  Feature("plurality", "onehot"), Feature("is_male", "onehot")),
        label="weight_pounds", label_dtype="float32", batch_size=16384,
    ),
    split=SplitSpec(partition_to_split={"all": RATIO},
                    ratios={"train": 0.8, "validation": 0.1, "test": 0.1}, seed=42,
                    shards={"train": 4, "validation": 1, "test": 1}),
    model=ModelSpec(build=build_model, input_key="features", label_key="weight_pounds",
                    objective="regression"),
    # The books' bar: deploy only when clearly better than the naive mean predictor.
    gate=GateSpec(metric="rmse_improvement_over_baseline", min_value=0.20,
                  max_regression=0.01),
    params={
        "epochs": RunParam(5, "integer", "Training epochs", minimum=1, maximum=500),
        "batch_size": RunParam(512, "integer", "Mini-batch size", minimum=1, maximum=65536),
        "learning_rate": RunParam(3e-3, "number", "Adam learning rate", minimum=1e-6,
                                  maximum=1.0),
    },
    schedule="@daily",
    # The tiny end-to-end test's run (tests/e2e/test_use_cases.py).
    smoke=SmokeTest("synthetic:4000:1", {"epochs": 3, "batch_size": 128}),
    tags=("tabular", "regression", "books"),
)
