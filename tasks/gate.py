"""Evaluation gate: absolute thresholds plus comparison with the current champion."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from tasks import tracking
from tasks.config import Settings
from tasks.spec import GateSpec

log = logging.getLogger(__name__)

CHAMPION = "champion"


@dataclass(frozen=True)
class Verdict:
    """Outcome of the gate, with every check spelled out."""

    passed: bool
    reason: str
    metric: str
    candidate: float
    champion: float | None
    champion_version: str | None
    checks: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for XCom and MLflow."""
        return asdict(self)


def decide(gate: GateSpec, metrics: dict[str, float], champion: float | None,
           champion_version: str | None = None) -> Verdict:
    """Apply the gate to candidate metrics (pure; no I/O).

    Args:
        gate: The use case's gate.
        metrics: Candidate metrics from the evaluation step.
        champion: The champion's value of ``gate.metric``, or None if there is no champion.
        champion_version: Registry version of the champion (for the report).

    Returns:
        The verdict; ``reason`` lists every failed check or states why it passed.

    """
    if gate.metric not in metrics:
        raise KeyError(f"gate metric {gate.metric!r} missing from evaluation metrics "
                       f"{sorted(metrics)}")
    value = float(metrics[gate.metric])
    checks: list[dict[str, Any]] = []
    if gate.min_value is not None:
        checks.append({"check": f"{gate.metric} >= {gate.min_value}",
                       "passed": value >= gate.min_value})
    if gate.max_value is not None:
        checks.append({"check": f"{gate.metric} <= {gate.max_value}",
                       "passed": value <= gate.max_value})
    if champion is None:
        checks.append({"check": "no champion yet: value thresholds only", "passed": True})
    elif gate.max_regression is not None:
        regression = (champion - value) if gate.higher_is_better else (value - champion)
        checks.append({
            "check": f"regression vs champion v{champion_version} ({champion:.4f}) "
                     f"<= {gate.max_regression} (is {regression:.4f})",
            "passed": regression <= gate.max_regression,
        })
    failed = [c["check"] for c in checks if not c["passed"]]
    if failed:
        reason = f"{gate.metric}={value:.4f} failed: " + "; ".join(failed)
    else:
        reason = f"{gate.metric}={value:.4f} passed: " + "; ".join(c["check"] for c in checks)
    return Verdict(not failed, reason, gate.metric, value, champion, champion_version, checks)


def champion_metric(model_name: str, metric: str, s: Settings | None = None
                    ) -> tuple[float | None, str | None]:
    """The current champion's value of ``metric`` and its version, or (None, None)."""
    from mlflow.exceptions import MlflowException

    client = tracking.configure(s)
    try:
        mv = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None, None
    run = client.get_run(mv.run_id)
    value = run.data.metrics.get(metric)
    return (None if value is None else float(value)), mv.version


def run_gate(model_name: str, gate: GateSpec, evaluation: dict[str, Any],
             s: Settings | None = None) -> Verdict:
    """Compare the candidate with the champion, record the verdict on the MLflow run."""
    import mlflow

    champion, version = champion_metric(model_name, gate.metric, s)
    verdict = decide(gate, evaluation["metrics"], champion, version)
    tracking.configure(s)
    with mlflow.start_run(run_id=evaluation["run_id"]):
        mlflow.set_tags({"gate.passed": str(verdict.passed).lower(),
                         "gate.reason": verdict.reason[:5000]})
        mlflow.log_dict(verdict.to_dict(), "gate/verdict.json")
    (log.info if verdict.passed else log.warning)("gate %s: %s",
                                                  "PASSED" if verdict.passed else "FAILED",
                                                  verdict.reason)
    return verdict
