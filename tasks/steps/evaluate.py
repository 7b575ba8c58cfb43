"""Evaluation step: score what ships, and the champion, on this run's test split.

Three things happen, in this order, on the same rows (the run's test split, read once):

1. **Parity** (a training/serving skew test on every run): the exported serving model
   (``model.keras``: raw inputs in, the objective's head out) answers the raw test inputs;
   the trained model plus the same head answers the transformed features of the same rows.
   They must agree within :data:`PARITY_RTOL` / :data:`PARITY_ATOL` (``|served - trained|
   <= atol + rtol * |trained|`` per value); otherwise the run fails with
   :class:`ParityError` naming the model and the size of the mismatch, and nothing is
   registered. Integer outputs (the anomaly flag) are derived from a compared float
   output and are not compared themselves.
2. **Candidate**: the objective scores the served model's answers
   (:meth:`~tasks.objectives.base.Objective.score`). These figures decide the gate.
3. **Champion**: the registry's current ``champion`` is loaded and scored by the same
   objective code on the same raw rows, so the gate compares like with like. Its figures
   on its own (older) test split stay in its MLflow run and are shown as history only.

What was scored is named in the report: snapshot checksum, split and rows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tasks import objectives, tracking
from tasks.core.config import Settings
from tasks.core.errors import PermanentError
from tasks.core.files import atomic_dir, write_json
from tasks.core.run import EVALUATION, EVALUATION_ARTIFACT, Evaluation, TrainedModel
from tasks.data.tfrecord import DatasetReader, split_digest
from tasks.features.layers import register_all
from tasks.features.schema import check_columns
from tasks.objectives import TestRows, predict, reference_model
from tasks.spec import UseCaseSpec
from tasks.steps.references import (
    PREDICTIONS_FILE,
    log_reference_predictions,
    reference_predictions,
)
from tasks.steps.tabular import model_schema
from tasks.tracking.loader import load_registered
from tasks.tracking.registry import champion_run

log = logging.getLogger(__name__)

PARITY_RTOL = 1e-3
PARITY_ATOL = 1e-4
TOLERANCE = f"|served - trained| <= {PARITY_ATOL} + {PARITY_RTOL} * |trained| per value"


class ParityError(PermanentError, RuntimeError):
    """The exported model disagrees with the trained one: an export bug; nothing ships."""


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


def _floats(outputs: Any) -> dict[str, np.ndarray]:
    """The float outputs of a model's answer, by name."""
    named = outputs if isinstance(outputs, dict) else {"output": outputs}
    return {k: np.asarray(v, np.float64) for k, v in named.items()
            if np.issubdtype(np.asarray(v).dtype, np.floating)}


def parity(name: str, served_out: Any, reference_out: Any, rows: int) -> dict[str, Any]:
    """Compare the served and the trained model's answers on the same rows.

    Returns:
        ``{"rows", "tolerance", "max_abs_diff", "max_rel_diff", "mismatched_values"}``.

    Raises:
        ParityError: Some value is outside the tolerance; the message names the model,
            the output, how many values disagree and by how much.

    """
    served, ref = _floats(served_out), _floats(reference_out)
    if set(served) != set(ref):
        raise ParityError(f"{name}: the exported model answers {sorted(served)} but the "
                          f"trained model {sorted(ref)}; nothing is registered")
    worst_abs = worst_rel = 0.0
    bad = 0
    for key in sorted(ref):
        a, b = served[key], ref[key]
        if a.shape != b.shape:
            raise ParityError(f"{name}: exported model output {key!r} has shape {a.shape}, "
                              f"the trained model's {b.shape}; nothing is registered")
        diff = np.abs(a - b)
        finite = np.isfinite(a) == np.isfinite(b)
        over = (diff > PARITY_ATOL + PARITY_RTOL * np.abs(b)) | ~finite
        worst_abs = max(worst_abs, float(np.nanmax(diff, initial=0.0)))
        worst_rel = max(worst_rel, float(np.nanmax(diff / np.maximum(np.abs(b), 1e-12),
                                                   initial=0.0)))
        if over.any():
            bad += int(over.sum())
            i = np.unravel_index(int(np.nanargmax(np.where(over, diff, -1))), diff.shape)
            raise ParityError(
                f"{name}: the exported serving model (model.keras, raw inputs) disagrees "
                f"with the trained model on {int(over.sum())} of {a.size} values of output "
                f"{key!r} over {rows} test rows: max |served - trained| = "
                f"{float(np.nanmax(diff)):.6g} (e.g. row {i[0]}: served {a[i]:.6g}, trained "
                f"{b[i]:.6g}); tolerance {TOLERANCE}. The export is broken (transform "
                "statistics, a missing layer or a dtype change); nothing is registered")
    return {"rows": rows, "tolerance": TOLERANCE, "max_abs_diff": worst_abs,
            "max_rel_diff": worst_rel, "mismatched_values": bad}


