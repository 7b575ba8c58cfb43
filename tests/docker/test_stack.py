"""The container stack for real: built with no registry, run with host networking only.

``docker/build-offline.sh`` builds the images (a Debian base by mmdebstrap + ``docker
import``, the platform image from docker/Dockerfile with wheels fetched on the host,
PostgreSQL, Redis and an S3 server from Debian/PyPI packages). Then every service of
``docker/compose.yaml`` is started with ``docker/compose.host.yaml`` (each service in the
host's network namespace on 127.0.0.1; no bridge network, no published port), the test
waits for their health checks, triggers the mnist DAG through Airflow's REST API on tiny
data (``mlp retrain --wait`` inside the worker container), and checks the version in the
MLflow server, its artifacts in the S3 bucket, and the serving container's answer with its
token. Everything it created goes: containers, volumes, and the Docker engine when the
test started it. Skips where Docker or mmdebstrap is missing, except under CI.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
FILES = ["-f", str(DOCKER / "compose.yaml"), "-f", str(DOCKER / "compose.host.yaml")]
# compose.host.yaml's loopback ports (and the wheel server of build-offline.sh).
PORTS = {"postgres": 25432, "redis": 26379, "s3": 29000, "mlflow": 25000, "airflow": 28080,
         "serve": 28501, "dask": 28786, "task logs": 28793, "trigger logs": 28794,
         "wheels": 28765}
ONE_SHOT = {"airflow-init", "minio-init"}  # run to completion before the others start
CONF = {"variant": "softmax", "batch_size": 16, "learning_rate": 0.003, "validation_size": 50}


def _skip_or_fail(msg: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def _engine_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


@pytest.fixture(scope="module")
def engine():
    """A Docker engine: the running one, else ``dockerd`` started here and stopped after."""
    for tool in ("docker", "docker-compose", "mmdebstrap"):
        if shutil.which(tool) is None:
            _skip_or_fail(f"{tool} missing (make test installs Debian's docker.io, "
                          "docker-compose and mmdebstrap)")
    if _engine_answers():
        yield None
        return
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        _skip_or_fail("no Docker engine runs, and dockerd cannot be started here (root only)")
    log = open("/tmp/mlp-test-dockerd.log", "ab")  # noqa: SIM115 (lives as long as dockerd)
    # No bridge and no iptables rules: every container of the test uses the host's network.
    proc = subprocess.Popen(
        ["dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false",
         "--storage-driver=overlay2", "--exec-opt", "native.cgroupdriver=cgroupfs"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _engine_answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("dockerd did not start: see /tmp/mlp-test-dockerd.log")
            time.sleep(1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _clean_env(**extra: str) -> dict[str, str]:
    """The test session's environment without platform or compose settings, plus ``extra``."""
    drop = ("AIRFLOW__", "MLP_", "MLFLOW_", "POSTGRES_", "MINIO_", "COMPOSE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def _logs(cid: str, tail: int | None = None) -> str:
    cmd = ["docker", "logs", *(["--tail", str(tail)] if tail else []), cid]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def stack(engine, tmp_path_factory):
    """Images built, every service up and healthy; torn down with its volumes after."""
    taken = [f"{name} {port}" for name, port in PORTS.items() if _port_taken(port)]
    if taken:
        pytest.fail(f"compose.host.yaml's loopback ports are taken: {', '.join(taken)}")
    project = f"mlpstack{secrets.token_hex(3)}"
    secret = {"POSTGRES_PASSWORD": secrets.token_hex(12),
              "MLP_AIRFLOW_PASSWORD": secrets.token_hex(12),
              "MLP_SERVE_TOKEN": secrets.token_hex(16),
              "MLP_JWT_SECRET": secrets.token_hex(16),
              "MLP_API_SECRET_KEY": secrets.token_hex(16)}
    # build-offline.sh resolves the wheels with the venv's uv.
    env = _clean_env(**secret, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    compose = ["docker-compose", "-p", project, *FILES]
    timings = {}

    def run(cmd, timeout, **kw):
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                             cwd=DOCKER, **kw)
        assert out.returncode == 0, f"{' '.join(cmd)}:\n{out.stdout[-4000:]}{out.stderr[-4000:]}"
        return out.stdout

    t0 = time.monotonic()
    print(run([str(DOCKER / "build-offline.sh")], timeout=1800))
    timings["build"] = time.monotonic() - t0
    try:
        t0 = time.monotonic()
        run([*compose, "up", "-d"], timeout=600)
        ids = {name: run([*compose, "ps", "-q", name], 60).strip()
               for name in run([*compose, "config", "--services"], 60).split()}

        def healthy():
            states = {}
            for name, cid in ids.items():
                state = json.loads(run(["docker", "inspect", "--format",
                                        "{{json .State}}", cid], 60))
                if name in ONE_SHOT:
                    assert state["Status"] == "exited" and state["ExitCode"] == 0, (name, state)
                    continue
                assert state["Status"] == "running", (name, state, _logs(cid, 40))
                states[name] = state.get("Health", {}).get("Status", "running")
            return all(s in ("healthy", "running") for s in states.values()) and states

        states = wait_for("every service healthy", healthy, 300, every=2.0)
        timings["up"] = time.monotonic() - t0
        yield {"env": env, "compose": compose, "ids": ids, "run": run, "states": states,
               "secret": secret, "timings": timings, "tmp": tmp_path_factory.mktemp("stack")}
    finally:
        t0 = time.monotonic()
        down = subprocess.run([*compose, "down", "-v", "--remove-orphans"], env=env,
                              capture_output=True, text=True, timeout=300, cwd=DOCKER)
        timings["down"] = time.monotonic() - t0
        print("stack timings (s):", {k: round(v, 1) for k, v in timings.items()})
        left = subprocess.run(["docker", "ps", "-aq", "--filter", f"name={project}_"],
                              capture_output=True, text=True).stdout.split()
        volumes = subprocess.run(["docker", "volume", "ls", "-q", "--filter",
                                  f"name={project}_"], capture_output=True, text=True)
        assert down.returncode == 0, down.stderr[-3000:]
        assert not left and not volumes.stdout.split(), (left, volumes.stdout)


def test_the_stack_trains_registers_and_serves_mnist(stack):
    from mlflow import MlflowClient

    from tests.conftest import digits_as_mnist, write_mnist_dir

    run, compose, ids = stack["run"], stack["compose"], stack["ids"]
    # Every service of compose.yaml runs: the one-shot ones finished with 0 (checked when
    # waiting), the others are up, with health checks where the file defines them.
    assert set(ids) == {"postgres", "redis", "minio", "minio-init", "mlflow", "airflow-init",
                        "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                        "airflow-triggerer", "airflow-worker", "dask-scheduler",
                        "dask-worker", "serve"}
    for name in ("postgres", "redis", "mlflow", "airflow-api-server", "serve"):
        assert stack["states"][name] == "healthy", stack["states"]
    # Host networking only: no container joined a network of the engine's other than host.
    for name, cid in ids.items():
        nets = json.loads(run(["docker", "inspect", "--format",
                               "{{json .NetworkSettings.Networks}}", cid], 60))
        assert set(nets) == {"host"}, (name, nets)

    # Tiny real data (scikit-learn's digits in MNIST's IDX files) into the shared volume.
    data = write_mnist_dir(stack["tmp"] / "digits", digits_as_mnist(400, 150))
    worker = ids["airflow-worker"]
    run(["docker", "exec", "-u", "0", worker, "mkdir", "-p", "/var/lib/mlp/incoming"], 60)
    run(["docker", "cp", str(data), f"{worker}:/var/lib/mlp/incoming/digits"], 60)

    # Operator-triggered retraining through Airflow's REST API, from inside the stack.
    t0 = time.monotonic()
    out = run([*compose, "exec", "-T", "airflow-worker", "mlp", "retrain", "mnist",
               "--epochs", "8", "--wait", "--timeout", "600", "--json",
               "--param", "source_dir=/var/lib/mlp/incoming/digits",
               *(a for k, v in CONF.items() for a in ("--param", f"{k}={v}"))], 700)
    stack["timings"]["mnist run"] = time.monotonic() - t0
    result = json.loads(out)
    assert result["via"] == "rest" and result["state"] == "success", result
    assert result["url"].startswith("http://127.0.0.1:28080/")
    assert result["gate"]["passed"] is True and result["gate"]["data"]["rows"] == 150
    assert result["deploy"] == {**result["deploy"], "version": "1", "alias": "champion"}

    # The version is in the MLflow server (PostgreSQL store), its artifacts in the bucket.
    client = MlflowClient("http://127.0.0.1:25000", registry_uri="http://127.0.0.1:25000")
    champion = client.get_model_version_by_alias("mnist", "champion")
    assert champion.version == "1" and champion.tags["run_key"] == result["run_key"]
    mlrun = client.get_run(champion.run_id)
    assert mlrun.info.status == "FINISHED" and mlrun.data.params["epochs"] == "8"
    assert mlrun.data.metrics["test_accuracy"] >= 0.84
    assert mlrun.info.artifact_uri.startswith("mlflow-artifacts:")
    import boto3

    s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:29000", region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    keys = [o["Key"] for o in s3.list_objects_v2(
        Bucket="mlflow", Prefix="artifacts/")["Contents"]]
    assert any(champion.run_id in k and k.endswith("confusion_matrix.png") for k in keys)
    # Beam ran on the Dask cluster's workers.
    assert "Receive client connection" in _logs(ids["dask-scheduler"])

    # The serving container picks the champion up and answers only with its token.
    base = "http://127.0.0.1:28501"
    auth = {"Authorization": f"Bearer {stack['secret']['MLP_SERVE_TOKEN']}"}
    assert httpx.get(f"{base}/v1/models/mnist").status_code == 401
    wait_for("the served champion", lambda: httpx.get(
        f"{base}/v1/models/mnist", headers=auth).json().get(
        "model_version_status", [{}])[0].get("version") == "1", 120, every=2.0)
    from tasks.data.idx import read_idx

    images = read_idx(data / "t10k-images-idx3-ubyte.gz")[:3].astype(float)
    r = httpx.post(f"{base}/v1/models/mnist:predict", headers=auth,
                   json={"instances": images.tolist()})
    assert r.status_code == 200 and r.headers["x-model-version"] == "1", r.text
    assert np.array(r.json()["predictions"]).shape == (3, 10)
