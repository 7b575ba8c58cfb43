"""Evaluation gate: absolute thresholds plus comparison with the current champion.

The comparison is like with like: the evaluation step scored the candidate's exported
model and the current champion on the same rows (this run's test split, raw inputs) with
the same objective code; the gate compares those two figures. The champion's figure on
its own, older test split is shown as history and never decides.

:func:`decide` is the pure rule; :func:`apply_override` turns an operator's
``force_deploy`` (which must carry a reason) into a forced verdict; :func:`run_gate` looks
up the champion, writes the side-by-side report (:mod:`tasks.steps.gate_report`) and logs it to
the candidate's MLflow run under ``gate/``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from tasks import tracking
from tasks.core.config import Settings
from tasks.core.errors import PermanentError
from tasks.core.files import atomic_dir
from tasks.core.run import GATE_VERDICT_ARTIFACT, Evaluation, Verdict
from tasks.spec import GateSpec

log = logging.getLogger(__name__)


class ForceWithoutReason(PermanentError, ValueError):
    """``force_deploy`` was requested without saying why; nothing is deployed."""


def decide(gate: GateSpec, metrics: dict[str, float], champion: float | None,
           champion_version: str | None = None, *, champion_stored: float | None = None,
           champion_error: str | None = None, data: dict[str, Any] | None = None,
           champion_other_data: str | None = None) -> Verdict:
    """Apply the gate to candidate metrics (pure; no I/O).

    Args:
        gate: The use case's gate.
        metrics: Candidate metrics from the evaluation step.
        champion: The champion's value of ``gate.metric`` on the candidate's test rows, or
            None if there is no champion.
        champion_version: Registry version of the champion (for the report).
        champion_stored: The champion's figure on its own test split (history only).
        champion_other_data: Set when the champion cannot be re-scored on these rows
            (raw-media or text inputs): why. ``champion`` is then its stored figure and
            the check says it is a comparison on other data.
        champion_error: Why the champion could not be scored on these rows (the
            comparison then fails: an operator may force the deploy).
        data: The rows both were scored on (for the report).

    Returns:
        The verdict; ``reason`` lists every failed check or states why it passed.

    """
    if gate.metric not in metrics:
        raise KeyError(f"gate metric {gate.metric!r} missing from evaluation metrics "
                       f"{sorted(metrics)}")
    value = float(metrics[gate.metric])
    checks: list[dict[str, Any]] = []
    note = f" ({gate.note})" if gate.note else ""
    if gate.min_value is not None:
        checks.append({"check": f"{gate.metric} >= {gate.min_value}{note}",
                       "passed": value >= gate.min_value})
    if gate.max_value is not None:
        checks.append({"check": f"{gate.metric} <= {gate.max_value}{note}",
                       "passed": value <= gate.max_value})
    if gate.baseline is not None:
        if gate.baseline not in metrics:
            raise KeyError(f"gate baseline {gate.baseline!r} missing from evaluation metrics "
                           f"{sorted(metrics)}")
        ref = float(metrics[gate.baseline])
        op = ">" if gate.higher_is_better else "<"
        checks.append({"check": f"{gate.metric} {op} {gate.baseline} ({ref:.4f}, same run)",
                       "passed": value > ref if gate.higher_is_better else value < ref})
    if champion_error is not None:
        checks.append({"check": f"champion v{champion_version} could not be scored on this "
                                f"run's test rows ({champion_error}): no comparison",
                       "passed": False})
    elif champion is None:
        checks.append({"check": "no champion yet: value thresholds only", "passed": True})
    elif gate.max_regression is not None:
        regression = (champion - value) if gate.higher_is_better else (value - champion)
        where = ("on the same test rows" if champion_other_data is None else
                 f"stored on its own test split (not the same data: {champion_other_data})")
        checks.append({
            "check": f"regression vs champion v{champion_version} {where} "
                     f"({champion:.4f}) <= {gate.max_regression} (is {regression:.4f})",
            "passed": regression <= gate.max_regression,
        })
    failed = [c["check"] for c in checks if not c["passed"]]
    if failed:
        reason = f"{gate.metric}={value:.4f} failed: " + "; ".join(failed)
    else:
        reason = f"{gate.metric}={value:.4f} passed: " + "; ".join(c["check"] for c in checks)
    return Verdict(not failed, reason, gate.metric, value, champion, champion_version, checks,
                   champion_stored=champion_stored, data=dict(data or {}))


def check_override(force_deploy: bool, force_reason: str | None) -> str | None:
    """Validate an operator override before anything runs (pure).

    Returns:
        The stripped reason when ``force_deploy`` is set, else None.

    Raises:
        ForceWithoutReason: ``force_deploy`` is set but ``force_reason`` is empty.

    """
    if not force_deploy:
        return None
    reason = (force_reason or "").strip()
    if not reason:
        raise ForceWithoutReason(
            "force_deploy=true requires a non-empty force_reason run param saying why the "
            "gate is overridden (it is recorded on the registry version); nothing deployed"
        )
    return reason


def apply_override(verdict: Verdict, force_deploy: bool, force_reason: str | None) -> Verdict:
    """Apply an operator's ``force_deploy`` to a gate verdict (pure).

    Args:
        verdict: What :func:`decide` concluded.
        force_deploy: The run param.
        force_reason: Why the operator overrides the gate.

    Returns:
        ``verdict`` unchanged without ``force_deploy``; otherwise a passing verdict marked
        ``forced``, whose reason keeps the gate's own outcome.

    Raises:
        ForceWithoutReason: ``force_deploy`` without a reason.

    """
    reason = check_override(force_deploy, force_reason)
    if reason is None:
        return verdict
    own = "passed" if verdict.passed else "failed"
    return replace(
        verdict, passed=True, forced=True, force_reason=reason,
        reason=f"FORCED by operator ({reason}); the gate itself {own}: {verdict.reason}",
    )


def _read_report(path: str) -> dict[str, Any] | None:
    """The evaluation step's report (candidate, champion on the same rows, data)."""
    from tasks.core.files import read_json

    try:
        return read_json(Path(path)) if path else None
    except (OSError, ValueError):
        return None


