"""Gate report: candidate and champion side by side, as Markdown, JSON and PNG plots.

The report is built from plain dicts (:func:`build_report`, :func:`render_markdown` are
pure) so it can be tested without MLflow; :mod:`tasks.gate` gathers the inputs from the
tracking store and logs the files under ``gate/`` on the candidate's run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

CONFUSION_PNG = "confusion_matrices.png"
CURVES_PNG = "learning_curves.png"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def build_report(
    model_name: str,
    verdict: Mapping[str, Any],
    candidate: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    plots: Sequence[str] = (),
) -> dict[str, Any]:
    """Assemble the side-by-side report (pure).

    Args:
        model_name: Registered model name.
        verdict: :meth:`tasks.gate.Verdict.to_dict` output.
        candidate: ``{"run_id", "metrics"}`` of the candidate.
        champion: ``{"run_id", "version", "metrics"}`` of the champion, or None when the
            model has no champion yet (first deployment).
        plots: File names of the plots written next to the report.

    Returns:
        JSON-able report; ``metrics`` rows hold candidate, champion and delta per metric,
        the gate metric first.

    """
    gate_metric = verdict["metric"]
    cand_m = dict(candidate.get("metrics") or {})
    champ_m = dict((champion or {}).get("metrics") or {})
    names = [gate_metric] + sorted(k for k in cand_m if k != gate_metric)
    rows = []
    for name in names:
        c = cand_m.get(name)
        p = champ_m.get(name) if champion else None
        rows.append({
            "metric": name,
            "candidate": None if c is None else float(c),
            "champion": None if p is None else float(p),
            "delta": None if c is None or p is None else float(c) - float(p),
            "gate": name == gate_metric,
        })
    return {
        "model": model_name,
        "passed": bool(verdict["passed"]),
        "forced": bool(verdict.get("forced", False)),
        "force_reason": verdict.get("force_reason") or "",
        "reason": verdict["reason"],
        "checks": list(verdict.get("checks", [])),
        "first_deployment": champion is None,
        "candidate": {"run_id": candidate.get("run_id")},
        "champion": None if champion is None else {
            "run_id": champion.get("run_id"), "version": str(champion.get("version")),
        },
        "metrics": rows,
        "plots": list(plots),
    }


def render_markdown(report: Mapping[str, Any]) -> str:
    """Render :func:`build_report` output as Markdown (pure)."""
    if report["forced"]:
        outcome = "FORCED by operator"
    else:
        outcome = "PASSED" if report["passed"] else "FAILED"
    lines = [f"# Gate report: {report['model']}", "", f"**Verdict: {outcome}** — "
             f"{report['reason']}", ""]
    if report["forced"]:
        lines += [f"Operator override: force_deploy=true, reason: {report['force_reason']!r}.",
                  ""]
    champ = report["champion"]
    if champ is None:
        lines += ["**No champion yet**: this is the first deployment of "
                  f"`{report['model']}`, so only the absolute thresholds apply and there is "
                  "nothing to compare against.", ""]
        head = "| metric | candidate |\n|---|---:|"
    else:
        lines += [f"Champion: version {champ['version']} (run `{champ['run_id']}`); "
                  f"candidate: run `{report['candidate']['run_id']}`.", ""]
        head = (f"| metric | candidate | champion v{champ['version']} | Δ |\n"
                "|---|---:|---:|---:|")
    lines += ["## Checks", ""]
    lines += [f"- [{'x' if c['passed'] else ' '}] {c['check']}" for c in report["checks"]]
    lines += ["", "## Metrics", "", head]
    for row in report["metrics"]:
        name = f"**{row['metric']}** (gate)" if row["gate"] else row["metric"]
        if champ is None:
            lines.append(f"| {name} | {_fmt(row['candidate'])} |")
        else:
            delta = "—" if row["delta"] is None else f"{row['delta']:+.4f}"
            lines.append(f"| {name} | {_fmt(row['candidate'])} | {_fmt(row['champion'])} "
                         f"| {delta} |")
    if report["plots"]:
        lines += ["", "## Plots", ""]
        lines += [f"![{p}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"
