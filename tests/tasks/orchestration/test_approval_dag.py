"""Human approval through a real Airflow run and Airflow's real REST API server.

The API server is Airflow's own FastAPI app under uvicorn on a loopback port, in this
process, on the test session's metadata DB; ``dag.test()`` runs the DAG in the main
thread and keeps a run whose ``approve`` task waits in ``awaiting_input`` alive until a
response is recorded. ``mlp approve`` (the CLI, through the official REST client) answers
from a second thread: approve -> deploy runs; reject -> deploy is skipped, the registry is
unchanged and the decision and reason are on the MLflow run.
"""

import secrets
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from tests.tasks.conftest import free_port

pytestmark = pytest.mark.slow

CONF = {"source_dir": "synthetic:2000:1", "epochs": 20, "learning_rate": 0.1,
        "require_approval": True}


@pytest.fixture(scope="module")
def api_server(airflow_db):
    """Airflow's API server app (auth, core API, HITL endpoints) under uvicorn, in a thread."""
    import httpx
    import uvicorn
    from airflow.api_fastapi.app import create_app
    from airflow.configuration import conf

    with pytest.MonkeyPatch.context() as mp:
        if not conf.get("api_auth", "jwt_secret", fallback=""):
            # `airflow db migrate` writes a generated secret into airflow.cfg; a process that
            # read Airflow's configuration before that file existed has none, and the API
            # server's start-up fails (then nobody answers and dag.test waits for ever).
            mp.setenv("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(16))
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app("all"), host="127.0.0.1", port=port,
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline and thread.is_alive():
            try:
                if httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("Airflow's API server did not start (see the captured log)")
        yield url
        server.should_exit = True
        thread.join(timeout=30)


class Operator(threading.Thread):
    """Waits until a run asks for approval, checks nothing deployed yet, then answers."""

    def __init__(self, argv, mlflow_uri):
        super().__init__(daemon=True)
        self.argv, self.mlflow_uri = argv, mlflow_uri
        self.seen_waiting, self.registered_while_waiting, self.rc = None, None, None

    def run(self):
        from tasks.operations.airflow_api import AirflowClient
        from tasks.tracking import configure

        client = AirflowClient.from_env()
        deadline = time.time() + 1200  # training first: slow when the machine is loaded
        while time.time() < deadline:
            pending = [r for r in client.approval_requests("taxi_fare")
                       if r["task_id"] == "approve"]
            if pending:
                self.seen_waiting = pending[0]
                states = client.task_states("taxi_fare", pending[0]["dag_run_id"])
                self.deploy_state = states.get("deploy")
                self.registered_while_waiting = len(
                    configure().search_model_versions("name='taxi_fare'"))
                from tasks.cli import main

                self.rc = main(self.argv)
                return
            time.sleep(0.5)
        for run in client.dag_runs("taxi_fare"):  # never asked: end the run, fail the test
            if run["state"] == "running":
                client.set_run_state("taxi_fare", run["dag_run_id"], "failed")


def _dag(tmp_path):
    from tasks.orchestration.dag_factory import build_dag
    from tasks.spec import catalog
    from tests.tasks.orchestration.test_force_deploy_dag import _register_dag

    base = catalog.get("taxi_fare")  # the real use case, a lenient value threshold
    dag = build_dag(replace(base, gate=replace(base.gate, max_value=1e9)))
    _register_dag(dag, tmp_path / "empty")
    return dag


def test_run_waits_for_approval_then_approve_deploys_and_reject_does_not(
        airflow_db, own_mlflow, api_server, monkeypatch, tmp_path, capsys):
    from tasks.tracking import configure

    monkeypatch.setenv("MLP_AIRFLOW_URL", api_server)
    dag = _dag(tmp_path)
    assert dag.params["require_approval"] is False  # the use case's default
    assert "approve" in dag.task_dict

    op = Operator(["approve", "taxi_fare"], own_mlflow)
    op.start()
    dr = dag.test(logical_date=datetime(2027, 1, 4, tzinfo=UTC), run_conf=CONF)
    op.join(timeout=60)
    assert op.seen_waiting is not None and op.rc == 0
    assert op.deploy_state in (None, "none") and op.registered_while_waiting == 0
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert states["approve"] == "success" and states["deploy"] == "success", states
    client = configure()
    (mv,) = client.search_model_versions("name='taxi_fare'")
    run = client.get_run(mv.run_id)
    assert run.data.tags["approval"] == "approved" and run.data.tags["approval.by"] == "admin"
    assert "## Approval\n\n- approved by admin" in mv.description
    assert "approved; deploy follows" in capsys.readouterr().out

    op = Operator(["approve", "taxi_fare", "--reject", "--reason", "drift under review"],
                  own_mlflow)
    op.start()
    dr = dag.test(logical_date=datetime(2027, 1, 11, tzinfo=UTC), run_conf=CONF)
    op.join(timeout=60)
    assert op.rc == 0
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert states["approve"] == "success" and states["deploy"] == "skipped", states
    versions = client.search_model_versions("name='taxi_fare'")
    assert [v.version for v in versions] == [mv.version]  # nothing registered
    assert str(client.get_model_version_by_alias("taxi_fare", "champion").version) == \
        str(mv.version)
    rejected = [r for r in client.search_runs(
        [run.info.experiment_id], "tags.approval = 'rejected'")]
    assert len(rejected) == 1
    assert rejected[0].data.tags["approval.reason"] == "drift under review"
    assert "rejected (drift under review); deploy is skipped" in capsys.readouterr().out


def test_approve_without_a_waiting_run_or_reason_says_so(api_server, monkeypatch, capsys):
    from tasks.cli import main

    monkeypatch.setenv("MLP_AIRFLOW_URL", api_server)
    assert main(["approve", "breast_cancer", "--reject"]) == 1
    assert "--reject needs --reason" in capsys.readouterr().err
    assert main(["approve", "breast_cancer"]) == 1
    assert "no run of breast_cancer is waiting for approval" in capsys.readouterr().err
