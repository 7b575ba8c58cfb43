"""A real Airflow run of the mnist DAG on a few hundred real digit images.

Asserts the MLflow run and metrics, registry version 1 with alias champion, no new
version when the same run is re-run, a gate failure that stops before deployment, and
correct-shaped predictions from the REST server.
"""

import json
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest

from tests.conftest import serving

pytestmark = pytest.mark.slow

CONF = {"variant": "softmax", "epochs": 8, "batch_size": 16, "learning_rate": 0.003,
        "validation_size": 50}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from tests.conftest import digits_as_mnist, write_mnist_dir

    return write_mnist_dir(tmp_path_factory.mktemp("digits"), digits_as_mnist(400, 150))


def test_mnist_dag_end_to_end(airflow_db, own_mlflow, source):
    from tasks.core.run import RunLayout
    from tasks.orchestration.dag_factory import build_dag
    from tasks.spec import catalog
    from tasks.tracking import configure

    spec = catalog.get("mnist")
    dag = build_dag(spec)
    when = datetime(2026, 3, 1, tzinfo=UTC)
    conf = {**CONF, "source_dir": str(source)}
    dr = dag.test(logical_date=when, run_conf=conf)
    assert str(dr.state) == "success"
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert states == dict.fromkeys(
        ["ingest", "preprocess", "analyze", "train", "evaluate", "gate", "approve",
         "deploy"], "success")

    client = configure()
    versions = client.search_model_versions("name='mnist'")
    assert [str(v.version) for v in versions] == ["1"]
    champion = client.get_model_version_by_alias("mnist", "champion")
    assert str(champion.version) == "1"
    assert champion.tags["run_key"] == "20260301T000000Z"
    assert len(champion.tags["data_checksum"]) == 64
    assert champion.tags["infra_validation"] == "passed"
    assert champion.description.startswith("# Model card: mnist version 1\n")
    run = client.get_run(champion.run_id)
    assert run.data.metrics["test_accuracy"] > 0.8
    assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "loss")) == CONF["epochs"]
    assert run.data.params["variant"] == "softmax"
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {
        "mnist-train", "mnist-validation", "mnist-test"}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/confusion_matrix.png", "plots/learning_curves.png"}
    assert (RunLayout.of("mnist", "20260301T000000Z").raw_dir / "manifest.json").is_file()

    # Re-running the same DAG run does not register a second version.
    dr2 = dag.test(logical_date=when, run_conf=conf)
    assert str(dr2.state) == "success"
    assert len(client.search_model_versions("name='mnist'")) == 1

    # A gate the candidate cannot pass stops the run before deployment.
    strict = replace(spec, gate=replace(spec.gate, min_value=0.9999), variant_gates={})
    dr3 = build_dag(strict).test(logical_date=datetime(2026, 3, 2, tzinfo=UTC), run_conf=conf)
    states3 = {ti.task_id: str(ti.state) for ti in dr3.get_task_instances()}
    assert states3["gate"] == "success" and states3["deploy"] == "skipped"
    assert states3["approve"] == "skipped"
    assert len(client.search_model_versions("name='mnist'")) == 1
    # The champion was scored on this run's test rows; its stored figure is history only.
    report3 = json.loads((RunLayout.of("mnist", "20260302T000000Z").gate_dir / "report.json")
                         .read_text())
    assert report3["champion"]["version"] == "1" and report3["data"]["rows"] > 0
    assert report3["metrics"][0]["champion"] is not None
    failed_run = client.search_runs([run.info.experiment_id],
                                    "tags.run_key = '20260302T000000Z'")[0]
    assert failed_run.data.tags["gate.passed"] == "false"
    assert "test_accuracy >= 0.9999" in failed_run.data.tags["gate.reason"]

    # The REST server serves the champion in TF Serving's shape.
    with serving() as base:
        status = httpx.get(f"{base}/v1/models/mnist").json()
        assert status["model_version_status"][0]["version"] == "1"
        from tasks.data.idx import read_idx

        images = read_idx(source / "t10k-images-idx3-ubyte.gz")[:5].astype(float).tolist()
        r = httpx.post(f"{base}/v1/models/mnist:predict", json={"instances": images})
        assert r.status_code == 200
        preds = np.array(r.json()["predictions"])
        assert preds.shape == (5, 10)
        np.testing.assert_allclose(preds.sum(axis=1), 1.0, rtol=1e-4)
        bad = httpx.post(f"{base}/v1/models/mnist:predict", json={"instances": [[1, 2]]})
        assert bad.status_code == 400 and "shape [28, 28]" in bad.json()["error"]
