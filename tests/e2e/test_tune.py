"""``mlp tune`` for real: trials as mapped Airflow tasks in parallel, one killed with SIGKILL.

The tuning DAG runs exactly as ``mlp tune breast_cancer --trials 2 --parallel 2`` runs it
(LocalExecutor processes, the study in the platform's SQLite database). While the two
trials train side by side, the test kills one trial's process with SIGKILL once it has
reported an epoch: the study must stay consistent (that trial FAIL), Airflow's retry of
that mapped task must run a new trial, and the tune must end with 2 finished trials, then
train, gate and deploy the best params. The smallest use case and budget that exercise
all of it (breast_cancer, 2 trials of 40 epochs): the subject is the mechanics.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime

import pytest

pytestmark = pytest.mark.slow

# Forced deploy: 40 epochs on 341 rows may miss the 0.95 gate; the subject is the mechanics.
# 40 epochs, not 10: the test must see a trial mid-training (reported an epoch, not done);
# 10 epochs of 341 rows once ended before a 0.1 s poll saw one.
CONF = {"epochs": 40, "force_deploy": True, "force_reason": "tuning test: mechanics"}
TRIALS = 2


def _study(name):
    import optuna

    from tasks.steps.tune import storage, storage_url

    return optuna.load_study(study_name=name, storage=storage(storage_url()))


def test_tune_runs_trials_as_mapped_tasks_survives_a_killed_trial_and_deploys_the_best(
        airflow_db, own_mlflow):
    from optuna.trial import TrialState

    from tasks.core.run import RunLayout, run_key
    from tasks.operations.tune import run_tune, tune_conf
    from tasks.spec import catalog
    from tasks.steps.tune import run_trial, study_name
    from tasks.tracking import configure

    when = datetime(2026, 7, 1, tzinfo=UTC)
    key = run_key(when)
    name = study_name("breast_cancer", key)
    box = {}
    runner = threading.Thread(target=lambda: box.update(summary=run_tune(
        "breast_cancer", tune_conf(CONF, TRIALS, 2, None), 2, when, echo=lambda _: None)))
    runner.start()
    killed, study = None, None
    deadline = time.monotonic() + 600
    while killed is None and runner.is_alive():
        assert time.monotonic() < deadline, "no trial reached its first epoch in time"
        time.sleep(0.1)
        if study is None:
            try:
                study = _study(name)  # then read again through the same storage
            except Exception:  # the study does not exist yet
                continue
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for t in running:
            # Mid-training: it has reported an epoch (so its MLflow run is open).
            if t.intermediate_values and "pid" in t.user_attrs:
                os.kill(t.user_attrs["pid"], signal.SIGKILL)
                killed = t
                break
    assert killed is not None, "the tune ended before a trial could be killed"
    runner.join(1200)
    summary = box["summary"]
    assert summary["state"] == "success", summary

    # The study: the killed trial FAIL, N finished ones, nothing left RUNNING.
    trials = _study(name).get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    assert by_number[killed.number].state == TrialState.FAIL
    assert "killed" in by_number[killed.number].user_attrs["failed_because"]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == TRIALS and len(trials) == TRIALS + 1
    assert sorted(t.user_attrs["slot"] for t in finished) == list(range(TRIALS))
    # The run's own params are one finished trial (re-asked if the killed one was it).
    assert [t.user_attrs.get("default") for t in finished].count(True) == 1
    tuning = summary["tuning"]
    assert tuning["counts"]["FAIL"] == 1 and tuning["trials"] == TRIALS + 1

    # Airflow: one mapped task instance per trial; the killed one's retry succeeded.
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        run_id = session.query(DagRun.run_id).filter(
            DagRun.dag_id == "breast_cancer_tune", DagRun.logical_date == when).scalar()
        tis = session.query(TaskInstance).filter(
            TaskInstance.dag_id == "breast_cancer_tune", TaskInstance.task_id == "trial",
            TaskInstance.run_id == run_id).all()
        mapped = {ti.map_index: (str(ti.state), ti.try_number) for ti in tis}
    assert sorted(mapped) == list(range(TRIALS))
    assert all(state == "success" for state, _ in mapped.values()), mapped
    assert mapped[killed.user_attrs["slot"]][1] == 2, mapped

    # MLflow: the trials are nested runs of the tuning run; the killed one is FAILED.
    client = configure()
    exp = client.get_experiment_by_name("breast_cancer")
    runs = client.search_runs([exp.experiment_id], f"tags.`mlp.tuning` = '{name}'")
    parent = next(r for r in runs if r.info.run_name.endswith("-tuning"))
    children = [r for r in runs if r is not parent]
    assert len(children) == TRIALS + 1
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert "RUNNING" not in {r.info.status for r in runs}
    dead = next(r for r in children if r.data.tags["optuna_trial"] == str(killed.number))
    assert dead.info.status == "FAILED" and "killed" in dead.data.tags["mlp.orphaned"]
    for r in children:
        if r.data.tags.get("optuna_state") == "PRUNED":
            assert "pruned at epoch" in r.info.run_name
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "tuning")}
    assert {"tuning/optimization_history.png", "tuning/parallel_coordinate.png",
            "tuning/summary.json"} <= artifacts

    # The best params went through train -> evaluate -> gate -> deploy, with lineage.
    best = tuning["best"]
    assert summary["gate"]["passed"] is True
    assert summary["params"]["learning_rate"] == pytest.approx(best["params"]["learning_rate"])
    version = client.get_model_version("breast_cancer", summary["deploy"]["version"])
    assert version.tags["tune_study"] == name
    assert version.tags["tune_trial"] == str(best["number"])
    assert "## Hyper-parameter search" in version.description
    assert f"These params are trial {best['number']}'s" in version.description

    # A rerun of the run continues the study: finished slots are reused, not retrained.
    layout = RunLayout.of("breast_cancer", key)
    again = run_trial(catalog.get("breast_cancer"), {**{k: p.default for k, p in
                      catalog.get("breast_cancer").params.items()}, **CONF},
                      layout.dataset_dir, key, 0, {"metric": "val_loss"})
    assert again["reused"] is True
    assert len(_study(name).get_trials(deepcopy=False)) == TRIALS + 1