def input_checks(spec: UseCaseSpec, reader: DatasetReader, calibration: Mapping[str, Any],
                 rows: TestRows) -> dict[str, Any] | None:
    """The serving schema's checks over the test rows (tabular models; else None).

    The same checks the server makes per request (:func:`check_columns`): test values
    the training split never showed (categories outside its vocabulary, numbers outside
    its range, values outside the declared ones), counted per field with first examples.
    """
    schema = model_schema(spec, reader, calibration)
    if schema is None or not isinstance(rows.raw, dict):
        return None
    warnings, counts = check_columns(rows.raw, schema)
    examples: dict[str, list[dict[str, Any]]] = {}
    for i, found in enumerate(warnings):
        for w in found:
            shown = examples.setdefault(f"{w['field']}:{w['kind']}", [])
            if len(shown) < 3:
                shown.append({"row": i, "value": w["value"], "problem": w["problem"]})
    flagged = sum(1 for w in warnings if w)
    if flagged:
        log.warning("%d of %d test rows of %s hold values the training split never showed: "
                    "%s", flagged, len(rows), spec.name, counts)
    return {"rows": len(rows), "rows_with_warnings": flagged, "fields": counts,
            "examples": examples}


def champion_info(spec: UseCaseSpec, champ: Mapping[str, Any]) -> dict[str, Any]:
    """Version, run and the champion's stored test figures (history, its own test split)."""
    return {"version": str(champ["version"]), "run_id": champ["run_id"],
            "stored_metrics": {k: float(v) for k, v in champ["metrics"].items()
                               if k.startswith("test_") or k == spec.gate.metric}}


