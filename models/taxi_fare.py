"""Taxi fare by linear regression trained with gradient descent (the books' first model).

Data: the books' generative model, seeded: distance x = N(5, 5) + 15 km and fare
y = 1000·x + 1000·N(0, 3) (won). The irreducible noise has standard deviation 3000, so
a perfect linear fit has RMSE ≈ 3000 (the noise floor) and slope ≈ 1000.

Model: one linear unit on the z-scored distance, trained by plain SGD on squared error.
Its ``learning_rate`` reproduces the books' lesson: at too large a rate (here > 1) the
loss explodes to infinity; the platform catches that, reports it and registers nothing.
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

NOISE_FLOOR = 3000.0


def generate(out_dir: Path, rows: int, seed: int) -> None:
    """Write ``taxi.csv`` (distance_km, fare) from the books' formula."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.normal(5.0, 5.0, rows) + 15.0
    y = 1000.0 * x + 1000.0 * rng.normal(0.0, 3.0, rows)
    pd.DataFrame({"distance_km": x.round(4), "fare": y.round(1)}).to_csv(
        Path(out_dir) / "taxi.csv", index=False)


def build_model(params: Mapping[str, Any], stats: Mapping[str, Any]) -> Any:
    """Y = w·z + b on the standardised distance, plain SGD on mean squared error."""
    import keras

    inp = keras.Input(shape=(1,), name="features")
    out = keras.layers.Dense(1, name="fare")(inp)
    model = keras.Model(inp, out, name="linear_regression")
    model.compile(optimizer=keras.optimizers.SGD(float(params["learning_rate"])),
                  loss="mse", metrics=[keras.metrics.RootMeanSquaredError(name="rmse")])
    return model


def fitted_line(served: Any, stats: Mapping[str, Any]) -> dict[str, float]:
    """Slope and intercept of the served model in raw units (it is linear in distance)."""
    import numpy as np

    mean = stats["train"]["features"]["distance_km"]["mean"]
    x = np.array([mean, mean + 1.0, 0.0], np.float32)
    # The served model takes the named column; a version exported before named inputs
    # took a vector of one value.
    named = isinstance(served.input, dict)
    y = np.asarray(served.predict({"distance_km": x} if named else x[:, None],
                                  verbose=0)).ravel()
    slope = float(y[1] - y[0])
    return {"slope": slope, "intercept": float(y[2]), "slope_error_pct": abs(slope - 1000) / 10,
            "noise_floor": NOISE_FLOOR}


SPEC = UseCaseSpec(
    name="taxi_fare",
    description=__doc__ or "",
    source=TabularSource(
        columns=(Column("distance_km"), Column("fare")),
        layout={"all": "taxi.csv"},
        default_location="synthetic:20000:0",
        generator=generate,
    ),
    preprocess=PreprocessSpec(features=(Feature("distance_km", "zscore"),), label="fare",
                              label_dtype="float32", batch_size=8192),
    split=SplitSpec(partition_to_split={"all": RATIO},
                    ratios={"train": 0.6, "validation": 0.2, "test": 0.2}, seed=42,
                    shards={"train": 2, "validation": 1, "test": 1}),
    model=ModelSpec(build=build_model, input_key="features", label_key="fare",
                    objective="regression", extra_metrics=fitted_line,
                    extra_metric_names=("slope", "intercept", "slope_error_pct",
                                        "noise_floor")),
    # Deploy only within 5% of the noise floor, and never worse than the champion.
    gate=GateSpec(metric="test_rmse", max_value=NOISE_FLOOR * 1.05, higher_is_better=False,
                  max_regression=30.0),
    params={
        "epochs": RunParam(10, "integer", "Training epochs", minimum=1, maximum=1000),
        "batch_size": RunParam(256, "integer", "Mini-batch size", minimum=1, maximum=65536),
        "learning_rate": RunParam(0.05, "number",
                                  "SGD learning rate (above 1 the books' divergence appears)",
                                  minimum=1e-6, maximum=100.0),
    },
    # The tiny end-to-end test's run (tests/e2e/test_use_cases.py).
    smoke=SmokeTest("synthetic:3000:1", {"epochs": 5}),
    tags=("tabular", "regression", "books"),
)
