"""One DAG factory per use case: ingest, preprocess, analyze, train, evaluate, gate, deploy.

Tasks are thin wrappers of the pure step functions in :mod:`tasks.steps`: each finds its
run's paths in the :class:`~tasks.core.run.RunLayout`, calls its step, and returns the
step's typed result as a small XCom dict. Heavy modules (TensorFlow, Beam, MLflow) are
imported inside the task callables, so parsing a DAG file costs only this module and the
use-case spec. A :class:`~tasks.core.errors.PermanentError` (bad data, a bad parameter,
divergence) fails the task at once: a retry could not fix it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, get_current_context, get_parsing_context, task

from tasks import objectives
from tasks.core import progress
from tasks.core.errors import PermanentError
from tasks.core.run import (
    Dataset,
    Deployment,
    Evaluation,
    RunLayout,
    Snapshot,
    TrainedModel,
    Verdict,
    run_key,
)
from tasks.orchestration.approval import GateApproval
from tasks.orchestration.assets import (
    dag_schedule,
    triggering_extra,
    triggering_location,
    triggering_tolerance,
)
from tasks.orchestration.lifecycle import LIFECYCLE_SUFFIXES, build_lifecycle_dags
from tasks.spec import UseCaseSpec, catalog

START_DATE = datetime(2026, 1, 1, tzinfo=UTC)
TASK_IDS = ("ingest", "preprocess", "analyze", "train", "evaluate", "gate", "approve",
            "deploy")
RETRY_DELAY_ENV = "MLP_RETRY_DELAY"


def retry_delay() -> timedelta:
    """How long a failed task waits for its retry (``MLP_RETRY_DELAY`` seconds, default 30).

    Read when the DAG is parsed.
    """
    return timedelta(seconds=max(0.0, float(os.environ.get(RETRY_DELAY_ENV) or "30")))


def context_run_key(context: Any) -> str:
    """The run key of the running DAG run (logical date, else run id)."""
    dag_run = context["dag_run"]
    return run_key(getattr(dag_run, "logical_date", None), dag_run.run_id)


def clean_orphans(spec: UseCaseSpec, layout: RunLayout) -> None:
    """Remove what killed attempts of this run left: temporary outputs, RUNNING MLflow runs."""
    import logging

    from tasks.core.files import read_json, remove_paths
    from tasks.core.run import TRAIN_RESULT
    from tasks.tracking.store import fail_orphaned_runs

    log = logging.getLogger(__name__)
    for path in remove_paths(layout.orphaned_temp_paths()):
        log.warning("removed %s, left by an interrupted attempt", path)
    if not layout.run_dir.is_dir():
        return  # nothing has run past ingest: no MLflow run can exist
    result = layout.train_dir / TRAIN_RESULT
    completed = frozenset([read_json(result)["run_id"]]) if result.is_file() else frozenset()
    for run_id in fail_orphaned_runs(spec.name, layout.key, completed):
        log.warning("MLflow run %s was left RUNNING by an interrupted attempt; ended it", run_id)


@contextlib.contextmanager
def step(name: str, spec: UseCaseSpec, key: str) -> Iterator[progress.StepOutcome]:
    """Clean up after killed attempts, report progress; permanent errors are not retried.

    The error of a failed step is tagged on the MLflow runs it failed (``mlp.error``), so
    the MLflow UI says why a FAILED run failed.
    """
    import time

    from airflow.sdk.exceptions import AirflowFailException

    from tasks.core import collector
    from tasks.core.timing import phase

    collector.tune()  # a task's process is one-shot and about to import TensorFlow & co.
    clean_orphans(spec, RunLayout.of(spec.name, key))
    started = time.time()
    try:
        with phase(f"task {name}"), progress.step(name, spec.name, key) as outcome:
            yield outcome
    except Exception as exc:
        _tag_failed_runs(spec, key, name, exc, started)
        if isinstance(exc, PermanentError):
            raise AirflowFailException(str(exc)) from exc
        raise


def _tag_failed_runs(spec: UseCaseSpec, key: str, name: str, exc: Exception,
                     since: float) -> None:
    """Tag the MLflow runs this step failed with its error (never masks the error)."""
    import logging

    from tasks.tracking.store import tag_failed_runs

    try:
        tag_failed_runs(spec.name, key, f"{name}: {type(exc).__name__}: {exc}", since,
                        permanent=isinstance(exc, PermanentError))
    except Exception:  # noqa: BLE001 - the step's own error is what matters
        logging.getLogger(__name__).warning("could not tag the failed MLflow runs",
                                            exc_info=True)


def max_bad_fraction(spec: UseCaseSpec, context: Any) -> float:
    """The run's tolerance of bad rows: a triggering ``mlp ingest``'s, else the run param."""
    landed = triggering_tolerance(context, spec.name)
    if landed is not None:
        return landed
    return float(context["params"].get("max_bad_fraction", spec.preprocess.max_bad_fraction))


def trigger_params(spec: UseCaseSpec) -> dict[str, Param]:
    """The spec's run params plus the platform's own, as Airflow's typed trigger form."""
    params = {name: Param(p.default, **p.schema()) for name, p in spec.params.items()}
    params["source_dir"] = Param(
        spec.source.default_location, type="string",
        description="Directory holding the raw input files to ingest",
    )
    params["force_deploy"] = Param(
        False, type="boolean",
        description="Operator override: deploy even if the gate fails (needs force_reason)",
    )
    # Optional in the form (null allowed): a required empty string would keep the UI's
    # Trigger button disabled until an operator typed a reason for no override at all.
    params["force_reason"] = Param(
        None, type=["null", "string"],
        description="Why the gate is overridden; required with force_deploy, kept on the version",
    )
    params["max_bad_fraction"] = Param(
        spec.preprocess.max_bad_fraction, type="number", minimum=0, maximum=1,
        description="Largest fraction of bad rows (empty cells, non-numbers, out of range, "
                    "unknown values) quarantined instead of failing ingest and preprocessing",
    )
    params["rollout"] = Param(
        "champion", type="string", enum=["champion", "shadow"],
        description="champion: a passing version serves at once; shadow: it becomes the "
                    "challenger, scored beside the champion until `mlp promote`",
    )
    params["force_drift"] = Param(
        False, type="boolean",
        description="Operator override: train even if the new data drifted past a fail "
                    "threshold against the champion's data (needs force_drift_reason)",
    )
    params["force_drift_reason"] = Param(
        "", type="string",
        description="Why training proceeds despite drift; required with force_drift, kept "
                    "in the model card",
    )
    params["require_approval"] = Param(
        spec.require_approval, type="boolean",
        description="After a passing gate, wait for an operator to approve or reject "
                    "(Airflow UI Required Actions, or mlp approve) before deploying",
    )
    return params


