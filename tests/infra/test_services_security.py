"""``make up`` beyond loopback: refuses SimpleAuthManager, an MLflow server without its
basic-auth app and a model server without a token, before starting anything.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = REPO / "infra" / "services.sh"
FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
DOC = 'see infra/README.md, section "Binding beyond loopback"'


def run(tmp_path, *args, **env):
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("MLP_", "MLFLOW_", "AIRFLOW"))}
    base.update(MLP_HOME=str(tmp_path / "home"), PATH=os.environ["PATH"], **env)
    return subprocess.run([str(SERVICES), *args], env=base, capture_output=True, text=True,
                          timeout=120, cwd=REPO)


@pytest.mark.parametrize(("env", "message"), [
    ({}, "refusing to bind Airflow to 0.0.0.0 with SimpleAuthManager (development only)"),
    ({"AIRFLOW__CORE__AUTH_MANAGER": FAB},
     "refusing to bind MLflow to 0.0.0.0 without its basic-auth app: set "
     "MLFLOW_FLASK_SERVER_SECRET_KEY MLFLOW_AUTH_ADMIN_PASSWORD"),
    ({"AIRFLOW__CORE__AUTH_MANAGER": FAB, "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 32,
      "MLFLOW_AUTH_ADMIN_PASSWORD": "p" * 16},
     "refusing to serve models on 0.0.0.0 without a token"),
])
def test_up_beyond_loopback_refuses_unauthenticated_services(tmp_path, env, message):
    out = run(tmp_path, "up", MLP_BIND_HOST="0.0.0.0", **env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.strip().startswith(message), out.stderr
    assert DOC in out.stderr or "infra/README.md" in out.stderr
    assert not (tmp_path / "home" / "logs").exists()  # nothing was started


def test_mlflow_runs_its_basic_auth_app_beyond_loopback_only(tmp_path):
    local = run(tmp_path, "command", "mlflow")
    assert local.returncode == 0 and "--app-name" not in local.stdout
    public = run(tmp_path, "command", "mlflow", MLP_BIND_HOST="0.0.0.0",
                 MLFLOW_FLASK_SERVER_SECRET_KEY="k" * 32, MLFLOW_AUTH_ADMIN_PASSWORD="p" * 16)
    assert public.returncode == 0, public.stderr
    assert public.stdout.split()[-2:] == ["--app-name", "basic-auth"]
    ini = (tmp_path / "home" / "mlflow-basic-auth.ini").read_text()
    assert f"database_uri = sqlite:///{tmp_path / 'home'}/mlflow-basic-auth.db" in ini
    assert "admin_password" not in ini  # the password stays in the environment
