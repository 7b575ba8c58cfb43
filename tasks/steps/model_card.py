"""Model card: one Markdown page per registered version, from what the run already knows.

Sources: the raw snapshot (checksum), the dataset manifest (rows and class counts per
split), the drift check against the champion's data (and an operator's override), the
training result (params, MLflow run), the evaluation report (metrics of the
served model on the test split, the champion's on the same rows, parity), the gate
verdict, the approval decision and the use case's docstring (intended use). The card is
the version's registry description and an artifact ``model_card.md`` of its run, and is
kept as ``model_card.md`` in the run folder; ``mlp models --card NAME[/VERSION]`` prints it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.core.config import Settings
from tasks.core.files import read_json
from tasks.core.run import STATS, Deployment, RunLayout, Snapshot, TrainedModel, Verdict
from tasks.spec import CLASSES_STATS_KEY, UseCaseSpec
from tasks.steps.gate_report import input_checks_lines
from tasks.tracking import configure

log = logging.getLogger(__name__)

CARD_FILE = "model_card.md"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "—" if v is None else str(v)


def drift_lines(drift: Mapping[str, Any] | None) -> list[str]:
    """The card's section on the data drift check before training (pure)."""
    lines = ["## Data drift before training", ""]
    if not drift:
        return lines + ["- Not checked for this run.", ""]
    if drift.get("champion_version") is None:
        return lines + [f"- {drift.get('summary', 'no champion yet: nothing to compare')}.",
                        ""]
    lines.append(f"- Against champion v{drift['champion_version']}'s training data: "
                 f"**{drift['status']}** ({drift['summary']})")
    if drift.get("forced"):
        lines.append(f"- **FORCED by operator**: trained despite drift past the fail "
                     f"threshold in {', '.join(drift['failing'])}. Reason: "
                     f"{drift['force_reason']}")
    if drift.get("report"):
        lines.append(f"- Report: `drift/report.md` of the training run ({drift['report']})")
    return lines + [""]


def render_classes(spec: UseCaseSpec, stats: Mapping[str, Any] | None) -> list[str]:
    """The card's class table: id -> name, and where the names came from."""
    names = spec.model.classes(stats)
    if not names:
        return []
    origin = "the use case's spec" if spec.model.class_names else (
        ((stats or {}).get(CLASSES_STATS_KEY) or {}).get("origin") or "the data")
    detection = spec.model.objective == "detection"
    first = 1 if detection else 0
    what = ("`detection_classes` ids of the answers" if detection
            else "output index (probability position)")
    lines = ["## Classes", "", f"{len(names)} classes, from {origin}; id = {what}.", "",
             "| id | class |", "|---:|---|"]
    lines += [f"| {i} | {n} |" for i, n in enumerate(names, first)]
    return [*lines, ""]


