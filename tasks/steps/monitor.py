"""Training/serving skew: the server's logged requests against the champion's training data.

The ``<use case>_monitor`` DAG (scheduled, ``DriftSpec.monitor_schedule``) and
``mlp monitor <use case>`` read the request logs ``mlp serve`` samples
(:mod:`tasks.data.requestlog`), turn each request's inputs back into source columns
through the served model's signature (:func:`tasks.steps.model_io.source_columns`) and
count them, and the answers, on the bins of the answering version's reference
(:mod:`tasks.steps.references`): the histograms of its training split and of its own
answers on its test split. Each version seen gets a skew report (Markdown, JSON, PNG;
:mod:`tasks.steps.drift_report`) under ``$MLP_HOME/monitoring/<use case>/<run key>/``
and on an MLflow run (experiment ``<use case>-monitoring``, artifacts ``skew/``).

The DAG reads only log files it has not read before (a watermark in
``$MLP_HOME/monitoring/<use case>/state.json``, moved after the run is recorded); a
re-run of the same run key reuses its result. ``mlp monitor <use case> [file|dir]``
reads every closed log file (or the given ones) without moving the watermark; given a
folder of raw data instead, it compares that data (and the champion's answers on it)
with the champion's training data, as batch scoring does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.core.config import Settings, settings
from tasks.core.files import atomic_dir, read_json, write_json
from tasks.data.requestlog import ReadStats, closed_files, log_dir, read_requests
from tasks.features.drift import DriftReport
from tasks.features.profile import (
    Histogram,
    bins_of,
    data_columns,
    merge_histograms,
    output_columns,
    prediction_columns,
)
from tasks.spec import UseCaseSpec
from tasks.steps.drift_check import compare_with
from tasks.steps.drift_report import write_report
from tasks.steps.model_io import source_columns
from tasks.steps.references import Reference, load_reference

log = logging.getLogger(__name__)

SUMMARY = "summary.json"
STATE = "state.json"


def monitoring_root(use_case: str, s: Settings | None = None) -> Path:
    """``$MLP_HOME/monitoring/<use case>``: every monitoring run's folder and the state."""
    return (s or settings()).root / "monitoring" / use_case