def _ingest(spec: UseCaseSpec, ignore: tuple[str, ...] = ()) -> Snapshot:
    from tasks.steps.ingest import ingest
    from tasks.steps.validate import ensure_valid

    ctx = get_current_context()
    layout = RunLayout.of(spec.name, context_run_key(ctx))
    with step("ingest", spec, layout.key) as out:
        location = triggering_location(ctx, spec.name) or ctx["params"]["source_dir"]
        # Runs triggered from the UI or REST API skip `mlp run`'s check: same check here
        # (unknown conf keys included, which Airflow would drop silently).
        conf = getattr(ctx["dag_run"], "conf", None) or {}
        ensure_valid(spec, {k: v for k, v in conf.items() if k not in ignore}, location,
                     dag_file=False)  # ignore: params of the DAG, not of the use case
        # Media decoding is the row check of media sources: preprocessing does it next.
        manifest = ingest(spec.source, location, layout.raw_dir, max_bad_fraction(spec, ctx),
                          decode=False)
        out.summary = f"snapshot {manifest['checksum'][:12]} {manifest['facts']}"
    return Snapshot(layout.key, str(layout.raw_dir), manifest["checksum"])


def _preprocess(spec: UseCaseSpec, snapshot: Snapshot) -> Dataset:
    from pathlib import Path

    from tasks.core.config import settings
    from tasks.steps.ingest import snapshot_files, snapshot_origins
    from tasks.steps.preprocess import preprocess

    s = settings()
    ctx = get_current_context()
    params = ctx["params"]
    layout = RunLayout.of(spec.name, snapshot.run_key, s)
    split = spec.split
    if "validation_size" in params:
        split = replace(split, validation_size=int(params["validation_size"]))
    prep = replace(spec.preprocess, max_bad_fraction=max_bad_fraction(spec, ctx))
    with step("preprocess", spec, layout.key) as out:
        manifest = preprocess(spec.source, snapshot_files(Path(snapshot.snapshot_dir)),
                              prep, split, layout.dataset_dir,
                              runner=s.beam_runner, runner_options=s.beam_options,
                              origins=snapshot_origins(Path(snapshot.snapshot_dir)))
        rows = {k: v["rows"] for k, v in manifest["splits"].items()}
        out.summary = f"rows {rows}, quarantined {manifest['quarantined_rows']}"
    return Dataset(str(layout.dataset_dir), rows)


