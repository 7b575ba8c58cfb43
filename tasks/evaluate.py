"""Evaluation step: test-split metrics and plots per task type, logged to MLflow.

- classification: accuracy, log loss, macro F1, per-class precision/recall, confusion matrix;
- binary: accuracy, ROC-AUC, PR-AUC, log loss, ROC and PR curves, confusion matrix;
- regression: RMSE, MAE, R², RMSE of the mean predictor and the improvement over it,
  residual plot;
- autoencoder: reconstruction MSE (plus input/reconstruction pairs for images);
- anomaly: ROC-AUC and PR-AUC of the reconstruction error, frauds caught and false
  positives at the shipped threshold (chosen on validation by the training step).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks import plots, tracking
from tasks.config import Settings
from tasks.spec import UseCaseSpec
from tasks.train import autoencoder_target, make_dataset, reconstruction_errors
from tasks.util import read_json, write_json

log = logging.getLogger(__name__)

RESULT = "evaluation.json"


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

    from tasks.transform import layer_classes

    layer_classes()  # custom layers must be registered before loading
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset_dir = Path(dataset_dir)
    feature_spec = read_json(dataset_dir / "feature_spec.json")
    stats = read_json(dataset_dir / "stats.json")
    mk = spec.model
    model = keras.models.load_model(train_result.get("trained_path")
                                    or train_result["model_path"])

    def dataset(split: str, target: Any = None) -> Any:
        return make_dataset(dataset_dir, split, feature_spec, mk.input_key, mk.label_key,
                            1024, target=target, stats=stats)

    pngs: list[Path] = []
    if mk.task in ("classification", "binary", "regression"):
        y_true, pred = [], []
        for x, y in dataset("test"):
            pred.append(model.predict_on_batch(x))
            y_true.append(y.numpy())
        y_true, pred = np.concatenate(y_true), np.concatenate(pred)
    if mk.task == "classification":
        report = classification_metrics(y_true, pred, mk.class_names)
        pngs.append(plots.confusion_matrices([("test", report)],
                                             out_dir / "confusion_matrix.png"))
    elif mk.task == "binary":
        report = binary_metrics(y_true, pred)
        pngs.append(plots.confusion_matrices([("test", report)],
                                             out_dir / "confusion_matrix.png"))
        pngs.append(plots.plot_roc_pr(y_true, pred.ravel(), out_dir / "roc_pr.png"))
    elif mk.task == "regression":
        # The mean predictor's value comes from the full-pass statistics of training.
        train_mean = stats["train"]["features"][mk.label_key]["mean"]
        report = regression_metrics(y_true, pred, float(train_mean))
        pngs.append(plots.plot_residuals(y_true, pred, out_dir / "residuals.png"))
    elif mk.task == "autoencoder":
        target = mk.target or autoencoder_target
        errors, _ = reconstruction_errors(model, dataset("test"), target, stats)
        report = {"test_reconstruction_mse": float(errors.mean())}
        x, t = next(iter(dataset("test", target)))
        if len(t.shape) == 3:  # images: show what the model sees and gives back
            pngs.append(plots.plot_reconstructions(t.numpy(), model.predict_on_batch(x),
                                                   out_dir / "reconstructions.png"))
    else:  # anomaly
        from sklearn.metrics import average_precision_score, roc_auc_score

        errors, labels = reconstruction_errors(model, dataset("test"),
                                               mk.target or autoencoder_target, stats)
        thr = float(train_result["threshold"])
        flagged = errors > thr
        report = {
            "test_roc_auc": float(roc_auc_score(labels, errors)),
            "test_pr_auc": float(average_precision_score(labels, errors)),
            "test_reconstruction_mse": float(errors[labels == 0].mean()),
            "test_anomalies": int(labels.sum()),
            "test_caught": int((flagged & (labels == 1)).sum()),
            "test_false_positives": int((flagged & (labels == 0)).sum()),
            "threshold": thr,
        }
        report["test_recall"] = report["test_caught"] / max(report["test_anomalies"], 1)
        pngs.append(plots.plot_roc_pr(labels, errors, out_dir / "roc_pr.png"))
    if mk.extra_metrics is not None:
        served = keras.models.load_model(train_result["model_path"])
        report.update({k: float(v) for k, v in mk.extra_metrics(served, stats).items()})

    scalars = {k: float(v) for k, v in report.items() if isinstance(v, int | float)}
    for name, pc in report.get("per_class", {}).items():
        key = name.replace("/", "_").replace(" ", "_")
        scalars[f"test_precision_{key}"] = pc["precision"]
        scalars[f"test_recall_{key}"] = pc["recall"]
    write_json(out_dir / RESULT, report)
    tracking.configure(s)
    with mlflow.start_run(run_id=train_result["run_id"]):
        mlflow.log_metrics(scalars)
        for png in pngs:
            mlflow.log_artifact(str(png), "plots")
        mlflow.log_dict(report, "evaluation/evaluation.json")
    log.info("evaluation of %s: %s", spec.name,
             {k: round(v, 4) for k, v in scalars.items() if not k.startswith("test_precision_")
              and not k.startswith("test_recall_")})
    return {"metrics": scalars, "report": str(out_dir / RESULT), "run_id": train_result["run_id"]}
