"""The tuning DAG ``<use case>_tune``: trials as dynamically mapped tasks, then the release.

Built from the same factory pieces as the training DAG (:mod:`tasks.orchestration.
dag_factory`: the same ingest, preprocess, analyze (data-analysis page and drift check),
evaluate, gate, approval and deploy tasks (:func:`~tasks.orchestration.dag_factory.
data_tasks`, :func:`~tasks.orchestration.dag_factory.release_tasks`), trigger form and
retry policy), with three tasks in the middle::

    ingest -> preprocess -> analyze -> study -> trial[0..N-1] (.expand) -> best -> train
           -> evaluate -> gate -> approve -> deploy

``study`` creates or loads the run's Optuna study (:mod:`tasks.steps.tune`) and returns
the slots to map over; each ``trial`` is one mapped task instance, so trials run in
parallel on whatever executor runs the DAG (LocalExecutor processes, Celery workers),
at most ``max_active_tis_per_dagrun`` at once (``MLP_TUNE_PARALLEL``, default 2; ``mlp tune
--parallel K`` sets it for its own run). Preprocessing runs once; every trial reads the
run's TFRecords. ``best`` picks the best trial, and ``train`` trains the use case's model
with those params through the normal training step, so what ships is evaluated, gated and
deployed like any other run; the version records the study and trial.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, get_current_context, task

from tasks import objectives
from tasks.core.run import Dataset, RunLayout, Snapshot, TrainedModel
from tasks.orchestration.dag_factory import (
    data_tasks,
    parsing_wants,
    release_tasks,
    retry_delay,
    step,
    trigger_params,
)
from tasks.spec import SpecError, UseCaseSpec, catalog
from tasks.spec.search import search_space

PARALLEL_ENV = "MLP_TUNE_PARALLEL"
TUNE_PARAMS = ("tune_trials", "tune_parallel", "tune_timeout")
SUFFIX = "_tune"


def tuning_dag_id(use_case: str) -> str:
    """The tuning DAG's id of a use case."""
    return f"{use_case}{SUFFIX}"


def tunable(spec: UseCaseSpec) -> bool:
    """Whether a use case declares a search space (and so has a tuning DAG)."""
    return spec.model is not None and bool(search_space(spec.params))


def parallel_cap() -> int:
    """Trials of one run running at once (``MLP_TUNE_PARALLEL``; read at DAG parse time)."""
    return max(1, int(os.environ.get(PARALLEL_ENV, "2")))


def tune_params(spec: UseCaseSpec) -> dict[str, Param]:
    """The training DAG's trigger form plus the tuning run's own fields."""
    params = trigger_params(spec)
    params["tune_trials"] = Param(8, type="integer", minimum=1, maximum=1000,
                                  description="Trials of the study (one mapped task each)")
    params["tune_parallel"] = Param(parallel_cap(), type="integer", minimum=1, maximum=64,
                                    description="Trials running at once (the DAG's cap, "
                                                "MLP_TUNE_PARALLEL, bounds it)")
    params["tune_timeout"] = Param(0, type="integer", minimum=0,
                                   description="Seconds after which no new trial starts "
                                               "(running ones finish); 0 = no limit")
    return params


def _run_params(spec: UseCaseSpec, params: dict[str, Any]) -> dict[str, Any]:
    return {k: params[k] for k in spec.params}


def _study(spec: UseCaseSpec, snapshot: Snapshot) -> dict[str, Any]:
    from tasks.steps.tune import start

    params = get_current_context()["params"]
    with step("study", spec, snapshot.run_key) as out:
        started = start(spec, _run_params(spec, params), snapshot.run_key,
                        int(params["tune_trials"]), float(params["tune_timeout"]) or None,
                        min(int(params["tune_parallel"]), parallel_cap()))
        out.summary = (f"study {started['study']} in {started['storage']}: "
                       f"{len(started['slots'])} trials, {started['metric']} "
                       f"({started['direction']})")
    return started


def _trial(spec: UseCaseSpec, slot: int, started: dict[str, Any], snapshot: Snapshot,
           dataset: Dataset) -> dict[str, Any]:
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from tasks.core import progress
    from tasks.core.errors import PermanentError
    from tasks.steps.tune import run_trial

    ctx = get_current_context()
    try:
        with progress.step(f"trial[{slot}]", spec.name, snapshot.run_key) as out:
            result = run_trial(spec, _run_params(spec, ctx["params"]), dataset.dataset_dir,
                               snapshot.run_key, slot, started,
                               attempt=int(getattr(ctx["ti"], "try_number", 1) or 1))
            value = "—" if result["value"] is None else f"{result['value']:.4f}"
            out.summary = (f"trial {result['number']} {result['state']} {value}"
                           + (" (reused)" if result.get("reused") else ""))
    except PermanentError as exc:
        raise AirflowFailException(str(exc)) from exc
    if result["state"] == "SKIPPED":
        raise AirflowSkipException(result["reason"])
    return result