def _analyze(spec: UseCaseSpec, snapshot: Snapshot, dataset: Dataset) -> dict[str, Any]:
    """The data-analysis page, then the drift check against the champion's data."""
    from pathlib import Path

    from tasks.core.files import atomic_dir
    from tasks.steps.data_analysis import write_data_analysis
    from tasks.steps.drift_check import check_training_data
    from tasks.steps.ingest import snapshot_files

    ctx = get_current_context()
    params = ctx["params"]
    layout = RunLayout.of(spec.name, snapshot.run_key)
    with step("analyze", spec, layout.key) as out:
        with atomic_dir(layout.analysis_dir) as tmp:
            write_data_analysis(spec, Path(dataset.dataset_dir), tmp, layout.quarantine_file,
                                layout.key)
        if spec.model is None or not spec.drift.check_training:
            out.summary = "data-analysis page written (no drift check)"
            return {"status": "not checked"}
        reason = triggering_extra(ctx, spec.name, "force_drift_reason")
        if params.get("force_drift"):
            reason = str(params.get("force_drift_reason") or "").strip()
            if not reason:
                raise PermanentError("force_drift=true needs force_drift_reason: say why "
                                     "training proceeds on drifted data (the card keeps it)")
        verdict = check_training_data(spec, snapshot_files(Path(snapshot.snapshot_dir)),
                                      Path(dataset.dataset_dir), layout.drift_dir, layout.key,
                                      reason or None)
        out.summary = verdict["summary"] + (
            f"; FORCED by operator: {verdict['force_reason']}" if verdict["forced"] else "")
    return verdict


def _train(spec: UseCaseSpec, snapshot: Snapshot, dataset: Dataset) -> TrainedModel:
    from tasks.steps.train import train

    params = get_current_context()["params"]
    layout = RunLayout.of(spec.name, snapshot.run_key)
    with step("train", spec, layout.key) as out:
        trained = train(spec, {k: params[k] for k in spec.params}, dataset.dataset_dir,
                        layout.train_dir, snapshot)
        out.summary = f"MLflow run {trained.run_id} ({trained.train_seconds:.0f}s of fitting)"
    return trained


def _evaluate(spec: UseCaseSpec, snapshot: Snapshot, dataset: Dataset,
              trained: TrainedModel) -> Evaluation:
    from pathlib import Path

    from tasks.steps.evaluate import evaluate
    from tasks.steps.ingest import snapshot_files

    layout = RunLayout.of(spec.name, snapshot.run_key)
    with step("evaluate", spec, layout.key) as out:
        evaluation = evaluate(spec, dataset.dataset_dir, trained, layout.evaluation_dir,
                              raw_files=snapshot_files(Path(snapshot.snapshot_dir)),
                              data_checksum=snapshot.checksum)
        value = evaluation.metrics.get(spec.gate.metric)
        out.summary = f"{spec.gate.metric}={value:.4f}" if value is not None else (
            f"no {spec.gate.metric} in {sorted(evaluation.metrics)}")
    return evaluation


