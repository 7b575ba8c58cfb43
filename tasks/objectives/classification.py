"""Multi-class classification: softmax over classes, accuracy, per-class figures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks.objectives import plots
from tasks.objectives.base import EvalOutput, Objective, TestRows
from tasks.spec import ModelSpec


def classification_metrics(
    y_true: Any, proba: Any, class_names: Sequence[str] = ()
) -> dict[str, Any]:
    """Accuracy, log loss, per-class precision/recall and the confusion matrix."""
    from sklearn.metrics import confusion_matrix, log_loss, precision_recall_fscore_support

    y_true = np.asarray(y_true)
    n_classes = proba.shape[1]
    y_pred = proba.argmax(axis=1)
    labels = list(range(n_classes))
    prec, rec, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    names = list(class_names) or [str(i) for i in labels]
    return {
        "test_accuracy": float((y_pred == y_true).mean()),
        "test_loss": float(log_loss(y_true, np.clip(proba, 1e-7, 1.0), labels=labels)),
        "test_macro_f1": float(f1.mean()),
        "per_class": {
            names[i]: {"precision": float(prec[i]), "recall": float(rec[i]),
                       "f1": float(f1[i]), "support": int(support[i])}
            for i in labels
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "class_names": names,
    }


class Classification(Objective):
    """Softmax over ``class_names``; the label is the class index."""

    kind = "classification"
    metrics = ("test_accuracy", "test_loss", "test_macro_f1")

    def score(self, outputs: Any, rows: TestRows, model: ModelSpec,
              out_dir: Path | None = None) -> EvalOutput:
        proba = np.asarray(outputs)
        report = classification_metrics(rows.labels, proba, model.classes(rows.stats))
        if out_dir is None:
            return EvalOutput(report)
        pngs = [plots.confusion_matrices([("test", report)], out_dir / "confusion_matrix.png")]
        if getattr(rows.raw, "ndim", 0) == 4:  # colour images: a few test images per class
            n = min(len(rows), 4096)
            pngs.append(plots.examples_per_class(rows.raw[:n], rows.labels[:n],
                                                 proba[:n].argmax(axis=1),
                                                 report["class_names"],
                                                 out_dir / "examples_per_class.png"))
        return EvalOutput(report, pngs)
