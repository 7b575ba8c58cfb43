"""One DAG factory for every use case: ingest -> preprocess -> train -> evaluate -> gate -> deploy.

Tasks are thin wrappers around the pure step functions in ``tasks/``; XCom carries paths
and small dicts only. Heavy modules (TensorFlow, Beam, MLflow) are imported inside the
task callables, so parsing a DAG file costs only this module and the use-case spec.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, get_current_context, task

from tasks.config import safe_key, settings
from tasks.spec import UseCaseSpec

START_DATE = datetime(2026, 1, 1, tzinfo=UTC)


def run_key(context: Any) -> str:
    """Partition key of a DAG run: its logical date, else its run id (manual runs)."""
    dag_run = context["dag_run"]
    logical = getattr(dag_run, "logical_date", None)
    if logical is not None:
        return logical.strftime("%Y%m%dT%H%M%SZ")
    return safe_key(dag_run.run_id)


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
    with DAG(
        dag_id=spec.name,
        description=(spec.description.strip().splitlines() or [spec.name])[0],
        doc_md=spec.description,
        schedule=spec.schedule,
        start_date=START_DATE,
        catchup=False,
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
            manifest = ingest_step(spec.source, ctx["params"]["source_dir"], dest)
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
            from tasks.train import train as train_step

            s = settings()
            params = _model_params(get_current_context()["params"], spec)
            out = s.run_dir(spec.name, snapshot["run_key"]) / "train"
            result = train_step(spec, params, dataset["dataset_dir"], out, snapshot["run_key"],
                                snapshot["checksum"], s)
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
            from tasks.gate import run_gate
            from tasks.util import write_json

            verdict = run_gate(spec.name, spec.gate, evaluation)
            write_json(settings().run_dir(spec.name, snapshot["run_key"]) / "gate.json",
                       verdict.to_dict())
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