def _histories(client: Any, run_id: str | None) -> dict[str, list[float]]:
    """Per-epoch training metrics of a run (those logged at two or more steps)."""
    if not run_id:
        return {}
    out = {}
    for key in client.get_run(run_id).data.metrics:
        if key.startswith("test_"):
            continue  # evaluation scalars, one value each
        hist = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        if len(hist) >= 2:
            out[key] = [float(m.value) for m in hist]
    return out


def write_report(model_name: str, verdict: Verdict, candidate: dict[str, Any],
                 champion: dict[str, Any] | None, out_dir: Path, client: Any) -> dict[str, Any]:
    """Write ``report.md``, ``report.json`` and the PNGs into ``out_dir``; return the report.

    ``candidate`` and ``champion`` may carry ``report``: the evaluation step's full report
    of each on the same rows (confusion matrices and per-class figures come from there).
    """
    from tasks.core.files import write_json
    from tasks.objectives.plots import confusion_matrices, learning_curves
    from tasks.steps.gate_report import CONFUSION_PNG, CURVES_PNG, build_report, render_markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    cand_eval = candidate.get("report")
    champ_eval = (champion or {}).get("report")
    if cand_eval is not None and "confusion_matrix" in cand_eval:
        rows = verdict.data.get("rows")
        panels = [(f"candidate (run {candidate['run_id'][:8]})", cand_eval)]
        if champ_eval is not None and "confusion_matrix" in champ_eval:
            panels.append((f"champion v{champion['version']}, same {rows} rows", champ_eval))
        confusion_matrices(panels, out_dir / CONFUSION_PNG)
        plots.append(CONFUSION_PNG)
    series = [("candidate", _histories(client, candidate["run_id"]))]
    if champion is not None:
        series.append((f"champion v{champion['version']}", _histories(client, champion["run_id"])))
    if learning_curves([(lbl, h) for lbl, h in series if h], out_dir / CURVES_PNG):
        plots.append(CURVES_PNG)
    report = build_report(model_name, verdict.to_dict(), candidate, champion, plots,
                          data=verdict.data)
    (out_dir / "report.md").write_text(render_markdown(report))
    write_json(out_dir / "report.json", report)
    return report


def run_gate(model_name: str, gate: GateSpec, evaluation: Evaluation,
             s: Settings | None = None, *, force_deploy: bool = False,
             force_reason: str | None = None, out_dir: Path | None = None) -> Verdict:
    """Compare the candidate with the champion; record verdict and report on its MLflow run.

    Args:
        model_name: Registered model name (the use case name).
        gate: The use case's gate.
        evaluation: Output of the evaluation step.
        s: Settings.
        force_deploy: Operator override: pass whatever the checks say.
        force_reason: Why; required with ``force_deploy``.
        out_dir: Where the report files are kept (default: a temporary directory).

    Returns:
        The verdict (``forced`` when overridden).

    Raises:
        ForceWithoutReason: ``force_deploy`` without a reason (checked before any work).

    """
    import mlflow

    check_override(force_deploy, force_reason)
    client = tracking.configure(s)
    champ = evaluation.champion
    full = _read_report(evaluation.report) or {}
    stored = (champ or {}).get("stored_metrics", {}).get(gate.metric)
    other = (champ or {}).get("not_same_data")
    value = stored if other else (champ or {}).get("metrics", {}).get(gate.metric)
    verdict = decide(gate, evaluation.metrics, None if value is None else float(value),
                     champ["version"] if champ else None,
                     champion_stored=None if stored is None else float(stored),
                     champion_error=(champ or {}).get("error"), data=evaluation.data,
                     champion_other_data=other)
    verdict = apply_override(verdict, force_deploy, force_reason)
    candidate = {"run_id": evaluation.run_id, "metrics": evaluation.metrics,
                 "report": full or None}
    champion = None if champ is None else {
        **champ, "report": (full.get("champion") or {}).get("report")}
    with tempfile.TemporaryDirectory(prefix="gate-") as tmp:
        write_report(model_name, verdict, candidate, champion, Path(tmp), client)
        with mlflow.start_run(run_id=evaluation.run_id):
            mlflow.set_tags({"gate.passed": str(verdict.passed).lower(),
                             "gate.forced": str(verdict.forced).lower(),
                             "gate.reason": verdict.reason[:5000]})
            mlflow.log_dict(verdict.to_dict(), GATE_VERDICT_ARTIFACT)
            mlflow.log_artifacts(tmp, "gate")
        if out_dir is not None:  # replaced whole: no stale plot from an earlier attempt
            with atomic_dir(Path(out_dir)) as staged:
                shutil.copytree(tmp, staged, dirs_exist_ok=True)
    if verdict.forced:
        log.warning("gate FORCED by operator: %s", verdict.reason)
    else:
        (log.info if verdict.passed else log.warning)(
            "gate %s: %s", "PASSED" if verdict.passed else "FAILED", verdict.reason)
    if champion is None:
        log.info("no champion of %s yet: first deployment, value thresholds only", model_name)
    return verdict
