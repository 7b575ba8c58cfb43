"""A failed step: a permanent error is not retried, and its FAILED MLflow run says why."""

import time

import mlflow
import pytest


def test_a_failed_step_tags_its_failed_mlflow_run_with_the_error(own_mlflow):
    from airflow.sdk.exceptions import AirflowFailException

    from tasks import tracking
    from tasks.orchestration.dag_factory import step
    from tasks.spec import catalog
    from tasks.steps.train import TrainingDiverged

    spec = catalog.get("breast_cancer")
    client = tracking.configure()
    exp = tracking.experiment_id(spec.name)
    with mlflow.start_run(experiment_id=exp, tags={"run_key": "k1"}) as earlier:
        pass
    # An older failure of the same pipeline run (a minute ago) is not retagged.
    client.set_terminated(earlier.info.run_id, "FAILED",
                          end_time=int((time.time() - 60) * 1000))
    with pytest.raises(AirflowFailException, match="training diverged"), \
            step("train", spec, "k1"), \
            mlflow.start_run(experiment_id=exp, tags={"run_key": "k1"}) as run:
        raise TrainingDiverged("breast_cancer: training diverged (loss became NaN)")
    got = client.get_run(run.info.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags["mlp.error"] == ("train: TrainingDiverged: breast_cancer: training "
                                          "diverged (loss became NaN)")
    assert got.data.tags["mlp.error_kind"] == "permanent"
    assert "mlp.error" not in client.get_run(earlier.info.run_id).data.tags
    # Other errors are re-raised as they are (Airflow may retry them), tagged as transient.
    with pytest.raises(OSError), step("evaluate", spec, "k1"), \
            mlflow.start_run(experiment_id=exp, tags={"run_key": "k1"}) as run2:
        raise OSError("disk full")
    assert client.get_run(run2.info.run_id).data.tags["mlp.error_kind"] == "transient"
