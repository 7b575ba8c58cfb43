"""One DAG factory for every use case: ingest -> preprocess -> train -> evaluate -> gate -> deploy.

Tasks are thin wrappers around the pure step functions in ``tasks/``; XCom carries paths
and small dicts only. Heavy modules (TensorFlow, Beam, MLflow) are imported inside the
task callables, so parsing a DAG file costs only this module and the use-case spec.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import (
    DAG,
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    get_current_context,
    task,
)

from tasks.config import safe_key, settings
from tasks.operate import raw_asset_uri
from tasks.spec import UseCaseSpec

START_DATE = datetime(2026, 1, 1, tzinfo=UTC)


def run_key(context: Any) -> str:
    """Partition key of a DAG run: its logical date, else its run id (manual runs)."""
    dag_run = context["dag_run"]
    logical = getattr(dag_run, "logical_date", None)
    if logical is not None:
        return logical.strftime("%Y%m%dT%H%M%SZ")
    return safe_key(dag_run.run_id)


def raw_asset(use_case: str) -> Asset:
    """The asset whose events announce new raw data of a use case (``mlp://<name>/raw``)."""
    return Asset(uri=raw_asset_uri(use_case), name=f"{use_case}_raw", group="mlp_raw")


def dag_schedule(spec: UseCaseSpec) -> Asset | AssetOrTimeSchedule:
    """New data (an event on :func:`raw_asset`) OR the spec's cron string, when it has one.

    Each asset event queues one run; the cron is read in UTC. ``run_immediately=0`` keeps
    catchup off for the first run too: a DAG that appears (or is unpaused) just after a cron
    point waits for the next one instead of starting a surprise training run.
    """
    asset = raw_asset(spec.name)
    if spec.schedule is None:
        return asset
    cron = CronTriggerTimetable(spec.schedule, timezone="UTC", run_immediately=timedelta(0))
    return AssetOrTimeSchedule(timetable=cron, assets=asset)


def triggering_location(context: Any, use_case: str) -> str | None:
    """Raw-data location carried by the newest asset event that triggered this run, if any.

    ``mlp ingest`` puts the validated landing snapshot in the event's ``extra["location"]``;
    runs started by the cron or by an operator have no such event.
    """
    events = context.get("triggering_asset_events")
    if not events:
        return None
    try:
        received = events[raw_asset(use_case)]
    except KeyError:
        return None
    for event in sorted(received, key=lambda e: e.timestamp, reverse=True):
        location = (event.extra or {}).get("location")
        if location:
            return str(location)
    return None


def _model_params(params: Any, spec: UseCaseSpec) -> dict[str, Any]:
    return {k: params[k] for k in spec.params}


def build_dag(spec: UseCaseSpec) -> DAG:
    """Build the training pipeline DAG of one use case.

    Args:
        spec: The use case (from ``models.<name>.SPEC``).

    Returns:
        The DAG, with the spec's run params rendered as the trigger form.

    """
    params = {name: Param(p.default, **p.schema()) for name, p in spec.params.items()}
    params["source_dir"] = Param(
        spec.source.default_location, type="string",
        description="Directory holding the raw input files to ingest",
    )
    params["force_deploy"] = Param(
        False, type="boolean",
        description="Operator override: deploy even if the gate fails (needs force_reason)",
    )
    params["force_reason"] = Param(
        "", type="string",
        description="Why the gate is overridden; required with force_deploy, kept on the version",
    )
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
        params=params,
        tags=["mlp", *spec.tags],
        default_args={"owner": "mlp", "retries": 1, "retry_delay": timedelta(seconds=30)},
    ) as dag:

        @task
        def ingest() -> dict[str, Any]:
            from tasks.ingest import ingest as ingest_step

            ctx = get_current_context()
            key = run_key(ctx)
            dest = settings().raw_dir(spec.name, key)
            location = triggering_location(ctx, spec.name) or ctx["params"]["source_dir"]
            manifest = ingest_step(spec.source, location, dest)
            return {"run_key": key, "snapshot_dir": str(dest), "checksum": manifest["checksum"]}

        @task
        def preprocess(snapshot: dict[str, Any]) -> dict[str, Any]:
            from pathlib import Path

            from tasks.ingest import snapshot_files
            from tasks.preprocess import preprocess as preprocess_step

            s = settings()
            params = get_current_context()["params"]
            split = spec.split
            if "validation_size" in params:
                split = replace(split, validation_size=int(params["validation_size"]))
            out = s.run_dir(spec.name, snapshot["run_key"]) / "dataset"
            manifest = preprocess_step(
                spec.source, snapshot_files(Path(snapshot["snapshot_dir"])), spec.preprocess,
                split, out, runner=s.beam_runner, runner_options=s.beam_options,
            )
            return {"dataset_dir": str(out),
                    "rows": {k: v["rows"] for k, v in manifest["splits"].items()}}

        @task
        def train(snapshot: dict[str, Any], dataset: dict[str, Any]) -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowFailException

            from tasks.train import TrainingDiverged
            from tasks.train import train as train_step

            s = settings()
            params = _model_params(get_current_context()["params"], spec)
            out = s.run_dir(spec.name, snapshot["run_key"]) / "train"
            try:
                result = train_step(spec, params, dataset["dataset_dir"], out,
                                    snapshot["run_key"], snapshot["checksum"], s)
            except TrainingDiverged as exc:  # deterministic: a retry would diverge again
                raise AirflowFailException(str(exc)) from exc
            return {k: v for k, v in result.items() if k != "history"}

        @task
        def evaluate(snapshot: dict[str, Any], dataset: dict[str, Any],
                     trained: dict[str, Any]) -> dict[str, Any]:
            from tasks.evaluate import evaluate as evaluate_step

            s = settings()
            out = s.run_dir(spec.name, snapshot["run_key"]) / "evaluation"
            return evaluate_step(spec, dataset["dataset_dir"], trained, out, s)

        @task.short_circuit
        def gate(snapshot: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any] | bool:
            from airflow.sdk.exceptions import AirflowFailException

            from tasks.gate import ForceWithoutReason, run_gate
            from tasks.util import write_json

            params = get_current_context()["params"]
            run_dir = settings().run_dir(spec.name, snapshot["run_key"])
            try:
                verdict = run_gate(spec.name, spec.gate, evaluation,
                                   force_deploy=bool(params.get("force_deploy", False)),
                                   force_reason=params.get("force_reason", ""),
                                   out_dir=run_dir / "gate")
            except ForceWithoutReason as exc:
                raise AirflowFailException(str(exc)) from exc  # retrying cannot fix a param
            write_json(run_dir / "gate.json", verdict.to_dict())
            # A falsy return skips deploy: the run stops before deployment, reason logged.
            return verdict.to_dict() if verdict.passed else False

        @task
        def deploy(snapshot: dict[str, Any], dataset: dict[str, Any], trained: dict[str, Any],
                   verdict: dict[str, Any]) -> dict[str, Any]:
            from pathlib import Path

            from tasks.deploy import deploy as deploy_step
            from tasks.util import write_json

            s = settings()
            result = deploy_step(
                spec.name, trained, verdict, snapshot["run_key"], snapshot["checksum"],
                (Path(dataset["dataset_dir"]) / "stats.json").as_uri(), s,
            )
            write_json(s.run_dir(spec.name, snapshot["run_key"]) / "deploy.json", result)
            return result

        snap = ingest()
        data = preprocess(snap)
        if spec.model is None:  # a data-only use case (model still to come)
            return dag
        trained = train(snap, data)
        evaluation = evaluate(snap, data, trained)
        verdict = gate(snap, evaluation)
        deploy(snap, data, trained, verdict)
    return dag

