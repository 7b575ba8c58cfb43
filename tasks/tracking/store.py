"""MLflow helpers shared by the steps: tracking URI, experiments, dataset inputs."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

from tasks.core.config import REPO_ROOT, Settings, settings


def configure(s: Settings | None = None) -> Any:
    """Point MLflow at this installation's tracking/registry store and return the client."""
    import mlflow
    from mlflow import MlflowClient

    s = s or settings()
    mlflow.set_tracking_uri(s.tracking_uri)
    mlflow.set_registry_uri(s.tracking_uri)
    return MlflowClient(tracking_uri=s.tracking_uri, registry_uri=s.tracking_uri)


def experiment_id(use_case: str, s: Settings | None = None) -> str:
    """Get or create the use case's experiment, with artifacts under the data root.

    With the embedded SQLite store MLflow would otherwise put artifacts in ``./mlruns``
    relative to whatever directory a task happens to run in. A remote tracking server
    (``http://...``) chooses its own artifact store, so we leave the location to it.
    """
    s = s or settings()
    client = configure(s)
    exp = client.get_experiment_by_name(use_case)
    if exp is not None:
        return exp.experiment_id
    location = None
    if not s.tracking_uri.startswith(("http://", "https://", "databricks")):
        location = (s.artifact_root / use_case).as_uri()
    try:
        return client.create_experiment(use_case, artifact_location=location)
    except Exception:  # created concurrently by another task
        exp = client.get_experiment_by_name(use_case)
        if exp is None:
            raise
        return exp.experiment_id


@functools.cache
def git_commit() -> str:
    """Commit of the platform code, or ``unknown`` outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def log_dataset(path: Path, name: str, digest: str, context: str) -> None:
    """Record a TFRecord split as an MLflow dataset input of the active run."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    source = resolve_dataset_source(Path(path).resolve().as_uri())
    mlflow.log_input(MetaDataset(source=source, name=name, digest=digest[:36]), context=context)


ORPHANED_TAG = "mlp.orphaned"


def fail_orphaned_runs(use_case: str, run_key: str, completed: frozenset[str] = frozenset(),
                       s: Settings | None = None) -> list[str]:
    """End the MLflow runs of a pipeline run that a killed task left RUNNING.

    Called before a step (re)starts: no other task of the same pipeline run can be running
    then (one active DAG run per use case), so a RUNNING run with this run key is an orphan.
    It is marked FAILED (its partial artifacts stay for inspection, never used as a model),
    except a run in ``completed`` (training finished and its result was published; a later
    step was killed while logging to it), which is marked FINISHED. Either way a tag says
    what happened.

    Returns:
        The ids of the runs ended.

    """
    from datetime import UTC, datetime

    client = configure(s)
    exp = client.get_experiment_by_name(use_case)
    if exp is None:
        return []
    orphans = client.search_runs(
        [exp.experiment_id],
        f"tags.run_key = '{run_key}' and attributes.status = 'RUNNING'")
    for run in orphans:
        client.set_tag(run.info.run_id, ORPHANED_TAG,
                       f"its task was killed before it finished; marked FAILED when the run "
                       f"was resumed at {datetime.now(UTC).isoformat(timespec='seconds')}")
        client.set_terminated(run.info.run_id, status="FINISHED"
                              if run.info.run_id in completed else "FAILED")
    return [run.info.run_id for run in orphans]


ERROR_TAG = "mlp.error"


def tag_failed_runs(use_case: str, run_key: str, error: str, since: float,
                    permanent: bool = True, s: Settings | None = None) -> list[str]:
    """Tag the MLflow runs of a pipeline run that failed since ``since`` with the error.

    A step that fails inside ``mlflow.start_run`` leaves its run FAILED without a word on
    why; this adds ``mlp.error`` (the step, the error's kind and message) and
    ``mlp.error_kind`` (``permanent``: a data or parameter error a retry cannot fix, or
    ``transient``). Runs already tagged keep their first error.

    Returns:
        The ids of the runs tagged.

    """
    client = configure(s)
    exp = client.get_experiment_by_name(use_case)
    if exp is None:
        return []
    failed = client.search_runs([exp.experiment_id],
                                f"tags.run_key = '{run_key}' and attributes.status = 'FAILED'")
    tagged = []
    for run in failed:
        if ERROR_TAG in run.data.tags or (run.info.end_time or 0) < since * 1000 - 1000:
            continue
        client.set_tag(run.info.run_id, ERROR_TAG, error[:5000])
        client.set_tag(run.info.run_id, "mlp.error_kind",
                       "permanent" if permanent else "transient")
        tagged.append(run.info.run_id)
    return tagged
