"""Operating without services: schedules, `mlp ingest` and `mlp retrain` on the embedded stack.

The REST paths (API server up) run in tests/integration/test_scaled_out.py.
"""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest


@pytest.fixture()
def no_api_server(monkeypatch):
    """Point the CLI at a loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLP_AIRFLOW_URL", f"http://127.0.0.1:{port}")


def test_schedule_is_the_spec_cron_or_new_data_with_catchup_off():
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import TimeRestriction

    from tasks.orchestration.dag_factory import START_DATE, build_dag
    from tasks.spec import SpecError, catalog

    spec = catalog.get("mnist")
    assert spec.schedule == "0 3 * * 1" and spec.catchup is False
    dag = build_dag(spec)
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    assert isinstance(dag.timetable.timetable, CronTriggerTimetable)
    assert dag.timetable.timetable.expression == "0 3 * * 1"
    assert dag.timetable.asset_condition.uri == "mlp://mnist/raw"
    assert dag.catchup is False and dag.start_date is None
    # As the scheduler sees it: the first cron run is the next point, never a past one.
    served = DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable.timetable
    first = served.next_dagrun_info(last_automated_data_interval=None,
                                    restriction=TimeRestriction(None, None, False))
    now = datetime.now(UTC)
    assert now < first.run_after <= now + timedelta(days=7)
    assert first.run_after.weekday() == 0 and (first.run_after.hour, first.run_after.minute) \
        == (3, 0)

    data_only = build_dag(replace(spec, name="mnist_data_only", schedule=None))
    assert data_only.timetable.asset_condition.uri == "mlp://mnist_data_only/raw"
    assert not hasattr(data_only.timetable, "timetable")  # new data only, no cron
    assert build_dag(replace(spec, name="mnist_catchup", catchup=True)).start_date == START_DATE
    with pytest.raises(SpecError, match="not a valid cron"):
        replace(spec, schedule="every monday")


def test_ingest_of_a_malformed_file_names_it_and_lands_nothing(mnist_dir, capsys,
                                                               no_api_server):
    from tasks.cli import main
    from tasks.core.config import settings

    (mnist_dir / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    assert main(["ingest", "mnist", str(mnist_dir)]) == 1
    err = capsys.readouterr().err
    assert "ingest failed" in err and "t10k-labels-idx1-ubyte.gz" in err
    landing = settings().root / "landing" / "mnist"
    assert not landing.exists() or list(landing.iterdir()) == []  # no snapshot, no temp dir

    assert main(["ingest", "mnist", str(mnist_dir / "nope")]) == 1
    assert "source directory does not exist" in capsys.readouterr().err
    assert main(["ingest", "no_such_use_case", str(mnist_dir)]) == 2
    assert "unknown use case 'no_such_use_case'" in capsys.readouterr().err


@pytest.mark.slow
def test_ingest_without_services_records_the_asset_event(airflow_db, mnist_dir, capsys,
                                                         no_api_server):
    """The event lands in the metadata DB and queues the mnist DAG for the scheduler."""
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from tasks.cli import main
    from tasks.core.config import settings

    assert main(["ingest", "mnist", str(mnist_dir), "--json"]) == 0
    # Airflow, imported by the fixture, logs to the stdout pytest captures; the CLI's own
    # stdout holds only the document (main() sends the rest to stderr).
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{\n"):] if not out.startswith("{") else out)
    assert result["via"] == "metadata-db"
    landing = settings().root / "landing" / "mnist"
    assert [str(p) for p in landing.iterdir()] == [result["landing"]]
    manifest = json.loads((landing / result["landing"] / "manifest.json").read_text())
    assert manifest["facts"] == {"train": {"rows": 300}, "test": {"rows": 100}, "rows": 400,
                                 "bad_rows": 0}
    with create_session() as session:
        asset = session.scalar(select(AssetModel).where(AssetModel.uri == "mlp://mnist/raw"))
        events = session.scalars(select(AssetEvent).where(AssetEvent.asset_id == asset.id)).all()
        assert [e.extra["location"] for e in events] == [result["landing"]]
        assert events[0].extra["checksum"] == manifest["checksum"]
        queued = session.scalars(select(AssetDagRunQueue.target_dag_id)
                                 .where(AssetDagRunQueue.asset_id == asset.id)).all()
        assert "mnist" in queued


@pytest.mark.slow
def test_retrain_without_services_runs_in_process(airflow_db, own_mlflow, mnist_dir, capsys,
                                                  no_api_server):
    from tasks.cli import format_outcome, main
    from tasks.operations.retrain import retrain

    assert main(["retrain", "mnist", "--param", "nope=1"]) == 2  # a usage error, before Airflow
    assert "mlp retrain: --param nope: unknown run param" in capsys.readouterr().err
    conf = {"variant": "softmax", "epochs": 2, "batch_size": 32, "learning_rate": 0.01,
            "validation_size": 50, "source_dir": str(mnist_dir)}
    result = retrain("mnist", conf, wait=True, logical_date=datetime(2026, 5, 4, tzinfo=UTC))
    assert result["via"] == "in-process" and result["state"] == "success"
    assert result["run_key"] == "20260504T000000Z"
    assert result["params"]["epochs"] == 2 and result["params"]["variant"] == "softmax"
    assert result["gate"]["metric"] == "test_accuracy"
    text = format_outcome(result)
    assert ("PASSED" if result["gate"]["passed"] else "FAILED") in text
    if result["gate"]["passed"]:
        assert f"version {result['deploy']['version']} (alias champion" in text
    else:
        assert result["deploy"] == {} and "registered  nothing" in text
