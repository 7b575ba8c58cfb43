"""Gate report: candidate and champion side by side, as Markdown, JSON and PNG plots.

Both columns are figures on the same rows (the candidate run's test split, raw inputs
through each exported model); the champion's figure on its own test split is a third,
history-only column. The report names the data (snapshot checksum, split, rows) and,
for classifiers, shows per-class figures of both models.

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
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the side-by-side report (pure).

    Args:
        model_name: Registered model name.
        verdict: :meth:`tasks.gate.Verdict.to_dict` output.
        candidate: ``{"run_id", "metrics"}`` of the candidate (optionally ``report``: the
            full evaluation report, for per-class figures).
        champion: ``{"run_id", "version", "metrics"}`` of the champion on the same rows
            (optionally ``stored_metrics``: its figures on its own test split, and
            ``report``), or None when the model has no champion yet (first deployment).
        plots: File names of the plots written next to the report.
        data: The rows both were scored on (``snapshot_checksum``, ``split``, ``rows``).

    Returns:
        JSON-able report; ``metrics`` rows hold candidate, champion and delta per metric,
        the gate metric first.

    """
    gate_metric = verdict["metric"]
    cand_m = dict(candidate.get("metrics") or {})
    champ_m = dict((champion or {}).get("metrics") or {})
    stored_m = dict((champion or {}).get("stored_metrics") or {})
    names = [gate_metric] + sorted(k for k in cand_m if k != gate_metric
                                   and not k.startswith(("test_precision_", "test_recall_")))
    rows = []
    for name in names:
        c = cand_m.get(name)
        p = champ_m.get(name) if champion else None
        h = stored_m.get(name) if champion else None
        rows.append({
            "metric": name,
            "candidate": None if c is None else float(c),
            "champion": None if p is None else float(p),
            "delta": None if c is None or p is None else float(c) - float(p),
            "champion_stored": None if h is None else float(h),
            "gate": name == gate_metric,
        })
    per_class = []
    cand_pc = ((candidate.get("report") or {}).get("per_class") or {})
    champ_pc = (((champion or {}).get("report") or {}).get("per_class") or {})
    for cls, pc in cand_pc.items():
        other = champ_pc.get(cls, {})
        per_class.append({"class": cls, "support": pc.get("support"),
                          **{f"candidate_{k}": pc.get(k) for k in ("precision", "recall")},
                          **{f"champion_{k}": other.get(k) for k in ("precision", "recall")}})
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
            "error": champion.get("error"),
            "not_same_data": champion.get("not_same_data"),
        },
        "data": dict(data or {}),
        "metrics": rows,
        "per_class": per_class,
        "input_checks": (candidate.get("report") or {}).get("input_checks"),
        "plots": list(plots),
    }


def input_checks_lines(checks: Mapping[str, Any] | None) -> list[str]:
    """Markdown lines on test rows outside the serving schema (tabular models).

    The counts of :func:`tasks.steps.evaluate.input_checks`: per field, test values the
    training split never showed (unseen categories, out-of-range numbers).
    """
    if not checks:
        return []
    lines = ["## Test rows outside the training schema", ""]
    if not checks.get("rows_with_warnings"):
        return lines + [f"None: every value of the {checks.get('rows')} test rows is within "
                        "the declared and training ranges and vocabularies.", ""]
    lines += [f"{checks['rows_with_warnings']} of {checks.get('rows')} test rows hold values "
              "the training split never showed (the served model answers them with "
              "warnings, or refuses them in strict mode):", "",
              "| field | unseen category | out of range | missing | e.g. |",
              "|---|---:|---:|---:|---|"]
    examples = checks.get("examples") or {}
    for name, kinds in sorted((checks.get("fields") or {}).items()):
        shown = [f"row {e['row']}: {e['value']!r}" for kind in kinds
                 for e in examples.get(f"{name}:{kind}", [])][:3]
        lines.append(f"| {name} | {kinds.get('unseen_category', 0)} | "
                     f"{kinds.get('out_of_range', 0)} | {kinds.get('missing', 0)} | "
                     f"{'; '.join(shown)} |")
    return lines + [""]


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
        head = (f"| metric | candidate | champion v{champ['version']} | Δ "
                "| champion on its own test split (history) |\n|---|---:|---:|---:|---:|")
    data = report.get("data") or {}
    other = (champ or {}).get("not_same_data")
    if data and other:
        lines += [f"**Data:** the candidate was scored on the `{data.get('split')}` split of "
                  f"snapshot `{str(data.get('snapshot_checksum'))[:16]}`, {data.get('rows')} "
                  f"rows (`{data.get('inputs')}`). The champion could not be re-scored on "
                  f"them ({other}): its column is its stored figure on its own test split, "
                  "not the same data.", ""]
    elif data:
        both = ("Both models were scored on the same rows" if champ is not None
                else "The candidate was scored on")
        lines += [f"**Data:** {both}: the `{data.get('split')}` "
                  f"split of snapshot `{str(data.get('snapshot_checksum'))[:16]}`, "
                  f"{data.get('rows')} rows, raw inputs through each exported model "
                  f"(`{data.get('inputs')}`). The gate compares these figures only.", ""]
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
                         f"| {delta} | {_fmt(row.get('champion_stored'))} |")
    if report.get("per_class"):
        lines += ["", "## Per class (same rows)", ""]
        if champ is None:
            lines += ["| class | support | precision | recall |", "|---|---:|---:|---:|"]
            lines += [f"| {r['class']} | {r['support']} | {_fmt(r['candidate_precision'])} "
                      f"| {_fmt(r['candidate_recall'])} |" for r in report["per_class"]]
        else:
            lines += ["| class | support | precision: candidate | champion | recall: "
                      "candidate | champion |", "|---|---:|---:|---:|---:|---:|"]
            lines += [f"| {r['class']} | {r['support']} | {_fmt(r['candidate_precision'])} "
                      f"| {_fmt(r['champion_precision'])} | {_fmt(r['candidate_recall'])} "
                      f"| {_fmt(r['champion_recall'])} |" for r in report["per_class"]]
    checks = input_checks_lines(report.get("input_checks"))
    if checks:
        lines += ["", *checks]
    if report["plots"]:
        lines += ["", "## Plots", ""]
        lines += [f"![{p}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"