def _gate(spec: UseCaseSpec, snapshot: Snapshot, evaluation: Evaluation) -> Verdict:
    from tasks.core.files import write_json
    from tasks.steps.gate import run_gate

    params = get_current_context()["params"]
    layout = RunLayout.of(spec.name, snapshot.run_key)
    with step("gate", spec, layout.key) as out:
        verdict = run_gate(spec.name, spec.gate_for(params), evaluation,
                           force_deploy=bool(params.get("force_deploy", False)),
                           force_reason=params.get("force_reason", ""), out_dir=layout.gate_dir)
        write_json(layout.gate_file, verdict.to_dict())
        out.summary = ("PASSED" if verdict.passed else "FAILED") + f": {verdict.reason}"
    return verdict


def _deploy(spec: UseCaseSpec, snapshot: Snapshot, trained: TrainedModel,
            verdict: Verdict, approval: dict[str, Any] | None = None) -> Deployment:
    from tasks.core.files import write_json
    from tasks.steps.deploy import deploy
    from tasks.steps.model_card import write_card

    layout = RunLayout.of(spec.name, snapshot.run_key)
    with step("deploy", spec, layout.key) as out:
        rollout = get_current_context()["params"].get("rollout", "champion")
        deployment = deploy(spec.name, trained, verdict, snapshot, layout, rollout=rollout)
        write_card(spec, deployment, snapshot, trained, verdict, layout, approval)
        write_json(layout.deploy_file, deployment.to_xcom())
        out.summary = (f"{spec.name} version {deployment.version} is {deployment.alias}"
                       if deployment.moved else
                       f"{spec.name} version {deployment.version} registered; "
                       f"{deployment.note}")
    return deployment


def data_tasks(spec: UseCaseSpec, ignore: tuple[str, ...] = ()) -> tuple[Any, Any, Any]:
    """``ingest -> preprocess -> analyze``, as every pipeline DAG starts (in a DAG context).

    Args:
        spec: The use case.
        ignore: Trigger-form params of the DAG that are not the use case's (the tuning
            DAG's), left out of the run-param check.

    Returns:
        The snapshot, dataset and analysis XCom args (the drift check's verdict last:
        whatever must not run on drifted data goes downstream of it).

    """

    @task(task_id="ingest")
    def ingest() -> dict[str, Any]:
        return _ingest(spec, ignore).to_xcom()

    @task(task_id="preprocess")
    def preprocess(snapshot: dict[str, Any]) -> dict[str, Any]:
        return _preprocess(spec, Snapshot.from_xcom(snapshot)).to_xcom()

    @task(task_id="analyze")
    def analyze(snapshot: dict[str, Any], dataset: dict[str, Any]) -> dict[str, Any]:
        return _analyze(spec, Snapshot.from_xcom(snapshot), Dataset.from_xcom(dataset))

    snap = ingest()
    data = preprocess(snap)
    return snap, data, analyze(snap, data)