def score_champion(spec: UseCaseSpec, rows: TestRows, out_dir: Path,
                   s: Settings | None = None) -> dict[str, Any] | None:
    """The current champion scored on ``rows`` by the same objective, or None if none.

    Returns:
        ``{"version", "run_id", "report", "metrics", "stored_metrics"}`` where
        ``stored_metrics`` are the champion's figures on its own test split (history);
        ``{"version", "run_id", "error"}`` when it cannot answer these rows.

    """
    champ = champion_run(spec.name, s)
    if champ is None:
        return None
    info = champion_info(spec, champ)
    try:
        # Loaded as the server loads it (the same loader as serving and infra validation).
        model = load_registered(spec.name, str(champ["version"]), s, reuse=True).model
        outputs = predict(model, rows.raw)
    except Exception as exc:  # an incompatible champion (other inputs) is reported
        log.warning("champion v%s of %s cannot answer this run's test rows: %s",
                    champ["version"], spec.name, exc)
        return {**info, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
    objective = objectives.get(spec.model.objective)
    out = objective.score(outputs, rows, spec.model, None)
    report = dict(out.report)
    if spec.model.extra_metrics is not None:
        report.update({k: float(v) for k, v in
                       spec.model.extra_metrics(model, rows.stats).items()})
    write_json(out_dir / "champion.json", report)
    return {**info, "report": report, "metrics": scalar_metrics(report)}


def stored_champion(spec: UseCaseSpec, reason: str, test_digest: str,
                    s: Settings | None = None) -> dict[str, Any] | None:
    """The champion's own figures, for kinds whose served model cannot take the test rows.

    Used when the served model takes inputs the test split does not keep (raw WAV or JPEG
    files, text with another vocabulary). When the champion was evaluated on the very
    same test records (equal :func:`~tasks.data.tfrecord.split_digest`, e.g. a rerun on
    the same snapshot), its stored figures are figures on the same rows; otherwise
    ``not_same_data`` says why they are not, and the gate and its report say so.
    """
    import mlflow

    champ = champion_run(spec.name, s)
    if champ is None:
        return None
    info = champion_info(spec, champ)
    try:
        report = mlflow.artifacts.load_dict(f"runs:/{champ['run_id']}/{EVALUATION_ARTIFACT}")
    except Exception:  # noqa: BLE001 - a champion logged without an evaluation report
        report = {}
    if test_digest and (report.get("data") or {}).get("test_digest") == test_digest:
        mine = {k: v for k, v in report.items() if k not in ("champion", "data", "parity")}
        return {**info, "report": mine, "metrics": scalar_metrics(mine),
                "same_rows": "the champion was evaluated on the same test records"}
    return {**info, "not_same_data": reason}


def evaluate(spec: UseCaseSpec, dataset_dir: Path, trained: TrainedModel, out_dir: Path,
             s: Settings | None = None, *, raw_files: Mapping[str, str] | None = None,
             data_checksum: str = "") -> Evaluation:
    """Score the served model (and the champion) on the test split; log it to MLflow.

    Kinds whose served model takes the test rows' raw inputs
    (:meth:`~tasks.objectives.base.Objective.scores_served_rows`) are scored as served,
    with the parity check and the champion on the same rows. The others (raw-media front
    ends, text models) are scored by the objective on the trained model plus its head,
    and the champion's stored figure is reported as a comparison on other data.

    Args:
        spec: The use case.
        dataset_dir: Preprocessed dataset (TFRecords with raw test inputs, feature spec).
        trained: Output of the training step.
        out_dir: The run's evaluation folder (appears atomically, replaced whole).
        s: Settings.
        raw_files: The run's raw snapshot files, for the use case's ``extra_plots``
            (e.g. an MFCC picture of one clip per genre).
        data_checksum: The raw snapshot's checksum (names the data in the report).

    Returns:
        The candidate's scalar metrics, the champion's on the same rows, and the data.

    Raises:
        ParityError: The exported model disagrees with the trained model.

    """
    import keras

    register_all()  # custom layers must be registered before loading
    reader = DatasetReader.open(dataset_dir)
    if not spec.model.class_names and reader.class_names(spec.model.label_key):
        # A text label's classes (from the data) name the classes in the report.
        spec = replace(spec, model=replace(
            spec.model, class_names=tuple(reader.class_names(spec.model.label_key))))
    objective = objectives.get(spec.model.objective)
    fitted = keras.models.load_model(trained.trained_path)
    served = keras.models.load_model(trained.model_path)
    as_served = objective.scores_served_rows(spec.model)
    rows = TestRows.load(reader, spec.model, "test") if as_served else None
    if rows is not None:
        served_out = predict(served, rows.raw)
        checked = parity(spec.name, served_out,
                         predict(reference_model(objective, fitted, trained.calibration),
                                 rows.features), len(rows))
        log.info("parity of %s: served and trained models agree on %d test rows (max "
                 "|diff| %.3g; %s)", spec.name, len(rows), checked["max_abs_diff"], TOLERANCE)
        n_rows, scored = len(rows), "served model (model.keras) on raw test inputs"
        inputs = reader.served_key(spec.model.input_key)
        checks = input_checks(spec, reader, trained.calibration, rows)
    else:
        n_rows = int(reader.manifest.get("splits", {}).get("test", {}).get("rows", 0))
        inputs = spec.model.input_key
        why = ("its served model takes raw media files, which the test split does not keep"
               if spec.model.serving_input is not None else
               "its served model takes its own inputs (text), encoded per run")
        scored = f"trained model + head on the test features ({why})"
        checks = None
        checked = {"rows": 0, "skipped": f"no parity on test rows: {why}; the served model "
                   "answers its serving example before deploy (infra validation)"}
    data = {"snapshot_checksum": data_checksum, "dataset": str(dataset_dir), "split": "test",
            "rows": n_rows, "inputs": inputs,
            "test_digest": split_digest(Path(dataset_dir), "test")}
    with atomic_dir(Path(out_dir)) as tmp:
        if rows is not None:
            out = objective.score(served_out, rows, spec.model, tmp)
        else:
            out = objective.evaluate(fitted, reader, spec.model, trained.calibration, tmp)
        report = dict(out.report)
        if spec.model.extra_metrics is not None:
            report.update({k: float(v) for k, v in
                           spec.model.extra_metrics(served, reader.stats).items()})
        pngs = list(out.plots)
        if spec.model.extra_plots is not None and raw_files:
            pngs.extend(Path(p) for p in spec.model.extra_plots(raw_files, tmp))
        scalars = scalar_metrics(report)
        champion = (score_champion(spec, rows, tmp, s) if rows is not None
                    else stored_champion(spec, why, data["test_digest"], s))
        full = {**report, "scored": scored, "data": data, "parity": checked,
                "champion": None if champion is None else
                {k: v for k, v in champion.items() if k != "metrics"}}
        if checks is not None:
            full["input_checks"] = checks
        write_json(tmp / EVALUATION, full)
        log_evaluation(trained.run_id, scalars, full, pngs, s)
        # The served model's answers on its own test rows: the reference of later
        # prediction-drift checks (batch scoring, monitoring, the next training runs).
        answers, why = reference_predictions(spec, served, reader,
                                             served_out if rows is not None else None)
        if answers is not None:
            write_json(tmp / PREDICTIONS_FILE, answers)
            log_reference_predictions(trained.run_id, answers, s)
        else:
            log.info("no prediction reference for %s: %s", spec.name, why)
    log.info("evaluation of %s on %d test rows: %s", spec.name, n_rows,
             {k: round(v, 4) for k, v in scalars.items()
              if not k.startswith(("test_precision_", "test_recall_"))})
    if champion is not None and "metrics" in champion:
        log.info("champion v%s on the same rows: %s=%.4f", champion["version"],
                 spec.gate.metric, champion["metrics"].get(spec.gate.metric, float("nan")))
    return Evaluation(
        run_id=trained.run_id, metrics=scalars, report=str(Path(out_dir) / EVALUATION),
        data=data, parity=checked, input_checks=checks,
        champion=None if champion is None else {
            k: champion[k] for k in ("version", "run_id", "metrics", "stored_metrics", "error",
                                     "not_same_data", "same_rows")
            if k in champion},
    )
