"""Landing new raw data: validate it, snapshot it, announce it as an asset event.

``mlp ingest`` lands the files under ``$MLP_HOME/landing/<use case>/<stamp>`` (validated by
the use case's source, atomically) and records an event on ``mlp://<use case>/raw``:
through the REST API when the Airflow API server answers, else straight in the metadata
database, where the scheduler finds it when it starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.core.config import Settings, settings
from tasks.core.run import raw_asset_uri, scoring_asset_uri
from tasks.operations.airflow_api import AirflowClient, AirflowError
from tasks.operations.local import migrate_airflow_db
from tasks.spec import catalog

SCORING = "scoring"  # ``mlp ingest --for scoring``: input of the <use case>_score DAG


def landing_root(use_case: str, purpose: str = "training", s: Settings | None = None) -> Path:
    """``landing/<use case>`` (new training data) or ``scoring-landing/<use case>``."""
    s = s or settings()
    return s.root / ("scoring-landing" if purpose == SCORING else "landing") / use_case


def land(use_case: str, path: str | Path, s: Settings | None = None,
         max_bad_fraction: float | None = None, purpose: str = "training"
         ) -> tuple[Path, dict]:
    """Validate new raw data and snapshot it under ``$MLP_HOME/landing/<use_case>/<stamp>``.

    The copy is validated by the use case's data source (:func:`tasks.steps.ingest.ingest`) and
    appears atomically, so bad input leaves no partial snapshot behind. Its rows go through
    the row checks preprocessing applies, under ``max_bad_fraction`` (default: the run
    param's default, the use case's ``PreprocessSpec.max_bad_fraction``): what the
    triggered run would refuse is refused here, before anything is landed or announced.
    Input for batch scoring (``purpose="scoring"``: the raw format, label optional) is
    checked as scoring reads it (bad rows are quarantined when it is scored) and lands
    under ``$MLP_HOME/scoring-landing/<use_case>/<stamp>``.

    Returns:
        The snapshot directory and its manifest (files, checksums, facts).

    Raises:
        SourceError, IdxFormatError: The data is missing or malformed (the file is named).

    """
    from tasks.data.scoring import LandingView
    from tasks.steps.ingest import ingest

    s = s or settings()
    spec = catalog.get(use_case)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    dest = landing_root(use_case, purpose, s) / stamp
    if purpose == SCORING:  # scoring quarantines bad rows with reasons instead
        manifest = ingest(LandingView(spec.source, spec.preprocess.label), str(path), dest)
    else:
        if max_bad_fraction is None:
            max_bad_fraction = spec.preprocess.max_bad_fraction
        manifest = ingest(spec.source, str(path), dest, max_bad_fraction)
    return dest, manifest


def event_extra(dest: Path, manifest: Mapping[str, Any],
                max_bad_fraction: float | None = None) -> dict[str, Any]:
    """What the asset event carries: where the validated snapshot is, and what it holds.

    A tolerance given to ``mlp ingest`` travels too: the triggered run applies it.
    """
    extra = {"location": str(dest), "checksum": manifest["checksum"],
             "source": manifest["location"], "facts": manifest["facts"]}
    if max_bad_fraction is not None:
        extra["max_bad_fraction"] = max_bad_fraction
    return extra


def record_asset_event(uri: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """Record an asset event straight in the metadata DB (no API server running).

    This is what ``POST /api/v2/assets/events`` does server-side (Airflow's
    ``AssetManager.register_asset_change``): it stores the event and queues the consuming
    DAGs, which the scheduler turns into runs when it next runs. The asset row exists only
    once a DAG scheduled on it has been serialised, hence ``airflow dags reserialize`` first
    when it is missing.
    """
    migrate_airflow_db()
    from airflow.assets.manager import asset_manager
    from airflow.models.asset import AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = select(AssetModel).where(AssetModel.uri == uri)
    with create_session() as session:
        known = session.scalar(query) is not None
    if not known:
        out = subprocess.run([sys.executable, "-m", "airflow", "dags", "reserialize"],
                             capture_output=True, text=True, env=os.environ.copy())
        if out.returncode != 0:
            raise AirflowError(f"airflow dags reserialize failed: {out.stderr[-2000:]}")
    with create_session() as session:
        model = session.scalar(query)
        if model is None:
            raise AirflowError(f"asset {uri} is unknown: no DAG in dags/ schedules on it")
        event = asset_manager.register_asset_change(asset=model, extra=dict(extra),
                                                    session=session)
        if event is None:
            raise AirflowError(f"could not record an event for asset {uri}")
        return {"id": event.id, "asset_uri": uri, "extra": event.extra,
                "timestamp": event.timestamp.isoformat()}


def ingest_new_data(use_case: str, path: str | Path, client: AirflowClient | None = None,
                    s: Settings | None = None, max_bad_fraction: float | None = None,
                    purpose: str = "training") -> dict[str, Any]:
    """``mlp ingest``: validate, land, and announce new raw data of a use case.

    Data with more bad rows than ``max_bad_fraction`` (default: the use case's) is refused
    before anything is landed, and no event is recorded. With ``purpose="scoring"`` the
    data is batch-scoring input: it is announced on ``mlp://<use case>/scoring``, which the
    ``<use case>_score`` DAG runs on (its bad rows are quarantined when it is scored).

    Returns:
        ``{"landing": dir, "manifest": ..., "event": ..., "via": "rest" | "metadata-db"}``.

    """
    s = s or settings()
    dest, manifest = land(use_case, path, s, max_bad_fraction, purpose)
    uri = scoring_asset_uri(use_case) if purpose == SCORING else raw_asset_uri(use_case)
    extra = event_extra(dest, manifest, max_bad_fraction)
    client = client or AirflowClient.from_env(s)
    via = "rest" if client.reachable() else "metadata-db"
    try:
        event = (client.create_asset_event(uri, extra) if via == "rest"
                 else record_asset_event(uri, extra))
    except AirflowError as exc:
        raise AirflowError(f"{exc} (the data is landed and valid in {dest}; announce it again "
                           f"with POST /api/v2/assets/events, extra.location={dest})") from exc
    return {"landing": str(dest), "manifest": manifest, "via": via, "event": event,
            "asset": uri}