def release_tasks(spec: UseCaseSpec, snap: Any, data: Any, trained: Any) -> None:
    """``evaluate -> gate -> approve -> deploy`` of a trained model (in a DAG context).

    The same release path for the training and the tuning DAG: what ships is evaluated,
    gated, approved when asked and deployed the same way whatever trained it.
    """

    @task(task_id="evaluate")
    def evaluate(snapshot: dict[str, Any], dataset: dict[str, Any],
                 trained: dict[str, Any]) -> dict[str, Any]:
        return _evaluate(spec, Snapshot.from_xcom(snapshot), Dataset.from_xcom(dataset),
                         TrainedModel.from_xcom(trained)).to_xcom()

    @task.short_circuit(task_id="gate")
    def gate(snapshot: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any] | bool:
        verdict = _gate(spec, Snapshot.from_xcom(snapshot), Evaluation.from_xcom(evaluation))
        # A falsy return skips deploy: the run stops before deployment, reason logged.
        return verdict.to_xcom() if verdict.passed else False

    @task(task_id="deploy")
    def deploy(snapshot: dict[str, Any], trained: dict[str, Any],
               verdict: dict[str, Any], approval: dict[str, Any]) -> dict[str, Any]:
        return _deploy(spec, Snapshot.from_xcom(snapshot), TrainedModel.from_xcom(trained),
                       Verdict.from_xcom(verdict), approval).to_xcom()

    verdict = gate(snap, evaluate(snap, data, trained))
    approve = GateApproval(use_case=spec.name)
    verdict >> approve
    deploy(snap, trained, verdict, approve.output)


def parsing_wants(*dag_ids: str) -> bool:
    """Whether Airflow's parsing context wants a DAG file that builds ``dag_ids``.

    A parse for one DAG names it in the context; a parse without one (the scheduler's DAG
    processor, a DagBag in a test) wants every file.
    """
    current = get_parsing_context().dag_id
    return current is None or current in dag_ids


def wanted(use_case: str) -> bool:
    """Whether this parse of ``dags/<use case>.py`` should build the use case's DAGs.

    When Airflow parses the DAG folder for one DAG, it names that DAG in the parsing
    context (Airflow's optimisation for files that build many DAGs): a worker running one
    task does, and so does ``mlp run``'s ``dag.test()``, whose re-sync of the bundle
    otherwise builds, serializes and writes every use case's DAGs to the metadata database
    (2-3 s of a tiny run). The file builds the use case's DAG and its ``_score`` and
    ``_monitor`` DAGs, so any of the three ids wants it; no context (the scheduler's DAG
    processor, a DagBag in a test) wants every file.
    """
    return parsing_wants(use_case, *(use_case + s for s in LIFECYCLE_SUFFIXES))


def build_dag(use_case: UseCaseSpec | str) -> DAG:
    """Build the training pipeline DAG of one use case.

    Args:
        use_case: The use case's spec, or its name (looked up in :mod:`tasks.spec.catalog`).

    Returns:
        The DAG, with the spec's run params rendered as the trigger form.

    Raises:
        SpecError: The spec names an unknown model objective.

    """
    spec = catalog.get(use_case) if isinstance(use_case, str) else use_case
    if spec.model is not None:
        objectives.get(spec.model.objective)  # an unknown kind fails at parse time
    with DAG(
        dag_id=spec.name,
        description=(spec.description.strip().splitlines() or [spec.name])[0],
        doc_md=spec.description,
        schedule=dag_schedule(spec),
        # Without catchup no start date is needed, and none lets the cron wait for its next
        # point; catchup replays from START_DATE.
        start_date=START_DATE if spec.catchup else None,
        catchup=spec.catchup,
        max_active_runs=1,
        params=trigger_params(spec),
        tags=["mlp", *spec.tags],
        default_args={"owner": "mlp", "retries": 1, "retry_delay": retry_delay()},
    ) as dag:

        snap, data, checked = data_tasks(spec)
        if spec.model is None:  # a data-only use case (model still to come)
            return dag

        @task(task_id="train")
        def train(snapshot: dict[str, Any], dataset: dict[str, Any]) -> dict[str, Any]:
            return _train(spec, Snapshot.from_xcom(snapshot), Dataset.from_xcom(dataset)
                          ).to_xcom()

        trained = train(snap, data)
        checked >> trained  # a drift past a fail threshold stops the run before training
        release_tasks(spec, snap, data, trained)
    # After deploy: <use case>_score and <use case>_monitor (registered by Airflow too).
    build_lifecycle_dags(spec)
    return dag
