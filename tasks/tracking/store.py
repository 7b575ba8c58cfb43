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
