"""Anomaly detection: an autoencoder's reconstruction error scores rows against a threshold.

The threshold is chosen on the validation split (:data:`THRESHOLD_RULE`, from the books'
threshold table: frauds caught and false positives per threshold), ships in the served
model's head (``{"score", "flag"}``) and is applied unchanged to the test split.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.tfrecord import DatasetReader
from tasks.features.layers import anomaly_score_layer
from tasks.objectives import plots
from tasks.objectives.autoencoder import own_input
from tasks.objectives.base import (
    Calibration,
    EvalOutput,
    Objective,
    Target,
    TestRows,
    reconstruction_errors,
)
from tasks.spec import ModelSpec

log = logging.getLogger(__name__)

THRESHOLD_RULE = "threshold maximising F1 on the validation split (ties: the higher one)"
THRESHOLD_TABLE_ARTIFACT = "evaluation/threshold_table.json"


def threshold_table(errors: Any, labels: Any, rows: int = 15) -> list[dict[str, float]]:
    """Frauds caught and false positives at candidate thresholds (the books' table).

    Candidates are quantiles of the errors between the median normal error and the
    largest error, plus every anomaly's error (where the counts change).
    """
    normal, anomalous = errors[labels == 0], errors[labels == 1]
    grid = np.quantile(errors, np.linspace(0.5, 0.9999, rows * 4))
    cands = np.unique(np.concatenate([grid, anomalous - 1e-12]))
    table = []
    for t in cands:
        caught = int((anomalous > t).sum())
        fp = int((normal > t).sum())
        precision = caught / (caught + fp) if caught + fp else 0.0
        recall = caught / len(anomalous) if len(anomalous) else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        table.append({"threshold": float(t), "caught": caught, "false_positives": fp,
                      "precision": precision, "recall": recall, "f1": f1})
    return table


def choose_threshold(table: list[dict[str, float]]) -> dict[str, float]:
    """Apply :data:`THRESHOLD_RULE` to a threshold table."""
    return max(table, key=lambda r: (r["f1"], r["threshold"]))


class Anomaly(Objective):
    """Autoencoder trained on normal rows; the label says which test rows are anomalies."""

    kind = "anomaly"
    metrics = ("test_roc_auc", "test_pr_auc", "test_reconstruction_mse", "test_anomalies",
               "test_caught", "test_false_positives", "test_recall")

    def target(self, model: ModelSpec) -> Target:
        return model.target or own_input

    def calibrate(self, trained: Any, reader: DatasetReader, model: ModelSpec) -> Calibration:
        errors, labels = reconstruction_errors(trained, reader, model, self.target(model),
                                               "validation")
        table = threshold_table(errors, labels)
        chosen = choose_threshold(table)
        log.info("threshold %.6g chosen on validation (%s): %d of %d anomalies caught, "
                 "%d false positives", chosen["threshold"], THRESHOLD_RULE, chosen["caught"],
                 int(labels.sum()), chosen["false_positives"])
        return Calibration(
            values={"threshold": chosen["threshold"], "threshold_rule": THRESHOLD_RULE},
            reports={THRESHOLD_TABLE_ARTIFACT: {"rule": THRESHOLD_RULE, "chosen": chosen,
                                                "table": table}},
        )

    def head(self, inputs: Any, outputs: Any, calibration: Mapping[str, Any]) -> Any:
        return anomaly_score_layer()(calibration["threshold"], name="anomaly")([inputs,
                                                                                outputs])

    def score(self, outputs: Any, rows: TestRows, model: ModelSpec,
              out_dir: Path | None = None) -> EvalOutput:
        """Ranking (ROC/PR-AUC of the score) and the flags at the model's own threshold."""
        from sklearn.metrics import average_precision_score, roc_auc_score

        errors, flagged = np.asarray(outputs["score"]), np.asarray(outputs["flag"]) > 0
        labels = np.asarray(rows.labels)
        report = {
            "test_roc_auc": float(roc_auc_score(labels, errors)),
            "test_pr_auc": float(average_precision_score(labels, errors)),
            "test_reconstruction_mse": float(errors[labels == 0].mean()),
            "test_anomalies": int(labels.sum()),
            "test_caught": int((flagged & (labels == 1)).sum()),
            "test_false_positives": int((flagged & (labels == 0)).sum()),
        }
        report["test_recall"] = report["test_caught"] / max(report["test_anomalies"], 1)
        if out_dir is None:
            return EvalOutput(report)
        return EvalOutput(report, [plots.plot_roc_pr(labels, errors, out_dir / "roc_pr.png")])
