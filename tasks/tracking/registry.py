"""Model registry operations: lineage tags, rollback, and a listing for operators.

Every deployed version carries its lineage as tags (run key, data checksum, statistics
URI, git commit, gate verdict, operator override). Two aliases say what serves:
``champion`` (served) and ``previous`` (the one it replaced, the rollback target).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tasks.core.config import Settings
from tasks.core.run import Verdict
from tasks.tracking.store import configure

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"
DEFAULT_METRIC = "test_accuracy"


class RegistryError(RuntimeError):
    """A registry operation cannot be carried out; the message says why."""


def version_tags(
    verdict: Verdict,
    run_key: str,
    data_checksum: str,
    stats_uri: str,
    run_id: str,
    git_commit: str,
) -> dict[str, str]:
    """Lineage and gate tags of a deployed version (pure).

    Args:
        verdict: The gate's verdict.
        run_key: The DAG run's partition key.
        data_checksum: Raw snapshot checksum.
        stats_uri: Where the preprocessing statistics of the run live.
        run_id: MLflow training run.
        git_commit: Platform code commit.

    Returns:
        Tag name -> value; ``forced_by_operator``/``force_reason`` only on forced deploys.

    """
    tags = {
        "run_key": run_key,
        "data_checksum": data_checksum,
        "preprocessing_stats": stats_uri,
        "git_commit": git_commit,
        "gate_passed": str(verdict.passed).lower(),
        "gate_reason": verdict.reason[:5000],
        "mlflow_run_id": run_id,
        "gate_metric": verdict.metric,
        "gate_value": str(verdict.candidate),
    }
    if verdict.forced:
        tags["forced_by_operator"] = "true"
        tags["force_reason"] = verdict.force_reason[:5000]
    return tags


def champion_run(model_name: str, s: Settings | None = None) -> dict[str, Any] | None:
    """The current champion as ``{"version", "run_id", "metrics"}``, or None."""
    from mlflow.exceptions import MlflowException

    client = configure(s)
    try:
        mv = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None
    metrics = dict(client.get_run(mv.run_id).data.metrics) if mv.run_id else {}
    return {"version": str(mv.version), "run_id": mv.run_id, "metrics": metrics}


def is_date_key(key: str | None) -> bool:
    """Whether a run key is a logical date (``YYYYmmddTHHMMSSZ``), hence orderable."""
    return bool(key) and len(key) == 16 and key[8] == "T" and key.endswith("Z") \
        and key[:8].isdigit() and key[9:15].isdigit()


def older_than_champion(version: str, run_key: str, champion_version: str,
                        champion_run_key: str | None) -> str | None:
    """Why ``version`` is older than the champion (pure), or None when it is not.

    Older means registered before the champion, or trained for an earlier logical date
    (when both run keys are dates). Deploying it would move production backwards.
    """
    if int(version) < int(champion_version):
        return (f"version {version} was registered before the champion, version "
                f"{champion_version}")
    if is_date_key(run_key) and is_date_key(champion_run_key) and run_key < champion_run_key:
        return (f"its run {run_key} is for an earlier logical date than the champion's "
                f"(version {champion_version}, run {champion_run_key})")
    return None


def _alias_version(client: Any, model_name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def rollback(model_name: str, s: Settings | None = None) -> dict[str, Any]:
    """Swap ``champion`` back to ``previous``; the demoted version becomes ``previous``.

    Rolling back twice therefore restores the original champion. Servers pick the new
    champion up on their next registry poll.

    Returns:
        ``{"model", "champion": new champion, "previous": demoted version}``.

    Raises:
        RegistryError: Unknown model, no champion, or no previous version to go back to.

    """
    from mlflow.exceptions import MlflowException

    client = configure(s)
    try:
        client.get_registered_model(model_name)
    except MlflowException as exc:
        raise RegistryError(f"no registered model named {model_name!r}") from exc
    current = _alias_version(client, model_name, CHAMPION)
    target = _alias_version(client, model_name, PREVIOUS)
    if current is None:
        raise RegistryError(f"{model_name} has no {CHAMPION}: nothing to roll back")
    if target is None or target == current:
        raise RegistryError(f"{model_name} has no {PREVIOUS} version to roll back to "
                            f"({CHAMPION} is version {current})")
    # Champion first: between the two calls both aliases name the target, never nothing.
    client.set_registered_model_alias(model_name, CHAMPION, target)
    client.set_registered_model_alias(model_name, PREVIOUS, current)
    client.set_model_version_tag(model_name, current, "demoted_by_rollback", "true")
    log.info("%s rolled back: %s is %s again (version %s demoted to %s)", model_name,
             target, CHAMPION, current, PREVIOUS)
    return {"model": model_name, "champion": target, "previous": current}


def _gate_metric(model_name: str, tags: Mapping[str, str]) -> str:
    """The metric the version was gated on: its tag, else its use case's, else a default."""
    if "gate_metric" in tags:
        return tags["gate_metric"]
    from tasks.spec import catalog

    if model_name in catalog.names():
        return catalog.get(model_name).gate.metric
    return DEFAULT_METRIC


def list_models(s: Settings | None = None) -> list[dict[str, Any]]:
    """Every registered model version with its aliases and gate metric value.

    Returns:
        Rows sorted by model name then version (newest first): ``model``, ``version``,
        ``aliases``, ``metric``, ``value`` (from the version's run), ``run_id``,
        ``gate_passed``, ``forced``, ``run_key``.

    """
    client = configure(s)
    rows = []
    for rm in sorted(client.search_registered_models(), key=lambda r: r.name):
        aliases: dict[str, list[str]] = {}
        for alias, version in (rm.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        versions = client.search_model_versions(f"name='{rm.name}'")
        for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
            tags = dict(mv.tags or {})
            metric = _gate_metric(rm.name, tags)
            value = None
            if mv.run_id:
                try:
                    value = client.get_run(mv.run_id).data.metrics.get(metric)
                except Exception:  # run deleted: the version is still listed
                    value = None
            rows.append({
                "model": rm.name,
                "version": str(mv.version),
                "aliases": sorted(aliases.get(str(mv.version), [])),
                "metric": metric,
                "value": None if value is None else float(value),
                "run_id": mv.run_id,
                "gate_passed": tags.get("gate_passed"),
                "forced": tags.get("forced_by_operator") == "true",
                "run_key": tags.get("run_key"),
            })
    return rows


def format_models(rows: list[dict[str, Any]]) -> str:
    """Render :func:`list_models` rows as a fixed-width table (pure)."""
    if not rows:
        return "no registered models"
    header = ("MODEL", "VERSION", "ALIASES", "METRIC", "VALUE", "GATE", "RUN KEY")
    table = [header]
    for r in rows:
        gate = "forced" if r["forced"] else {"true": "passed", "false": "failed"}.get(
            r["gate_passed"] or "", "-")
        table.append((
            r["model"], r["version"], ",".join(r["aliases"]) or "-", r["metric"],
            "-" if r["value"] is None else f"{r['value']:.4f}", gate, r["run_key"] or "-",
        ))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in table)
