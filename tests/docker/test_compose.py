"""docker/compose.yaml parses with docker-compose and configures what the scaled profile does.

No Docker engine runs here: ``docker-compose config`` (Debian's v1.29, installed by
``make install``) validates and resolves the file; the resolved services are then checked
against infra/profiles/scaled.env. Skips where docker-compose is missing, except under CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker" / "compose.yaml"
PROFILE = REPO / "infra" / "profiles" / "scaled.env"
PLATFORM = ["airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
            "airflow-triggerer", "airflow-worker", "mlflow", "serve", "dask-scheduler",
            "dask-worker"]


def _profile() -> dict[str, str]:
    out = {}
    for line in PROFILE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


def _portless(value: str) -> str:
    return re.sub(r"(?<=HOST):\d+", ":PORT", value)


def _hostless(value: str) -> str:
    """A setting with credentials and host names taken out: the same store, port and path."""
    value = re.sub(r"//[^/@]*@", "//", value)
    return re.sub(r"(?<=[/=])[A-Za-z0-9.-]+(?=:\d)", "HOST", value)


def _resolve(*files: str) -> dict:
    exe = shutil.which("docker-compose")
    if exe is None:
        msg = "docker-compose missing (Debian package docker-compose; make test adds it)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    # Defaults only: no secrets or overrides from this environment leak into the check.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POSTGRES_", "MINIO_", "MLP_", "COMPOSE_"))}
    args = [a for f in files for a in ("-f", str(COMPOSE.parent / f))]
    out = subprocess.run([exe, *args, "config"], capture_output=True, text=True,
                         env=env, cwd=COMPOSE.parent, timeout=120)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


@pytest.fixture(scope="module")
def resolved():
    """The team stack as documented: compose.yaml with its ports published on loopback."""
    return _resolve("compose.yaml", "compose.ports.yaml")


@pytest.fixture(scope="module")
def host():
    """The one-host stack of the tests: compose.yaml with compose.host.yaml."""
    return _resolve("compose.yaml", "compose.host.yaml")


def test_the_team_stack_has_every_component(resolved):
    services = resolved["services"]
    assert set(services) == {"postgres", "redis", "minio", "minio-init", "airflow-init",
                             *PLATFORM}
    commands = {name: services[name]["entrypoint"][:1] + services[name]["command"][:2]
                for name in PLATFORM if name.startswith("airflow-")}
    assert commands == {
        "airflow-api-server": ["airflow", "api-server", "--host"],
        "airflow-scheduler": ["airflow", "scheduler"],
        "airflow-dag-processor": ["airflow", "dag-processor"],
        "airflow-triggerer": ["airflow", "triggerer"],
        "airflow-worker": ["airflow", "celery", "worker"],
    }
    for name in PLATFORM:  # one image, the platform's
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile", name
        assert services[name]["build"]["context"] == str(REPO), name
    published = {}
    for name, svc in services.items():  # published ports stay on the host's loopback
        for port in svc.get("ports", []):
            host = port.get("host_ip") if isinstance(port, dict) else port.split(":")[0]
            assert host == "127.0.0.1", (name, port)
            published[name] = int(port["published"] if isinstance(port, dict)
                                  else port.split(":")[1])
    assert published == {"airflow-api-server": 8080, "mlflow": 5000, "serve": 8501,
                         "minio": 9001}
    assert not _resolve("compose.yaml")["services"]["mlflow"].get("ports")  # ports file's job


def test_platform_services_use_the_scaled_profile_variables(resolved):
    profile = _profile()
    assert profile["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    for name in PLATFORM:
        env = resolved["services"][name]["environment"]
        missing = sorted(set(profile) - set(env))
        assert not missing, f"{name} lacks {missing}"
        for key, value in profile.items():
            assert _hostless(env[key]) == _hostless(value), (name, key)
        api = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
        assert (api.hostname, api.port, api.path) == ("airflow-api-server", 8080, "/execution/")
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"]  # shared by every component


def test_mlflow_server_keeps_artifacts_in_minio(resolved):
    mlflow = resolved["services"]["mlflow"]
    env = mlflow["environment"]
    assert env["MLP_MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert urlsplit(env["MLFLOW_S3_ENDPOINT_URL"]).hostname == "minio"
    assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]
    script = " ".join(mlflow["command"])
    assert "--serve-artifacts" in script and "$MLP_MLFLOW_BACKEND_STORE_URI" in script
    assert env["MLP_MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert "mlflow" in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")


def test_the_host_override_runs_every_service_on_loopback_with_no_bridge(host, resolved):
    services = host["services"]
    assert set(services) == set(resolved["services"])  # every service, none dropped
    for name, svc in services.items():
        assert svc.get("network_mode") == "host", name
        assert not svc.get("ports"), name  # the engine refuses published ports in host mode
        assert not svc.get("networks"), name
    # Every address a service is given is loopback: no service name, no bridge address.
    for name in PLATFORM:
        env = services[name]["environment"]
        for key, value in env.items():
            for url in re.findall(r"[a-z0-9+]+://[^\s,]+", str(value)):
                if url.startswith("s3://"):  # a bucket, not a host
                    continue
                assert urlsplit(url).hostname == "127.0.0.1", (name, key, url)
        for key, value in _profile().items():  # the profile's stores, on other ports
            if not key.endswith("_PORT"):
                assert _portless(_hostless(env[key])) == _portless(_hostless(value)), (name,
                                                                                     key)
    # The host's own PostgreSQL and Redis keep 5432 and 6379; each service its own port.
    env = services["airflow-worker"]["environment"]
    assert ":25432/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://127.0.0.1:26379/")
    assert services["postgres"]["environment"]["PGPORT"] == "25432"
    assert "listen_addresses=127.0.0.1" in services["postgres"]["command"]
    assert services["redis"]["command"][-3:] == ["127.0.0.1", "--port", "26379"]
    assert services["airflow-api-server"]["command"][1:5] == [
        "--host", "127.0.0.1", "--port", "28080"]
    assert services["serve"]["command"][1:] == ["--host", "127.0.0.1", "--port", "28501"]
    # Registry-free images: Debian's PostgreSQL and Redis, moto's S3 server for MinIO.
    assert services["postgres"]["image"] == "mlp/postgres:15-debian"
    assert services["redis"]["image"] == "mlp/redis:7-debian"
    assert services["minio"]["image"] == "mlp/s3:moto"
    mlflow = services["mlflow"]["environment"]
    assert mlflow["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:29000"
    assert mlflow["MLP_MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert "--host 127.0.0.1" in " ".join(services["mlflow"]["command"])


def test_long_running_http_services_have_health_checks_on_their_own_port(resolved, host):
    for stack in (resolved, host):
        for name, var in (("mlflow", "MLP_MLFLOW_PORT"), ("airflow-api-server",
                                                          "MLP_AIRFLOW_PORT"),
                          ("serve", "MLP_SERVE_PORT")):
            test = " ".join(stack["services"][name]["healthcheck"]["test"])
            assert var in test and "127.0.0.1" in test, (name, test)