def _count(spec: UseCaseSpec, ref: Reference, inputs: Mapping[str, Any],
           outputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    features: dict[str, Any] = {}
    predictions: dict[str, Any] = {}
    if ref.features:
        cols = source_columns(spec, inputs)
        if cols:
            h = Histogram(data_columns(spec.preprocess, spec.source.schema()),
                          bins_of(ref.features))
            features = h.finish(h.add(h.create(), cols))
    if ref.predictions and outputs:
        answers = output_columns(dict(outputs))
        h = Histogram(prediction_columns(answers), bins_of(ref.predictions))
        predictions = h.finish(h.add(h.create(), answers))
    return features, predictions


def skew_reports(spec: UseCaseSpec, files: Sequence[Path], s: Settings | None = None
                 ) -> tuple[list[DriftReport], ReadStats]:
    """One skew report per model version found in the logged requests of ``files``."""
    stats = ReadStats()
    refs: dict[str, Reference | None] = {}
    found: dict[str, dict[str, Any]] = {}
    for batch in read_requests(list(files), stats):
        if not len(batch):
            continue
        if batch.version not in refs:
            try:
                refs[batch.version] = load_reference(spec.name, batch.version or None, s=s)
            except LookupError as exc:
                log.warning("%s", exc)
                refs[batch.version] = None
        ref = refs[batch.version]
        if ref is None:
            continue
        acc = found.setdefault(ref.version, {"features": {}, "predictions": {}, "rows": 0,
                                             "requests": 0, "first": batch.ts,
                                             "last": batch.ts})
        features, predictions = _count(spec, ref, batch.inputs, batch.outputs)
        acc["features"] = merge_histograms(acc["features"], features)
        acc["predictions"] = merge_histograms(acc["predictions"], predictions)
        acc["rows"] += len(batch)
        acc["requests"] += 1
        acc["first"], acc["last"] = min(acc["first"], batch.ts), max(acc["last"], batch.ts)
    reports = []
    for version, acc in sorted(found.items(), key=lambda kv: -kv[1]["rows"]):
        ref = refs.get(version) or next(r for r in refs.values() if r and r.version == version)
        notes = [] if acc["features"] or not ref.features else [
            "the logged inputs have no source columns (raw media): features not compared"]
        reports.append(compare_with(ref, spec, "skew", {
            "data": f"{acc['requests']} logged requests to version {version} "
                    f"({acc['first']} to {acc['last']})",
            "rows": acc["rows"], "requests": acc["requests"]},
            acc["features"] or ({} if ref.features else None),
            acc["predictions"] or ({} if ref.predictions else None), notes))
    return reports, stats


def monitor_requests(spec: UseCaseSpec, run_key: str, location: Path | None = None,
                     advance: bool = True, s: Settings | None = None,
                     track: bool = True) -> dict[str, Any]:
    """Compare logged requests with the champion's training data; write and log the reports.

    Args:
        spec: The use case.
        run_key: The monitoring run's key (its folder).
        location: A log file or folder (default: the model's request-log folder, only the
            files past the watermark when ``advance``).
        advance: Read only new files and move the watermark after (the DAG).
        s: Settings.
        track: Record an MLflow run.

    Returns:
        The summary: ``status``, ``summary`` line, ``failing`` columns, per-version
        ``reports``, request counts, ``files`` read, ``retrain`` (drift past ``fail`` with
        ``retrain_on_drift`` on) and the MLflow ``run_id``.

    """
    s = s or settings()
    root = monitoring_root(spec.name, s)
    out_dir = root / run_key
    if (out_dir / SUMMARY).is_file():
        log.info("monitoring run %s already recorded; reusing it", out_dir)
        return read_json(out_dir / SUMMARY)
    state = read_json(root / STATE) if (root / STATE).is_file() else {}
    files = closed_files(location or log_dir(s.root, spec.name),
                         state.get("watermark") if advance and location is None else None)
    reports, stats = skew_reports(spec, files, s)
    with atomic_dir(out_dir) as tmp:
        written = []
        for report in reports:
            version = report.reference["version"]
            sub = tmp / f"skew-v{version}"
            write_report(report, sub, f"Skew: {spec.name} logged requests against version "
                         f"{version}'s training data", labels=(f"v{version} training data",
                                                               "logged requests"))
            written.append({"version": version, "status": report.status,
                            "summary": report.summary(), "rows": report.current["rows"],
                            "failing": [c.name for c in report.failing],
                            "report": str(out_dir / sub.name / "report.md")})
        worst = max(reports, key=lambda r: ["not judged", "ok", "warn", "fail"].index(
            r.status), default=None)
        failing = sorted({c.name for r in reports for c in r.failing})
        summary = {
            "run_key": run_key, "files": [str(f) for f in files],
            "requests": stats.requests, "instances": stats.instances,
            "failed_requests": stats.failed, "malformed_lines": stats.malformed[:20],
            "status": worst.status if worst else "no data",
            "summary": worst.summary() if worst else
            f"no logged requests to read in {location or log_dir(s.root, spec.name)}",
            "failing": failing, "reports": written,
            "retrain": bool(failing) and spec.drift.retrain_on_drift,
        }
        write_json(tmp / SUMMARY, summary)
    if track and reports:
        summary["run_id"] = log_monitoring_run(spec.name, run_key, summary, out_dir, s)
        write_json(out_dir / SUMMARY, summary)
    if advance and location is None and files:
        write_json(root / STATE, {"watermark": files[-1].name, "run_key": run_key})
    return summary


def log_monitoring_run(use_case: str, key: str, summary: Mapping[str, Any], out_dir: Path,
                       s: Settings | None = None) -> str:
    """Record a monitoring run in MLflow (experiment ``<use case>-monitoring``)."""
    import re

    import mlflow

    from tasks.tracking import configure, experiment_id

    configure(s)
    exp = experiment_id(f"{use_case}-monitoring", s)
    with mlflow.start_run(experiment_id=exp, run_name=f"skew-{key}", tags={
            "mlp.kind": "monitoring", "use_case": use_case, "monitor_key": key,
            "skew.status": summary["status"], "skew.summary": summary["summary"][:5000]}
                          ) as run:
        mlflow.log_metrics({"requests": summary["requests"],
                            "instances": summary["instances"],
                            "failed_requests": summary["failed_requests"],
                            "columns_failing": len(summary["failing"])})
        for rep in summary["reports"]:
            folder = Path(out_dir) / Path(rep["report"]).parent.name
            mlflow.log_artifacts(str(folder), f"skew/{folder.name}")
            report = read_json(folder / "report.json")
            mlflow.log_metrics({
                "skew_" + re.sub(r"[^A-Za-z0-9_.-]", "_", c["name"]) + f"_v{rep['version']}":
                    c["value"] for c in report["columns"] if c["value"] is not None})
        mlflow.log_artifact(str(Path(out_dir) / SUMMARY))
    return run.info.run_id
