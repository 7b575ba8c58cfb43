"""Operator override through a real Airflow run: force_deploy needs force_reason.

A copy of the mnist use case (``mnist_forced``) with a gate no model can pass: without a
reason the gate task fails and nothing deploys; re-running the same DAG run with a reason
reuses every upstream output, passes the gate as forced and tags the registry version.
"""

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

pytestmark = pytest.mark.slow

CONF = {"variant": "softmax", "epochs": 1, "batch_size": 32, "learning_rate": 0.01,
        "validation_size": 50}


def _register_dag(dag, folder):
    """Write a DAG built in the test (no file under dags/) to Airflow's metadata DB.

    ``dag.test()`` only runs DAGs it finds serialised; it syncs the dags folder itself,
    which does not hold this copy.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(folder), collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)


def test_force_deploy_needs_a_reason_then_tags_the_version(airflow_db, mnist_dir, capfd,
                                                           tmp_path):
    from tasks.core.run import RunLayout
    from tasks.orchestration.dag_factory import build_dag
    from tasks.spec import catalog
    from tasks.tracking import configure

    base = catalog.get("mnist")
    spec = replace(base, name="mnist_forced", gate=replace(base.gate, min_value=0.9999),
                   variant_gates={})
    dag = build_dag(spec)
    _register_dag(dag, tmp_path / "empty")
    assert dag.params["force_deploy"] is False and dag.params["force_reason"] is None
    when = datetime(2026, 4, 1, tzinfo=UTC)
    conf = {**CONF, "source_dir": str(mnist_dir), "force_deploy": True}

    capfd.readouterr()
    dr = dag.test(logical_date=when, run_conf={**conf, "force_reason": "  "})
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert states["evaluate"] == "success"
    assert states["gate"] == "failed" and states["deploy"] == "upstream_failed"
    # Failed for good (no retry), with the reason in the task log.
    assert [ti.try_number for ti in dr.get_task_instances() if ti.task_id == "gate"] == [1]
    assert ("AirflowFailException: force_deploy=true requires a non-empty force_reason"
            in "".join(capfd.readouterr()))
    client = configure()
    assert client.search_model_versions("name='mnist_forced'") == []

    dr = dag.test(logical_date=when, run_conf={**conf, "force_reason": "INC-7 hotfix"})
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert states["gate"] == "success" and states["deploy"] == "success"
    run_dir = RunLayout.of("mnist_forced", "20260401T000000Z").run_dir
    verdict = json.loads((run_dir / "gate.json").read_text())
    assert verdict["forced"] and verdict["force_reason"] == "INC-7 hotfix"
    assert "FORCED by operator (INC-7 hotfix); the gate itself failed" in verdict["reason"]
    assert (run_dir / "gate" / "report.md").is_file()
    (mv,) = client.search_model_versions("name='mnist_forced'")
    assert mv.tags["forced_by_operator"] == "true"
    assert mv.tags["force_reason"] == "INC-7 hotfix"
    assert str(client.get_model_version_by_alias("mnist_forced", "champion").version) == "1"
