"""Evaluation step: the objective's test metrics and plots, written atomically, logged to MLflow.

What is measured depends on the model kind (:mod:`tasks.objectives`): accuracy and
per-class figures for classifiers, ROC/PR for binary models, RMSE against the mean
predictor for regression, reconstruction error for autoencoders, frauds caught at the
shipped threshold for anomaly detectors. A use case may add its own figures
(``ModelSpec.extra_metrics``, computed on the served model).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks import objectives, tracking
from tasks.core.config import Settings
from tasks.core.files import atomic_dir, write_json
from tasks.core.run import EVALUATION, EVALUATION_ARTIFACT, Evaluation, TrainedModel
from tasks.data.tfrecord import DatasetReader
from tasks.features.layers import register_all
from tasks.spec import UseCaseSpec

log = logging.getLogger(__name__)


def scalar_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """The report's numbers, plus per-class precision and recall as flat metric names."""
    scalars = {k: float(v) for k, v in report.items()
               if isinstance(v, int | float) and not isinstance(v, bool)}
    for name, pc in report.get("per_class", {}).items():
        key = name.replace("/", "_").replace(" ", "_")
        scalars[f"test_precision_{key}"] = pc["precision"]
        scalars[f"test_recall_{key}"] = pc["recall"]
    return scalars


def log_evaluation(run_id: str, scalars: Mapping[str, float], report: Mapping[str, Any],
                   pngs: list[Path], s: Settings | None = None) -> None:
    """Metrics, plots and the full report on the training run."""
    import mlflow

    tracking.configure(s)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(dict(scalars))
        for png in pngs:
            mlflow.log_artifact(str(png), "plots")
        mlflow.log_dict(dict(report), EVALUATION_ARTIFACT)


def evaluate(spec: UseCaseSpec, dataset_dir: Path, trained: TrainedModel, out_dir: Path,
             s: Settings | None = None,
             raw_files: Mapping[str, str] | None = None) -> Evaluation:
    """Score the trained model on the test split and log metrics and plots to MLflow.

    Args:
        spec: The use case.
        dataset_dir: Preprocessed dataset (TFRecords + feature spec).
        trained: Output of the training step.
        out_dir: The run's evaluation folder (appears atomically, replaced whole).
        s: Settings.
        raw_files: The run's raw snapshot files, for the use case's ``extra_plots``
            (e.g. an MFCC picture of one clip per genre).

    Returns:
        The scalar metrics (small enough for XCom) and where the full report is.

    """
    import keras

    register_all()  # custom layers must be registered before loading
    reader = DatasetReader.open(dataset_dir)
    model = keras.models.load_model(trained.trained_path)
    objective = objectives.get(spec.model.objective)
    with atomic_dir(Path(out_dir)) as tmp:
        out = objective.evaluate(model, reader, spec.model, trained.calibration, tmp)
        report = dict(out.report)
        if spec.model.extra_metrics is not None:
            served = keras.models.load_model(trained.model_path)
            report.update({k: float(v) for k, v in
                           spec.model.extra_metrics(served, reader.stats).items()})
        pngs = list(out.plots)
        if spec.model.extra_plots is not None and raw_files:
            pngs.extend(Path(p) for p in spec.model.extra_plots(raw_files, tmp))
        scalars = scalar_metrics(report)
        write_json(tmp / EVALUATION, report)
        log_evaluation(trained.run_id, scalars, report, pngs, s)
    log.info("evaluation of %s: %s", spec.name,
             {k: round(v, 4) for k, v in scalars.items()
              if not k.startswith(("test_precision_", "test_recall_"))})
    return Evaluation(run_id=trained.run_id, metrics=scalars,
                      report=str(Path(out_dir) / EVALUATION))
