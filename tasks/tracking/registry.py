"""Model registry operations: lineage tags, alias history, rollback, and a listing.

Every deployed version carries its lineage as tags (run key, data checksum, statistics
URI, git commit, gate verdict, operator override). Two aliases say what serves:
``champion`` (served) and ``previous`` (the version rollback would go back to).

Every move of ``champion`` (deploy, forced deploy, rollback) is recorded as a tag of the
registered model, ``alias_move.<seq>`` = JSON ``{seq, alias, version, from, action, who,
when, why}`` (:func:`record_alias_move`), so the history survives in the registry itself
and ``mlp models --history NAME`` lists it. Rollback follows that history like a stack:
each rollback goes one champion further back, so rolling back twice goes two versions
back; ``rollback --to VERSION`` goes to a given version.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tasks.core.config import Settings
from tasks.core.run import Verdict
from tasks.tracking.store import configure

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"
DEFAULT_METRIC = "test_accuracy"
MOVE_TAG = "alias_move."
OPERATOR_ENV = "MLP_OPERATOR"  # who moved an alias (default: the OS user)


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


def left_champion(version: str, moves: list[dict[str, Any]]) -> str | None:
    """Why ``version`` must not become champion again by a rerun (pure), or None.

    It must not when the recorded history shows it was champion once and ``champion``
    later moved away from it (an operator's rollback, a forced deploy, a newer deploy):
    re-running its run replays a decision already taken and undone.
    """
    left = [m for m in moves if m.get("alias", CHAMPION) == CHAMPION
            and m.get("from") == str(version)]
    if not any(m.get("alias", CHAMPION) == CHAMPION and m["version"] == str(version)
               for m in moves) or not left:
        return None
    m = left[-1]
    return (f"version {version} was {CHAMPION} before and was moved away from by "
            f"{m['action']} to version {m['version']} ({m['who']}, {m['when']}"
            f"{': ' + m['why'].splitlines()[0][:120] if m.get('why') else ''}); "
            f"re-running its run does not undo that")


def replayed_force(version: str, reason: str, moves: list[dict[str, Any]]) -> str | None:
    """Why a forced deploy of ``version`` is a replay of one already done (pure), or None.

    A forced deploy records the operator's reason with its move. The same version forced
    again with the same reason is the same decision replayed (a cleared or rerun DAG run
    keeps its conf), not a new word from an operator; after a rollback it must not move
    production again. A new reason is a new decision.
    """
    done = [m for m in moves if m.get("alias", CHAMPION) == CHAMPION
            and m["action"] == "force" and m["version"] == str(version)
            and m.get("why", "") == reason[:2000]]
    if not done:
        return None
    m = done[-1]
    return (f"version {version} was already forced to {CHAMPION} for this reason "
            f"({m['who']}, {m['when']}); replaying that run does not repeat it")


def _alias_version(client: Any, model_name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def operator() -> str:
    """Who is acting: ``$MLP_OPERATOR``, else the OS user."""
    try:
        return os.environ.get(OPERATOR_ENV) or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def alias_history(model_name: str, s: Settings | None = None, client: Any = None
                  ) -> list[dict[str, Any]]:
    """Every recorded alias move of a registered model, oldest first.

    Raises:
        RegistryError: No registered model of that name.

    """
    from mlflow.exceptions import MlflowException

    client = client or configure(s)
    try:
        tags = client.get_registered_model(model_name).tags or {}
    except MlflowException as exc:
        raise RegistryError(f"no registered model named {model_name!r}") from exc
    moves = [json.loads(v) for k, v in tags.items() if k.startswith(MOVE_TAG)]
    return sorted(moves, key=lambda m: m["seq"])


def record_alias_move(model_name: str, version: str, previous: str | None, action: str,
                      why: str = "", s: Settings | None = None, alias: str = CHAMPION,
                      client: Any = None) -> dict[str, Any] | None:
    """Record that ``alias`` moved from ``previous`` to ``version`` (who, when, why).

    Called by deploy and rollback after moving the alias. A non-move (the alias already
    named ``version``, e.g. a re-run deploy) records nothing.

    Returns:
        The recorded move, or None when nothing moved.

    """
    if previous is not None and str(previous) == str(version):
        return None
    client = client or configure(s)
    seq = 1 + max((m["seq"] for m in alias_history(model_name, client=client)), default=0)
    move = {"seq": seq, "alias": alias, "version": str(version),
            "from": None if previous is None else str(previous), "action": action,
            "who": operator(), "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "why": why[:2000]}
    client.set_registered_model_tag(model_name, f"{MOVE_TAG}{seq:06d}", json.dumps(move))
    return move


def record_deploy(model_name: str, version: str, previous: str | None, verdict: Verdict,
                  s: Settings | None = None) -> dict[str, Any] | None:
    """Record a deploy's champion move: ``force`` with the operator's reason, else ``deploy``."""
    if verdict.forced:
        return record_alias_move(model_name, version, previous, "force", verdict.force_reason, s)
    return record_alias_move(model_name, version, previous, "deploy", verdict.reason, s)


def champion_stack(moves: list[dict[str, Any]]) -> list[str]:
    """The champions that rollback would go back through, oldest first (pure).

    Deploys (and promotions) push a version; a rollback pops the top; a rollback to a
    version truncates the stack after it (or pushes it when it never was champion). The
    first recorded move's ``from`` is the bottom: the champion set before any history.
    """
    stack: list[str] = []
    for m in moves:
        if m.get("alias", CHAMPION) != CHAMPION:
            continue
        v = m["version"]
        if not stack and m.get("from") and not m["action"].startswith("rollback"):
            stack.append(str(m["from"]))  # the champion before the history began
        if m["action"].startswith("rollback") and v in stack:
            last = len(stack) - 1 - stack[::-1].index(v)
            del stack[last + 1:]
        elif not stack or stack[-1] != v:
            stack.append(v)
    return stack


def rollback(model_name: str, s: Settings | None = None, to: str | None = None,
             why: str = "") -> dict[str, Any]:
    """Move ``champion`` back one step in its history (or to version ``to``).

    The target is the version that was champion before the current one, as recorded by
    :func:`record_alias_move`; rolling back again goes one more step back. Models
    registered before the history existed fall back to the ``previous`` alias once.
    ``previous`` then names the next version back (removed when there is none). Servers
    pick the new champion up on their next registry poll.

    Returns:
        ``{"model", "champion": new champion, "previous": next rollback target or None,
        "demoted": the version that was champion}``.

    Raises:
        RegistryError: Unknown model or version, no champion, or nothing to go back to.

    """
    from mlflow.exceptions import MlflowException

    client = configure(s)
    moves = alias_history(model_name, client=client)
    current = _alias_version(client, model_name, CHAMPION)
    if current is None:
        raise RegistryError(f"{model_name} has no {CHAMPION}: nothing to roll back")
    stack = champion_stack(moves)
    if not stack or stack[-1] != current:  # no (or stale) history: the aliases say it
        legacy = _alias_version(client, model_name, PREVIOUS)
        stack = [legacy, current] if legacy not in (None, current) else [current]
    if to is not None:
        to = str(to)
        try:
            client.get_model_version(model_name, to)
        except MlflowException as exc:
            raise RegistryError(f"{model_name} has no version {to}") from exc
        if to == current:
            raise RegistryError(f"version {to} of {model_name} is already {CHAMPION}")
        target, action = to, "rollback_to"
        rest = stack[:len(stack) - 1 - stack[::-1].index(to)] if to in stack else stack
    else:
        if len(stack) < 2:
            raise RegistryError(f"{model_name} has no earlier {CHAMPION} to roll back to "
                                f"({CHAMPION} is version {current}; `mlp models --history "
                                f"{model_name}` lists the moves)")
        target, action, rest = stack[-2], "rollback", stack[:-2]
    # Champion first: between the two calls the aliases name real versions, never nothing.
    client.set_registered_model_alias(model_name, CHAMPION, target)
    record_alias_move(model_name, target, current, action,
                      why or f"operator rollback from version {current}", client=client)
    new_previous = rest[-1] if rest else None
    if new_previous is None:
        with contextlib.suppress(MlflowException):
            client.delete_registered_model_alias(model_name, PREVIOUS)
    else:
        client.set_registered_model_alias(model_name, PREVIOUS, new_previous)
    client.set_model_version_tag(model_name, current, "demoted_by_rollback", "true")
    log.info("%s rolled back: version %s is %s again (version %s demoted)", model_name,
             target, CHAMPION, current)
    return {"model": model_name, "champion": target, "previous": new_previous,
            "demoted": current}


def format_history(model_name: str, moves: list[dict[str, Any]]) -> str:
    """Render :func:`alias_history` as a fixed-width table (pure)."""
    if not moves:
        return f"{model_name}: no recorded alias moves"
    header = ("SEQ", "WHEN", "ACTION", "ALIAS", "FROM", "TO", "WHO", "WHY")
    table = [header] + [(str(m["seq"]), m["when"], m["action"], m.get("alias", CHAMPION),
                         m["from"] or "-", m["version"], m["who"],
                         (m["why"] or "-").splitlines()[0][:80]) for m in moves]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in table)


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

    On the embedded SQLite store the rows are read through the read-only
    :mod:`~tasks.tracking.registry_view` (no MLflow import: the command answers in a
    fraction of a second); elsewhere through MLflow's client. Both give the same rows.

    Returns:
        Rows sorted by model name then version (newest first): ``model``, ``version``,
        ``aliases``, ``metric``, ``value`` (from the version's run), ``run_id``,
        ``gate_passed``, ``forced``, ``run_key``.

    """
    from tasks.tracking.registry_view import open_view

    view = open_view(s)
    if view is not None:
        models = view.models()
        versions = {m["name"]: view.versions(m["name"]) for m in models}
        metric_of = view.metric
    else:
        client = configure(s)
        models, versions = [], {}
        for rm in client.search_registered_models():
            models.append({"name": rm.name, "aliases": {
                a: str(v) for a, v in (rm.aliases or {}).items()}})
            versions[rm.name] = [
                {"version": str(mv.version), "run_id": mv.run_id,
                 "tags": dict(mv.tags or {})}
                for mv in client.search_model_versions(f"name='{rm.name}'")]

        def metric_of(run_id: str, key: str) -> float | None:
            return client.get_run(run_id).data.metrics.get(key)

    rows = []
    for rm in sorted(models, key=lambda r: r["name"]):
        aliases: dict[str, list[str]] = {}
        for alias, version in rm["aliases"].items():
            aliases.setdefault(str(version), []).append(alias)
        for mv in sorted(versions[rm["name"]], key=lambda v: int(v["version"]),
                         reverse=True):
            tags = mv["tags"]
            metric = _gate_metric(rm["name"], tags)
            value = None
            if mv["run_id"]:
                try:
                    value = metric_of(mv["run_id"], metric)
                except Exception:  # run deleted: the version is still listed
                    value = None
            rows.append({
                "model": rm["name"],
                "version": mv["version"],
                "aliases": sorted(aliases.get(mv["version"], [])),
                "metric": metric,
                "value": None if value is None else float(value),
                "run_id": mv["run_id"],
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
