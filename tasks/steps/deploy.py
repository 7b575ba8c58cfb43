"""Deploy step: register the model version once per run and move the aliases."""

from __future__ import annotations

import logging

from tasks import tracking
from tasks.core.config import Settings
from tasks.core.run import Deployment, RunLayout, Snapshot, TrainedModel, Verdict
from tasks.tracking.registry import CHAMPION, PREVIOUS, record_deploy, version_tags

log = logging.getLogger(__name__)


def deploy(model_name: str, trained: TrainedModel, verdict: Verdict, snapshot: Snapshot,
           layout: RunLayout, s: Settings | None = None) -> Deployment:
    """Register the trained model as a version of ``model_name`` and make it champion.

    Idempotent: the version is found by the training run id, so re-running the same DAG
    run (which reuses its training run) never creates a second version.

    Args:
        model_name: Registered model name (the use case name).
        trained: Output of the training step (MLflow run, logged model).
        verdict: The gate's verdict (recorded as version tags; a forced verdict adds
            ``forced_by_operator=true`` and ``force_reason``).
        snapshot: The run's raw snapshot (run key and checksum become lineage tags).
        layout: The run's paths (the statistics URI becomes a lineage tag).
        s: Settings.

    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = tracking.configure(s)
    try:
        client.create_registered_model(model_name, description=f"{model_name} use case")
    except MlflowException:
        pass  # already registered
    found = client.search_model_versions(f"name='{model_name}' and run_id='{trained.run_id}'")
    if found:
        mv = max(found, key=lambda v: int(v.version))
        log.info("version %s of %s already registered for run %s; reusing it",
                 mv.version, model_name, snapshot.run_key)
    else:
        mv = mlflow.register_model(trained.model_uri, model_name, await_registration_for=300)
    version = str(mv.version)
    tags = version_tags(verdict, snapshot.run_key, snapshot.checksum,
                        layout.stats_file.as_uri(), trained.run_id, tracking.git_commit())
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    try:
        old = str(client.get_model_version_by_alias(model_name, CHAMPION).version)
    except MlflowException:
        old = None
    if old is not None and old != version:
        client.set_registered_model_alias(model_name, PREVIOUS, old)
    client.set_registered_model_alias(model_name, CHAMPION, version)
    record_deploy(model_name, version, old, verdict, s)
    log.info("%s version %s is now %s (previous: %s)", model_name, version, CHAMPION, old)
    return Deployment(model=model_name, version=version, alias=CHAMPION,
                      previous=old if old != version else None, created=not found,
                      forced=verdict.forced)