def render_card(spec: UseCaseSpec, version: str, snapshot: Snapshot,
                manifest: Mapping[str, Any], trained: TrainedModel,
                evaluation: Mapping[str, Any], verdict: Verdict,
                approval: Mapping[str, Any] | None,
                drift: Mapping[str, Any] | None = None,
                tuning: Mapping[str, Any] | None = None,
                stats: Mapping[str, Any] | None = None) -> str:
    """The model card as Markdown (pure); ``tuning`` is the run's search, if it had one."""
    lines = [f"# Model card: {spec.name} version {version}", ""]
    lines += ["## Intended use", "", spec.description.strip() or spec.name, ""]
    lines += ["## Data", "",
              f"- Raw snapshot: run `{snapshot.run_key}`, checksum `{snapshot.checksum}`", ""]
    lines += ["| split | rows | class counts |", "|---|---:|---|"]
    names = spec.model.classes(stats) if spec.model.objective != "detection" else ()

    def named(k: str) -> str:  # a label id with its class name
        return f"{k} {names[int(k)]}" if k.isdigit() and int(k) < len(names) else k

    for split, info in manifest.get("splits", {}).items():
        counts = ", ".join(f"{named(k)}: {v}"
                           for k, v in (info.get("class_counts") or {}).items())
        lines.append(f"| {split} | {info.get('rows')} | {counts or '—'} |")
    quarantined = manifest.get("quarantined_rows", 0)
    lines += ["", f"Quarantined rows: {quarantined}.", ""]
    lines += render_classes(spec, stats)
    lines += drift_lines(drift)
    lines += ["## Training", "", f"- MLflow run `{trained.run_id}`, objective "
              f"`{spec.model.objective}`, {trained.train_seconds:.1f} s of fitting",
              f"- Params: `{json.dumps(trained.params, sort_keys=True)}`"]
    if trained.calibration:
        lines.append(f"- Calibrated on validation: `{json.dumps(trained.calibration)}`")
    if tuning:
        lines += ["", *search_lines(tuning)]
    data = evaluation.get("data") or {}
    champ = evaluation.get("champion") or {}
    scored = evaluation.get("scored") or "the served model on raw test inputs"
    lines += ["", f"## Evaluation ({scored})", "",
              f"Scored on the `{data.get('split', 'test')}` split of snapshot "
              f"`{str(data.get('snapshot_checksum', snapshot.checksum))[:16]}`, "
              f"{data.get('rows')} rows"
              + (f"; champion v{champ['version']} on the same rows" if champ.get("report")
                 else "") + ".", ""]
    parity = evaluation.get("parity") or {}
    if parity.get("skipped"):
        lines += [f"Parity: {parity['skipped']}.", ""]
    elif parity:
        lines += [f"Parity with the trained model: max |diff| "
                  f"{parity.get('max_abs_diff', 0):.3g} ({parity.get('tolerance')}).", ""]
    champ_report = champ.get("report") or {}
    head = "| metric | this version |" + (f" champion v{champ['version']} (same rows) |"
                                           if champ_report else "")
    lines += [head, "|---|---:|" + ("---:|" if champ_report else "")]
    for key, value in evaluation.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            row = f"| {key} | {_fmt(value)} |"
            if champ_report:
                row += f" {_fmt(champ_report.get(key))} |"
            lines.append(row)
    if evaluation.get("per_class"):
        lines += ["", "| class | support | precision | recall |", "|---|---:|---:|---:|"]
        lines += [f"| {c} | {pc['support']} | {_fmt(pc['precision'])} | {_fmt(pc['recall'])} |"
                  for c, pc in evaluation["per_class"].items()]
    outcome = ("FORCED by operator" if verdict.forced
               else "passed" if verdict.passed else "failed")
    checks = input_checks_lines(evaluation.get("input_checks"))
    if checks:
        lines += ["", *checks[:-1]]
    lines += ["", "## Gate", "", f"- Verdict: **{outcome}** on `{verdict.metric}`",
              f"- Reason: {verdict.reason}"]
    if verdict.forced:
        lines.append(f"- Override reason: {verdict.force_reason}")
    lines += ["", "## Approval", ""]
    if not approval or not approval.get("required"):
        lines.append("- Not required for this run (`require_approval=false`).")
    else:
        lines.append(f"- {approval.get('decision', '?')} by {approval.get('by') or '?'} at "
                     f"{approval.get('at') or '?'}"
                     + (f": {approval['reason']}" if approval.get("reason") else ""))
    return "\n".join(lines) + "\n"


