"""After deploy: each use case's batch-scoring and monitoring DAGs, from the same factory.

:func:`tasks.orchestration.dag_factory.build_dag` builds them beside the training DAG (a
use case's DAG file stays one line; Airflow registers every DAG built in a ``with``
block while the file is parsed):

- ``<use case>_score``: runs on its own asset ``mlp://<use case>/scoring`` (``mlp ingest
  <use case> DIR --for scoring`` lands the input and emits it) or when triggered with a
  ``source_dir``; one task ``score`` (:func:`tasks.steps.score.score`: Beam RunInference
  over the served model, Parquet under ``$MLP_HOME/scores/<use case>/<run key>/``, an
  MLflow run). Params ``version`` / ``alias`` choose the registry version.
- ``<use case>_monitor``: on ``DriftSpec.monitor_schedule`` (cron, UTC); ``skew``
  compares the requests the server logged since the last run with the champion's
  training data and answers (:func:`tasks.steps.monitor.monitor_requests`), report in
  MLflow; ``retrain`` then, only when a column is past its ``fail`` threshold and the
  spec's ``retrain_on_drift`` is on (off by default), emits an event on the raw-data
  asset ``mlp://<use case>/raw`` with the latest landed data, which starts a training
  run (its drift check is then told why it trains on drifted data).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Asset, CronTriggerTimetable, Param, get_current_context, task

from tasks.core import progress
from tasks.core.errors import PermanentError
from tasks.core.run import run_key, scoring_asset_uri
from tasks.orchestration.assets import raw_asset
from tasks.spec import UseCaseSpec

DEFAULT_ARGS = {"owner": "mlp", "retries": 1, "retry_delay": timedelta(seconds=30)}


def scoring_asset(use_case: str) -> Asset:
    """The asset whose events announce batch-scoring input (``mlp://<name>/scoring``)."""
    return Asset(uri=scoring_asset_uri(use_case), name=f"{use_case}_scoring",
                 group="mlp_scoring")


def _key(context: Any) -> str:
    dag_run = context["dag_run"]
    return run_key(getattr(dag_run, "logical_date", None), dag_run.run_id)


@contextlib.contextmanager
def _step(name: str, use_case: str, key: str) -> Iterator[progress.StepOutcome]:
    """Progress lines; a permanent error (bad input, unknown version) is not retried."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        with progress.step(name, use_case, key) as outcome:
            yield outcome
    except PermanentError as exc:
        raise AirflowFailException(str(exc)) from exc


def _scoring_location(context: Any, use_case: str) -> str | None:
    events = context.get("triggering_asset_events")
    if not events:
        return None
    try:
        received = events[scoring_asset(use_case)]
    except KeyError:
        return None
    for event in sorted(received, key=lambda e: e.timestamp, reverse=True):
        if (event.extra or {}).get("location"):
            return str(event.extra["location"])
    return None


def _score(spec: UseCaseSpec) -> dict[str, Any]:
    from pathlib import Path

    from tasks.core.files import remove_paths
    from tasks.steps.ingest import snapshot_origins
    from tasks.steps.score import score, scores_root

    ctx = get_current_context()
    params, key = ctx["params"], _key(ctx)
    with _step("score", spec.name, key) as out:
        root = scores_root(spec.name)
        remove_paths(sorted(root.glob(f".{key}.tmp-*")))  # left by a killed attempt
        location = _scoring_location(ctx, spec.name) or params.get("source_dir")
        if not location:
            raise PermanentError(f"{spec.name}_score: no input; land it with `mlp ingest "
                                 f"{spec.name} DIR --for scoring` or trigger with source_dir")
        landed = Path(location) / "manifest.json"
        result = score(spec, str(location), version=params.get("version") or None,
                       alias=params.get("alias") or None, run_key=key,
                       origins=snapshot_origins(Path(location)) if landed.is_file() else None)
        out.summary = (f"{result.rows} rows scored by v{result.version} "
                       f"({result.rows_per_s:.0f} rows/s), {result.quarantined} quarantined; "
                       f"drift {result.drift['status']}; {result.out_dir}")
    return {k: v for k, v in result.__dict__.items() if k != "files"}


LIFECYCLE_SUFFIXES = ("_score", "_monitor")  # DAG ids <use case>_score, <use case>_monitor


def build_score_dag(spec: UseCaseSpec) -> DAG:
    """``<use case>_score``: batch scoring on its own asset (or triggered with source_dir)."""
    with DAG(
        dag_id=f"{spec.name}{LIFECYCLE_SUFFIXES[0]}",
        description=f"Batch scoring of {spec.name} with a registered version (Beam "
                    "RunInference, Parquet out)",
        schedule=scoring_asset(spec.name),
        start_date=None,
        catchup=False,
        max_active_runs=1,
        params={
            "source_dir": Param("", type="string", description="File or folder to score "
                                "(the use case's raw format; the label is optional). Runs "
                                "started by `mlp ingest --for scoring` take the landed one"),
            "version": Param("", type="string", description="Registry version to score "
                             "with (default: the alias's)"),
            "alias": Param("champion", type="string", description="Registry alias to score "
                           "with when no version is given"),
        },
        tags=["mlp", "scoring", *spec.tags],
        default_args=DEFAULT_ARGS,
    ) as dag:

        @task(task_id="score")
        def score() -> dict[str, Any]:
            return _score(spec)

        score()
    return dag


def _skew(spec: UseCaseSpec) -> dict[str, Any]:
    from tasks.steps.monitor import monitor_requests

    ctx = get_current_context()
    key = _key(ctx)
    with _step("skew", spec.name, key) as out:
        summary = monitor_requests(spec, key)
        out.summary = f"{summary['requests']} logged requests: {summary['summary']}"
    return {k: summary[k] for k in ("status", "summary", "failing", "retrain", "requests")}


def _retrain(spec: UseCaseSpec, verdict: dict[str, Any]) -> str:
    from airflow.sdk.exceptions import AirflowSkipException

    from tasks.core.config import settings

    if not verdict.get("retrain"):
        why = ("retrain_on_drift is off in the spec" if verdict.get("failing")
               else "no column past its fail threshold")
        raise AirflowSkipException(f"no retraining: {why}")
    # What `mlp ingest` landed (tasks.operations.landing): one folder per stamp, in order.
    landed = sorted(p for p in (settings().root / "landing" / spec.name).glob("*")
                    if (p / "manifest.json").is_file())
    if not landed:
        raise AirflowSkipException(f"drift past fail ({', '.join(verdict['failing'])}) but "
                                   f"no landed data to retrain on (mlp ingest {spec.name} DIR)")
    ctx = get_current_context()
    reason = (f"retraining started by {spec.name}_monitor: logged requests drifted past "
              f"the fail threshold ({verdict['summary']})")
    ctx["outlet_events"][raw_asset(spec.name)].extra = {
        "location": str(landed[-1]), "force_drift_reason": reason[:2000],
        "source": f"{spec.name}_monitor"}
    return str(landed[-1])


def build_monitor_dag(spec: UseCaseSpec) -> DAG:
    """``<use case>_monitor``: logged requests -> skew report; optional retraining trigger."""
    cron = spec.drift.monitor_schedule
    with DAG(
        dag_id=f"{spec.name}{LIFECYCLE_SUFFIXES[1]}",
        description=f"Training/serving skew of {spec.name}: logged requests against the "
                    "champion's training data",
        schedule=CronTriggerTimetable(cron, timezone="UTC", run_immediately=timedelta(0))
        if cron else None,
        start_date=None,
        catchup=False,
        max_active_runs=1,
        tags=["mlp", "monitoring", *spec.tags],
        default_args=DEFAULT_ARGS,
    ) as dag:

        @task(task_id="skew")
        def skew() -> dict[str, Any]:
            return _skew(spec)

        @task(task_id="retrain", outlets=[raw_asset(spec.name)])
        def retrain(verdict: dict[str, Any]) -> str:
            return _retrain(spec, verdict)

        retrain(skew())
    return dag


def build_lifecycle_dags(spec: UseCaseSpec) -> tuple[DAG, DAG]:
    """The scoring and monitoring DAGs of a use case with a model."""
    return build_score_dag(spec), build_monitor_dag(spec)
