"""Evaluation step: test-split metrics and plots, logged to the training run in MLflow."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tasks import tracking
from tasks.config import Settings
from tasks.spec import UseCaseSpec
from tasks.train import make_dataset
from tasks.util import read_json, write_json

log = logging.getLogger(__name__)

RESULT = "evaluation.json"


def classification_metrics(
    y_true: Any, proba: Any, class_names: Sequence[str] = ()
) -> dict[str, Any]:
    """Accuracy, log loss, per-class precision/recall and the confusion matrix."""
    import numpy as np
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


def plot_confusion(matrix: Sequence[Sequence[int]], names: Sequence[str], path: Path) -> Path:
    """Render a confusion matrix as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if m[i, j] > m.max() / 2 else "black")
    fig.colorbar(im)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def evaluate(
    spec: UseCaseSpec,
    dataset_dir: Path,
    train_result: dict[str, Any],
    out_dir: Path,
    s: Settings | None = None,
) -> dict[str, Any]:
    """Score the trained model on the test split and log metrics and plots to MLflow.

    Args:
        spec: The use case.
        dataset_dir: Preprocessed dataset (TFRecords + feature spec).
        train_result: Output of :func:`tasks.train.train`.
        out_dir: Directory for the evaluation report of this run.
        s: Settings.

    Returns:
        ``{"metrics": {name: value}, "report": path, "run_id": ...}``; scalar metrics only
        in ``metrics`` so the dict stays small enough for XCom.

    """
    import keras
    import mlflow
    import numpy as np

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset_dir = Path(dataset_dir)
    feature_spec = read_json(dataset_dir / "feature_spec.json")
    mk = spec.model
    ds = make_dataset(dataset_dir, "test", feature_spec, mk.input_key, mk.label_key, 1024)
    model = keras.models.load_model(train_result["model_path"])
    y_true, proba = [], []
    for x, y in ds:
        proba.append(model.predict_on_batch(x))
        y_true.append(y.numpy())
    report = classification_metrics(np.concatenate(y_true), np.concatenate(proba),
                                    mk.class_names)
    scalars = {k: v for k, v in report.items() if isinstance(v, float)}
    for name, pc in report["per_class"].items():
        key = name.replace("/", "_").replace(" ", "_")
        scalars[f"test_precision_{key}"] = pc["precision"]
        scalars[f"test_recall_{key}"] = pc["recall"]
    png = plot_confusion(report["confusion_matrix"], report["class_names"],
                         out_dir / "confusion_matrix.png")
    write_json(out_dir / RESULT, report)
    tracking.configure(s)
    with mlflow.start_run(run_id=train_result["run_id"]):
        mlflow.log_metrics(scalars)
        mlflow.log_artifact(str(png), "plots")
        mlflow.log_dict(report, "evaluation/evaluation.json")
    log.info("evaluation: test_accuracy=%.4f test_loss=%.4f", scalars["test_accuracy"],
             scalars["test_loss"])
    return {"metrics": scalars, "report": str(out_dir / RESULT), "run_id": train_result["run_id"]}
