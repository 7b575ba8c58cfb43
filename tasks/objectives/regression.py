"""Regression: RMSE, MAE, R² and the improvement over the mean predictor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tasks.objectives import plots
from tasks.objectives.base import EvalOutput, Objective, TestRows
from tasks.spec import ModelSpec


def regression_metrics(y_true: Any, y_pred: Any, train_mean: float) -> dict[str, float]:
    """RMSE, MAE, R² and the improvement over always predicting the training mean."""
    y_true, y_pred = np.asarray(y_true, float).ravel(), np.asarray(y_pred, float).ravel()
    rmse = float(np.sqrt(np.mean((y_pred - y_true) ** 2)))
    baseline = float(np.sqrt(np.mean((train_mean - y_true) ** 2)))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2)) or 1.0
    return {
        "test_rmse": rmse,
        "test_mae": float(np.mean(np.abs(y_pred - y_true))),
        "test_r2": 1.0 - float(np.sum((y_true - y_pred) ** 2)) / ss_tot,
        "baseline_rmse": baseline,
        "rmse_improvement_over_baseline": 1.0 - rmse / baseline if baseline else 0.0,
    }


class Regression(Objective):
    """A real-valued target; the baseline is the training split's mean (full-pass stats)."""

    kind = "regression"
    metrics = ("test_rmse", "test_mae", "test_r2", "baseline_rmse",
               "rmse_improvement_over_baseline")

    def score(self, outputs: Any, rows: TestRows, model: ModelSpec,
              out_dir: Path | None = None) -> EvalOutput:
        pred = np.asarray(outputs)
        train_mean = float(rows.stats["train"]["features"][model.label_key]["mean"])
        report = regression_metrics(rows.labels, pred, train_mean)
        if out_dir is None:
            return EvalOutput(report)
        return EvalOutput(report, [plots.plot_residuals(rows.labels, pred,
                                                        out_dir / "residuals.png")])
