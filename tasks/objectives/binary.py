"""Binary classification: one sigmoid unit; accuracy, ROC-AUC and PR-AUC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tasks.objectives import plots
from tasks.objectives.base import EvalOutput, Objective, TestRows
from tasks.spec import ModelSpec


def binary_metrics(y_true: Any, score: Any, threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy at ``threshold``, ROC-AUC, PR-AUC, log loss, confusion matrix."""
    from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

    y_true, score = np.asarray(y_true).ravel(), np.asarray(score).ravel()
    pred = (score > threshold).astype(int)
    p = np.clip(score, 1e-7, 1 - 1e-7)
    return {
        "test_accuracy": float((pred == y_true).mean()),
        "test_roc_auc": float(roc_auc_score(y_true, score)),
        "test_pr_auc": float(average_precision_score(y_true, score)),
        "test_loss": float(-np.mean(y_true * np.log(p) + (1 - y_true) * np.log(1 - p))),
        "confusion_matrix": confusion_matrix(y_true, pred, labels=[0, 1]).tolist(),
    }


class Binary(Objective):
    """One sigmoid output: the probability of class 1."""

    kind = "binary"
    metrics = ("test_accuracy", "test_roc_auc", "test_pr_auc", "test_loss")

    def score(self, outputs: Any, rows: TestRows, model: ModelSpec,
              out_dir: Path | None = None) -> EvalOutput:
        score = np.asarray(outputs).ravel()
        report = binary_metrics(rows.labels, score)
        if len(model.class_names) == 2:  # e.g. a text label's classes: name the matrix
            report["class_names"] = list(model.class_names)
        if out_dir is None:
            return EvalOutput(report)
        return EvalOutput(report, [
            plots.confusion_matrices([("test", report)], out_dir / "confusion_matrix.png"),
            plots.plot_roc_pr(rows.labels, score, out_dir / "roc_pr.png"),
        ])
