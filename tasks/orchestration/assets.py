"""Schedules and data assets: when a use case's DAG runs.

A DAG runs on its spec's cron (UTC) OR when new raw data is announced: an event on the
asset ``mlp://<use case>/raw`` (``mlp ingest`` emits it, carrying the landed snapshot's
location in ``extra["location"]``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable

from tasks.core.run import raw_asset_uri
from tasks.spec import UseCaseSpec


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


def triggering_extra(context: Any, use_case: str, key: str) -> Any:
    """``extra[key]`` of the newest triggering raw-data event that has it (not None or "").

    E.g. ``force_drift_reason``: a retraining started by the monitoring DAG on drift says
    why the drifted data is trained on; ``location`` and ``max_bad_fraction`` below.
    """
    events = context.get("triggering_asset_events")
    if not events:
        return None
    try:
        received = events[raw_asset(use_case)]
    except KeyError:
        return None
    for event in sorted(received, key=lambda e: e.timestamp, reverse=True):
        value = (event.extra or {}).get(key)
        if value is not None and value != "":
            return value
    return None


def triggering_location(context: Any, use_case: str) -> str | None:
    """Raw-data location carried by the newest asset event that triggered this run, if any.

    ``mlp ingest`` puts the validated landing snapshot in the event's ``extra["location"]``;
    runs started by the cron or by an operator have no such event.
    """
    location = triggering_extra(context, use_case, "location")
    return None if location is None else str(location)


def triggering_tolerance(context: Any, use_case: str) -> float | None:
    """The ``max_bad_fraction`` the newest triggering ``mlp ingest`` landed its data under.

    ``mlp ingest --param max_bad_fraction=F`` checks the rows under ``F`` and records it in
    the event, so that the run it triggers quarantines the same rows instead of refusing
    them. None when no such event triggered the run.
    """
    value = triggering_extra(context, use_case, "max_bad_fraction")
    return None if value is None else float(value)
