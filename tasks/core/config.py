"""Platform settings: one data root, embedded defaults, scale-out by environment only.

Nothing here touches the file system or a service at import time; callers ask for
``settings()`` when they need it, so DAG parsing stays cheap and tests can point the
platform at a temporary root through ``MLP_HOME``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    """Resolved locations and service addresses of one platform installation.

    Attributes:
        root: Data root holding raw snapshots, run outputs, Airflow home and MLflow store.
        tracking_uri: MLflow tracking (and registry) URI.
        beam_runner: Beam runner name: ``direct`` (in-process), ``direct-multiprocess``
            or any runner Beam knows (``DaskRunner``, ``DataflowRunner`` ...).
        beam_options: Extra Beam pipeline options passed through verbatim.
        serve_host: Address the REST server binds to.
        serve_port: Port the REST server binds to.
        serve_poll_seconds: How often the REST server polls the registry for a moved
            ``champion`` alias (deploy or rollback) to hot-reload.

    """

    root: Path
    tracking_uri: str
    beam_runner: str
    beam_options: tuple[str, ...]
    serve_host: str
    serve_port: int
    serve_poll_seconds: float = 5.0

    @property
    def airflow_home(self) -> Path:
        """Airflow home inside the data root (never ``~/airflow``)."""
        return self.root / "airflow"

    @property
    def artifact_root(self) -> Path:
        """Local MLflow artifact root used when tracking is on the embedded SQLite store."""
        return self.root / "mlartifacts"



def settings() -> Settings:
    """Read the settings from the environment, falling back to embedded defaults."""
    root = Path(os.environ.get("MLP_HOME", REPO_ROOT / "var")).resolve()
    return Settings(
        root=root,
        tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}"),
        beam_runner=os.environ.get("MLP_BEAM_RUNNER", "direct"),
        beam_options=tuple(os.environ.get("MLP_BEAM_OPTIONS", "").split()),
        serve_host=os.environ.get("MLP_SERVE_HOST", "127.0.0.1"),
        serve_port=int(os.environ.get("MLP_SERVE_PORT", "8501")),
        serve_poll_seconds=float(os.environ.get("MLP_SERVE_POLL_SECONDS", "5")),
    )


def service_env(s: Settings | None = None) -> dict[str, str]:
    """Environment for Airflow/MLflow processes of this installation.

    Values already present in the environment win, so a scaled-out profile (PostgreSQL,
    Celery, an MLflow server) is selected by exporting variables, never by code changes.
    """
    s = s or settings()
    api_port = os.environ.get("MLP_AIRFLOW_PORT", "8080")
    defaults = {
        "MLP_HOME": str(s.root),
        "MLFLOW_TRACKING_URI": s.tracking_uri,
        "AIRFLOW_HOME": str(s.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{s.airflow_home / 'airflow.db'}",
        # Tasks talk to the API server's execution API: keep it on the served port.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__PORT": api_port,
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(s.airflow_home / "logs"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # MLflow 3's usage telemetry: a background upload (that cannot work offline) and
        # threads joined at every process exit, about a second per command here.
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # The Airflow CLI of the venv must be found by `airflow standalone` subprocesses.
        "GIT_PYTHON_REFRESH": "quiet",
    }
    return {k: os.environ.get(k, v) for k, v in defaults.items()}


def apply_env(s: Settings | None = None) -> Settings:
    """Export :func:`service_env` into this process (before Airflow is imported)."""
    s = s or settings()
    for key, value in service_env(s).items():
        os.environ.setdefault(key, value)
    s.airflow_home.mkdir(parents=True, exist_ok=True)
    return s
