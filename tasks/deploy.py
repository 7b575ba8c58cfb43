"""Deploy step: register the model version once per run and move the aliases."""

from __future__ import annotations

import logging
from typing import Any

from tasks import tracking
from tasks.config import Settings
from tasks.gate import CHAMPION
from tasks.registry import PREVIOUS, version_tags

log = logging.getLogger(__name__)

__all__ = ["PREVIOUS", "deploy"]


def deploy(
    model_name: str,
    train_result: dict[str, Any],
    verdict: dict[str, Any],
    run_key: str,
    data_checksum: str,
    stats_uri: str,
    s: Settings | None = None,
) -> dict[str, Any]:
    """Register the trained model as a version of ``model_name`` and make it champion.

    Idempotent: the version is found by the training run id, so re-running the same DAG
    run (which reuses its training run) never creates a second version.

    Args:
        model_name: Registered model name (the use case name).
        train_result: Output of the training step (``run_id``, ``model_uri``).
        verdict: Gate verdict dict (recorded as version tags; a forced verdict adds
            ``forced_by_operator=true`` and ``force_reason``).
        run_key: The DAG run's partition key.
        data_checksum: Raw snapshot checksum.
        stats_uri: Where the preprocessing statistics of this run live.
        s: Settings.

    Returns:
        ``{"model": name, "version": v, "alias": "champion", "previous": old or None,
        "created": bool, "forced": bool}``.

    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = tracking.configure(s)
    try:
        client.create_registered_model(model_name, description=f"{model_name} use case")
    except MlflowException:
        pass  # already registered
    run_id = train_result["run_id"]
    found = client.search_model_versions(f"name='{model_name}' and run_id='{run_id}'")
    created = not found
    if found:
        mv = max(found, key=lambda v: int(v.version))
        log.info("version %s of %s already registered for run %s; reusing it",
                 mv.version, model_name, run_key)
    else:
        mv = mlflow.register_model(train_result["model_uri"], model_name,
                                   await_registration_for=300)
    version = str(mv.version)
    tags = version_tags(verdict, run_key, data_checksum, stats_uri, run_id,
                        tracking.git_commit())
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    try:
        old = str(client.get_model_version_by_alias(model_name, CHAMPION).version)
    except MlflowException:
        old = None
    if old is not None and old != version:
        client.set_registered_model_alias(model_name, PREVIOUS, old)
    client.set_registered_model_alias(model_name, CHAMPION, version)
    log.info("%s version %s is now %s (previous: %s)", model_name, version, CHAMPION, old)
    return {"model": model_name, "version": version, "alias": CHAMPION,
            "previous": old if old != version else None, "created": created,
            "forced": bool(verdict.get("forced", False))}