def _best(spec: UseCaseSpec, started: dict[str, Any], snapshot: Snapshot,
          results: list[dict[str, Any]]) -> dict[str, Any]:
    from tasks.steps.tune import finish

    with step("best", spec, snapshot.run_key) as out:
        best = finish(spec, snapshot.run_key, started, results)
        default = best["default_value"]
        out.summary = (f"trial {best['best_trial']} {best['metric']}={best['best_value']:.4f}"
                       + (f" (default params {default:.4f})" if default is not None else "")
                       + f" {best['counts']}; params {best['best_params']}")
    return best


def _train_best(spec: UseCaseSpec, snapshot: Snapshot, dataset: Dataset,
                best: dict[str, Any]) -> TrainedModel:
    from tasks.steps.train import train
    from tasks.steps.tune import tune_tags
    from tasks.tracking import configure

    params = {**_run_params(spec, get_current_context()["params"]), **best["best_params"]}
    layout = RunLayout.of(spec.name, snapshot.run_key)
    with step("train", spec, layout.key) as out:
        trained = train(spec, params, dataset.dataset_dir, layout.train_dir, snapshot)
        client = configure()
        for key, value in tune_tags(best).items():  # lineage: this model came from a study
            client.set_tag(trained.run_id, key, value)
        out.summary = (f"MLflow run {trained.run_id} with trial {best['best_trial']}'s params "
                       f"({trained.train_seconds:.0f}s of fitting)")
    return trained


def build_tuning_dag(use_case: UseCaseSpec | str) -> DAG:
    """Build the tuning DAG of one use case (``<name>_tune``, triggered only by hand).

    Raises:
        SpecError: The use case has no model or no search space.

    """
    spec = catalog.get(use_case) if isinstance(use_case, str) else use_case
    if not tunable(spec):
        raise SpecError(f"{spec.name} has no search space to tune: declare one on its run "
                        "params, e.g. RunParam(..., search=LogUniform(1e-4, 1e-1))")
    objectives.get(spec.model.objective)
    default_args = {"owner": "mlp", "retries": 1, "retry_delay": retry_delay()}
    with DAG(
        dag_id=tuning_dag_id(spec.name),
        description=f"Hyper-parameter tuning of {spec.name} (Optuna; trials as mapped tasks)",
        doc_md=(__doc__ or "") + "\n\n" + spec.description,
        schedule=None,
        catchup=False,
        max_active_runs=1,
        params=tune_params(spec),
        tags=["mlp", "tuning", *spec.tags],
        default_args=default_args,
    ) as dag:

        snap, data, checked = data_tasks(spec, ignore=TUNE_PARAMS)

        # One entry per trial slot: the mapped task's kwargs (slot + the study's facts).
        @task(task_id="study")
        def study(snapshot: dict[str, Any], dataset: dict[str, Any]) -> list[dict[str, Any]]:
            started = _study(spec, Snapshot.from_xcom(snapshot))
            return [{"slot": slot, "started": started} for slot in started["slots"]]

        # One mapped task instance per trial; a killed one is retried (its Optuna trial
        # is marked FAIL and a new one asked).
        @task(task_id="trial", max_active_tis_per_dagrun=parallel_cap(), retries=2,
              retry_delay=timedelta(seconds=5))
        def trial(slot: int, started: dict[str, Any], snapshot: dict[str, Any],
                  dataset: dict[str, Any]) -> dict[str, Any]:
            return _trial(spec, slot, started, Snapshot.from_xcom(snapshot),
                          Dataset.from_xcom(dataset))

        @task(task_id="best", trigger_rule="none_failed_min_one_success")
        def best(slots: list[dict[str, Any]], snapshot: dict[str, Any],
                 results: list[dict[str, Any]]) -> dict[str, Any]:
            return _best(spec, slots[0]["started"], Snapshot.from_xcom(snapshot),
                         [r for r in results if r])

        @task(task_id="train")
        def train(snapshot: dict[str, Any], dataset: dict[str, Any],
                  chosen: dict[str, Any]) -> dict[str, Any]:
            return _train_best(spec, Snapshot.from_xcom(snapshot), Dataset.from_xcom(dataset),
                               chosen).to_xcom()

        slots = study(snap, data)
        checked >> slots  # drifted data (past a fail threshold) runs no trial
        results = trial.partial(snapshot=snap, dataset=data).expand_kwargs(slots)
        chosen = best(slots, snap, results)
        release_tasks(spec, snap, data, train(snap, data, chosen))
    return dag


def build_tuning_dags() -> dict[str, DAG]:
    """Every tunable use case's tuning DAG, by DAG id (for ``dags/tuning.py``).

    While a worker runs one task, or ``dag.test()`` re-syncs the bundle for one DAG, Airflow
    names the DAG it needs (parsing context): only that use case is loaded then, and none
    when that DAG is not a tuning DAG.
    """
    dags = {}
    # A parse for one DAG: only its use case, or none when it is not a tuning DAG.
    for name in (n for n in catalog.names() if parsing_wants(tuning_dag_id(n))):
        spec = catalog.get(name)
        if tunable(spec):
            dags[tuning_dag_id(name)] = build_tuning_dag(spec)
    return dags

