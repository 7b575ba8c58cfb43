"""The ``challenger`` alias: a version scored in the shadow of the champion, then promoted.

A challenger is set by a deploy with ``rollout=shadow`` (:mod:`tasks.steps.deploy`) or by
an operator (``mlp models --set-challenger NAME/VERSION``). Servers answer every request
with the champion and score a sample with the challenger off the request path
(:mod:`tasks.serving.shadow`), logging the agreement figures to the challenger's MLflow
run as ``shadow_*`` metrics. ``mlp promote NAME`` shows those figures and moves
``champion`` to the challenger (the old champion becomes ``previous``, so ``mlp rollback``
undoes a promotion like a deploy).

Every move of ``challenger`` and ``champion`` is recorded with
:func:`tasks.tracking.registry.record_alias_move`, the one alias history of the registry.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from tasks.core.config import Settings
from tasks.tracking.registry import (
    CHAMPION,
    PREVIOUS,
    RegistryError,
    _alias_version,
    record_alias_move,
)
from tasks.tracking.store import configure

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
# Metrics and tags the server logs on the challenger's run (tasks.serving.shadow).
SHADOW_PREFIX = "shadow_"
SHADOW_CHAMPION_TAG = "shadow.champion_version"
SHADOW_MEASURE_TAG = "shadow.measure"
SHADOW_UPDATED_TAG = "shadow.updated"


def _model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        raise RegistryError(f"no registered model named {name!r}") from exc


def _version(client: Any, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    _model(client, name)
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(f"{name} has no version {version}") from exc


def set_challenger(name: str, version: str, s: Settings | None = None, why: str = "",
                   action: str = "set_challenger", client: Any = None) -> dict[str, Any]:
    """Point ``challenger`` at ``version`` of ``name`` and record the move.

    Returns:
        ``{"model", "challenger", "previous_challenger", "champion"}``.

    Raises:
        RegistryError: Unknown model or version, or the version is the champion.

    """
    client = client or configure(s)
    version = str(_version(client, name, version).version)
    champion = _alias_version(client, name, CHAMPION)
    if champion == version:
        raise RegistryError(f"version {version} of {name} is the {CHAMPION}; a "
                            f"{CHALLENGER} must be another version")
    before = _alias_version(client, name, CHALLENGER)
    client.set_registered_model_alias(name, CHALLENGER, version)
    record_alias_move(name, version, before, action,
                      why or f"shadow-scored against {CHAMPION} version {champion}",
                      alias=CHALLENGER, client=client)
    log.info("%s version %s is %s (was %s; %s is %s)", name, version, CHALLENGER, before,
             CHAMPION, champion)
    return {"model": name, "challenger": version, "previous_challenger": before,
            "champion": champion}


def clear_challenger(name: str, s: Settings | None = None, why: str = "",
                     action: str = "clear_challenger", client: Any = None) -> str | None:
    """Remove the ``challenger`` alias (recorded as a move to ``-``); returns the old one."""
    from mlflow.exceptions import MlflowException

    client = client or configure(s)
    _model(client, name)
    before = _alias_version(client, name, CHALLENGER)
    if before is None:
        return None
    with contextlib.suppress(MlflowException):
        client.delete_registered_model_alias(name, CHALLENGER)
    record_alias_move(name, "-", before, action, why or "challenger removed",
                      alias=CHALLENGER, client=client)
    return before


def shadow_figures(name: str, s: Settings | None = None, client: Any = None
                   ) -> dict[str, Any] | None:
    """The challenger and the last shadow figures servers logged on its MLflow run.

    Returns:
        None without a challenger; else ``{"model", "challenger", "champion", "run_id",
        "measure", "value", "instances", "dropped", "scored_against", "updated"}`` (the
        figures are None when no server has scored it yet).

    """
    client = client or configure(s)
    version = _alias_version(client, name, CHALLENGER)
    if version is None:
        return None
    mv = client.get_model_version(name, version)
    out: dict[str, Any] = {"model": name, "challenger": version,
                           "champion": _alias_version(client, name, CHAMPION),
                           "run_id": mv.run_id, "measure": None, "value": None,
                           "instances": None, "dropped": None, "scored_against": None,
                           "updated": None}
    if not mv.run_id:
        return out
    run = client.get_run(mv.run_id)
    tags, metrics = run.data.tags, run.data.metrics
    measure = tags.get(SHADOW_MEASURE_TAG)
    if measure is None:
        return out
    out.update(measure=measure, value=metrics.get(f"{SHADOW_PREFIX}{measure}"),
               instances=metrics.get(f"{SHADOW_PREFIX}instances"),
               dropped=metrics.get(f"{SHADOW_PREFIX}dropped"),
               scored_against=tags.get(SHADOW_CHAMPION_TAG),
               updated=tags.get(SHADOW_UPDATED_TAG))
    return out


def format_figures(fig: dict[str, Any]) -> str:
    """One paragraph an operator reads before promoting (pure)."""
    head = (f"{fig['model']}: {CHALLENGER} version {fig['challenger']}, {CHAMPION} version "
            f"{fig['champion']}")
    if fig["measure"] is None:
        return head + "\n  no shadow figures yet: no server has scored this challenger"
    count = int(fig["instances"] or 0)
    value = fig["value"]
    shown = "-" if value is None else (f"{value:.4f}" if fig["measure"] == "mean_abs_diff"
                                       else f"{value:.2%}")
    lines = [head, f"  shadow {fig['measure']}: {shown} over {count} instances "
             f"(scored against {CHAMPION} version {fig['scored_against']}; "
             f"{int(fig['dropped'] or 0)} samples dropped; updated {fig['updated']})"]
    if fig["scored_against"] != fig["champion"]:
        lines.append(f"  note: the figures were measured against version "
                     f"{fig['scored_against']}, not the current {CHAMPION}")
    return "\n".join(lines)


def promote(name: str, s: Settings | None = None, why: str = "",
            require_figures: bool = True) -> dict[str, Any]:
    """Move ``champion`` to the ``challenger`` (old champion -> ``previous``), with history.

    Args:
        name: Registered model name.
        s: Settings.
        why: Kept in the alias history.
        require_figures: Refuse when no server has logged shadow figures for the
            challenger against the current champion (an operator may override).

    Returns:
        ``{"model", "champion", "previous", "figures"}``.

    Raises:
        RegistryError: No challenger, or (with ``require_figures``) no shadow figures
            against the current champion.

    """
    client = configure(s)
    fig = shadow_figures(name, client=client)
    if fig is None:
        _model(client, name)
        raise RegistryError(f"{name} has no {CHALLENGER}: set one with `mlp models "
                            f"--set-challenger {name}/VERSION` or deploy with "
                            "--param rollout=shadow")
    old, new = fig["champion"], fig["challenger"]
    if require_figures and (fig["measure"] is None or fig["scored_against"] != old):
        raise RegistryError(
            f"{name} version {new} has no shadow figures against {CHAMPION} version {old} "
            "yet (serve it with `mlp serve` while requests arrive, or pass --force to "
            "promote without them)")
    # Champion first: the aliases always name real versions.
    client.set_registered_model_alias(name, CHAMPION, new)
    figures = (f"{fig['measure']}={fig['value']:.4f} over {int(fig['instances'] or 0)} "
               "instances" if fig["measure"] is not None and fig["value"] is not None
               else "no shadow figures")
    record_alias_move(name, new, old, "promote",
                      why or f"promoted from {CHALLENGER} ({figures})", client=client)
    if old is not None:
        client.set_registered_model_alias(name, PREVIOUS, old)
    with contextlib.suppress(Exception):
        client.delete_registered_model_alias(name, CHALLENGER)
    record_alias_move(name, "-", new, "promote", f"promoted to {CHAMPION}",
                      alias=CHALLENGER, client=client)
    log.info("%s version %s promoted to %s (was %s)", name, new, CHAMPION, old)
    return {"model": name, "champion": new, "previous": old, "figures": fig}
