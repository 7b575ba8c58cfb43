"""Deploy step: register the model version once per run and move the aliases forward only.

A run's version is created with its lineage tags in one registry call, so no reader ever
sees a version without them (a version left half-tagged by an older platform is repaired
on the next run). ``champion`` moves only forward: a version older than the champion (a
rerun of an earlier run, a backfill of an earlier date) is registered or reused but does
not take over production, and neither does a rerun of a version that was champion once
and was moved away from (by a rollback, a forced deploy or a newer deploy), unless the
operator forces it (``force_deploy`` with a reason) or rolls back explicitly (``mlp
rollback``).

With ``rollout="shadow"`` a passing candidate becomes the ``challenger`` instead: it is
registered and infra-validated the same way, servers score it in the champion's shadow
(:mod:`tasks.serving.shadow`), and ``mlp promote`` makes it the champion later.
"""

from __future__ import annotations

import logging
from typing import Any

from tasks import tracking
from tasks.core.config import Settings
from tasks.core.run import Deployment, RunLayout, Snapshot, TrainedModel, Verdict
from tasks.steps.infra_validation import validate
from tasks.tracking.challenger import CHALLENGER, set_challenger
from tasks.tracking.parents import parent_tags
from tasks.tracking.registry import (
    CHAMPION,
    PREVIOUS,
    alias_history,
    champion_stack,
    left_champion,
    older_than_champion,
    record_alias_move,
    record_deploy,
    replayed_force,
    version_tags,
)

log = logging.getLogger(__name__)


def _version_of_run(client: Any, model_name: str, run_id: str) -> Any | None:
    found = client.search_model_versions(f"name='{model_name}' and run_id='{run_id}'")
    return max(found, key=lambda v: int(v.version)) if found else None


def register_version(client: Any, model_name: str, trained: TrainedModel,
                     tags: dict[str, str]) -> tuple[Any, bool]:
    """The run's registry version: found by its training run, else created with ``tags``.

    Returns:
        The version and whether it was created now.

    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(model_name, description=f"{model_name} use case")
    except MlflowException:
        pass  # already registered
    mv = _version_of_run(client, model_name, trained.run_id)
    if mv is None:
        return mlflow.register_model(trained.model_uri, model_name, await_registration_for=300,
                                     tags=tags), True
    missing = {k: v for k, v in tags.items() if (mv.tags or {}).get(k) != v}
    for key, value in missing.items():  # repair a version an interrupted deploy left
        client.set_model_version_tag(model_name, mv.version, key, value)
    return mv, False


ROLLOUTS = ("champion", "shadow")


def deploy(model_name: str, trained: TrainedModel, verdict: Verdict, snapshot: Snapshot,
           layout: RunLayout, s: Settings | None = None,
           rollout: str = "champion") -> Deployment:
    """Register the trained model as a version of ``model_name``; make it champion if newer.

    Idempotent: the version is found by the training run id, so re-running the same DAG
    run (which reuses its training run) never creates a second version. Before the
    aliases move, the version is infra-validated (:mod:`tasks.steps.infra_validation`);
    a failure raises and the old champion keeps serving.

    Args:
        model_name: Registered model name (the use case name).
        trained: Output of the training step (MLflow run, logged model).
        verdict: The gate's verdict (recorded as version tags; a forced verdict adds
            ``forced_by_operator=true`` and ``force_reason``, and may move ``champion``
            backwards).
        snapshot: The run's raw snapshot (run key and checksum become lineage tags).
        layout: The run's paths (the statistics URI becomes a lineage tag).
        s: Settings.
        rollout: ``champion`` (move ``champion``) or ``shadow`` (move ``challenger``; the
            champion keeps serving; without a champion the version becomes champion).

    Raises:
        ValueError: Unknown ``rollout``.

    """
    from mlflow.exceptions import MlflowException

    if rollout not in ROLLOUTS:
        raise ValueError(f"rollout={rollout!r}: choose one of {', '.join(ROLLOUTS)}")

    client = tracking.configure(s)
    tags = version_tags(verdict, snapshot.run_key, snapshot.checksum,
                        layout.stats_file.as_uri(), trained.run_id, tracking.git_commit())
    run_tags = client.get_run(trained.run_id).data.tags
    tags.update(parent_tags(run_tags))  # built on a parent
    tags.update({k: v for k, v in run_tags.items() if k.startswith("tune_")})  # from a study
    mv, created = register_version(client, model_name, trained, tags)
    version = str(mv.version)
    try:
        champion = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        champion = None
    old = str(champion.version) if champion is not None else None
    moves = alias_history(model_name, client=client)
    if old == version:
        stack = champion_stack(moves)
        if stack and stack[-1] != version:  # killed between the alias move and its record
            record_alias_move(model_name, version, stack[-1], "deploy_recorded_late",
                              "the alias had moved without a recorded move (an interrupted "
                              "deploy, or a move outside the platform)", client=client)
        return Deployment(model_name, version, CHAMPION, None, created, verdict.forced,
                          note=f"version {version} already is {CHAMPION}")
    # A version that was champion once and was moved away from (rollback, a newer
    # deploy, a forced one) is this run's decision already taken: a rerun must not undo
    # the operator's word. Only a forced deploy or an explicit promote/rollback moves it.
    why_older = None if champion is None else (
        older_than_champion(version, snapshot.run_key, old,
                            (champion.tags or {}).get("run_key"))
        or left_champion(version, moves))
    replayed = verdict.forced and replayed_force(version, verdict.force_reason, moves)
    if replayed:  # a cleared or rerun forced run: its conf is not a new operator's word
        why_older = replayed
    if why_older and (replayed or not verdict.forced):
        note = (f"{CHAMPION} stays version {old}: {why_older}; deploying it would move "
                f"production backwards (use `mlp rollback --to {version}` or force_deploy "
                f"with a new reason)")
        log.warning("%s version %s registered, not promoted: %s", model_name, version, note)
        return Deployment(model_name, version, CHAMPION, None, created, verdict.forced,
                          moved=False, note=note)
    if rollout == "shadow" and old is not None:
        return _deploy_shadow(client, model_name, version, old, created, verdict, trained, s)
    # Loaded as the server loads it, it must answer its own example before any alias moves.
    validate(model_name, version, trained.run_id, s)
    if old is not None:
        client.set_registered_model_alias(model_name, PREVIOUS, old)
    client.set_registered_model_alias(model_name, CHAMPION, version)
    record_deploy(model_name, version, old, verdict, s)
    log.info("%s version %s is now %s (previous: %s)", model_name, version, CHAMPION, old)
    return Deployment(model_name, version, CHAMPION, old, created, verdict.forced,
                      note=f"forced over the newer version {old}: {why_older}"
                      if why_older else "")


def _deploy_shadow(client: Any, model_name: str, version: str, champion: str, created: bool,
                   verdict: Verdict, trained: TrainedModel, s: Settings | None) -> Deployment:
    """``rollout=shadow``: infra-validate, then move ``challenger`` (the champion stays)."""
    validate(model_name, version, trained.run_id, s, alias=CHALLENGER)
    moved = set_challenger(model_name, version, s, action="deploy_shadow",
                           why=verdict.force_reason if verdict.forced else verdict.reason,
                           client=client)
    note = (f"shadow-scored against {CHAMPION} version {champion}; `mlp promote "
            f"{model_name}` makes it {CHAMPION}")
    log.info("%s version %s is now %s (%s)", model_name, version, CHALLENGER, note)
    return Deployment(model_name, version, CHALLENGER, moved["previous_challenger"], created,
                      verdict.forced, note=note)