def search_lines(tuning: Mapping[str, Any]) -> list[str]:
    """The card's section on the hyper-parameter search the params came from (pure)."""
    best, default = tuning["best"], tuning.get("default") or {}
    counts = ", ".join(f"{n} {state.lower()}" for state, n in tuning["counts"].items())
    lines = ["## Hyper-parameter search", "",
             f"- Optuna study `{tuning['study']}` ({tuning.get('storage')}), tuning run "
             f"`{tuning['parent_run_id']}`: {len(tuning['trials'])} trials ({counts}), "
             f"judged on `{tuning['metric']}` ({tuning['direction']})",
             "- Search space: " + ", ".join(f"`{k}` {v}" for k, v in
                                            tuning["search_space"].items()),
             f"- These params are trial {best['number']}'s: {tuning['metric']} "
             f"{_fmt(best['value'])}"
             + (f" (the run's default params, trial {default['number']}: "
                f"{_fmt(default.get('value'))})" if default else ""), "",
             "| trial | state | " + tuning["metric"] + " | epochs | params |",
             "|---:|---|---:|---:|---|"]
    for t in tuning["trials"]:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in t["params"].items())
        mark = " (default)" if t.get("default") else ""
        lines.append(f"| {t['number']}{mark} | {t['state']} | {_fmt(t['value'])} | "
                     f"{t['epochs']} | {params} |")
    return lines


def write_card(spec: UseCaseSpec, deployment: Deployment, snapshot: Snapshot,
               trained: TrainedModel, verdict: Verdict, layout: RunLayout,
               approval: Mapping[str, Any] | None = None, s: Settings | None = None) -> Path:
    """Render the card of a deployed version; store it on the version, the run and on disk."""
    import mlflow

    manifest = read_json(layout.dataset_dir / "manifest.json")
    evaluation = read_json(layout.evaluation_file)
    drift_file = layout.drift_dir / "verdict.json"
    drift = read_json(drift_file) if drift_file.is_file() else None
    tuning_file = layout.run_dir / "tune" / "summary.json"  # tasks.steps.tune writes it
    tuning = read_json(tuning_file) if tuning_file.is_file() and \
        trained.params_digest and _tuned(trained, s) else None
    stats_file = layout.dataset_dir / STATS
    stats = read_json(stats_file) if stats_file.is_file() else None
    card = render_card(spec, deployment.version, snapshot, manifest, trained, evaluation,
                       verdict, approval, drift, tuning, stats)
    path = layout.run_dir / CARD_FILE
    path.write_text(card)
    client = configure(s)
    client.update_model_version(deployment.model, deployment.version, description=card)
    with mlflow.start_run(run_id=trained.run_id):
        mlflow.log_text(card, CARD_FILE)
    log.info("model card of %s v%s written (%d lines)", deployment.model, deployment.version,
             card.count("\n"))
    return path


def _tuned(trained: TrainedModel, s: Settings | None) -> bool:
    """Whether the training run was trained with a study's best params."""
    return "tune_study" in configure(s).get_run(trained.run_id).data.tags


def read_card(ref: str, s: Settings | None = None) -> str:
    """The card of ``NAME[/VERSION]`` (default: the champion) from the registry.

    Read through the registry's read-only view on the embedded store (no MLflow import),
    through MLflow's client elsewhere.

    Raises:
        LookupError: No such model or version, or the version has no card.

    """
    from tasks.tracking.registry_view import open_view

    name, _, version = ref.partition("/")
    view = open_view(s)
    if view is not None:
        found = view.version(name, version or None, alias=None if version else "champion")
        if found is None:
            what = f"version {version}" if version else "champion alias"
            raise LookupError(f"{ref}: no such registered model version (no {what} of "
                              f"{name!r})")
        number, description = found["version"], found["description"]
    else:
        from mlflow.exceptions import MlflowException

        client = configure(s)
        try:
            mv = (client.get_model_version(name, version) if version
                  else client.get_model_version_by_alias(name, "champion"))
        except MlflowException as exc:
            raise LookupError(f"{ref}: no such registered model version "
                              f"({str(exc).splitlines()[0]})") from None
        number, description = mv.version, mv.description or ""
    if not description.startswith("# Model card"):
        raise LookupError(f"{name} version {number} has no model card (registered "
                          "before model cards were written)")
    return description
