"""A training run on drifted data stops before ``train``; forcing it with a reason proceeds.

Real Airflow runs of the credit-card DAG: the first run on synthetic data makes the
champion; the second run's data has one feature (V3) multiplied by 3, which its
``analyze`` task finds past the fail threshold against the champion's training data, so
``train`` never starts and nothing is registered; the same run re-run with
``force_drift=true`` and a reason trains, deploys and the model card says why.
"""

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from models.creditcard_fraud import SPEC, generate

pytestmark = pytest.mark.slow

CONF = {"epochs": 2, "batch_size": 256}


def _drifted(path, rows, seed):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pv

    generate(path, rows, seed)
    table = pv.read_csv(path / "creditcard.csv")
    i = table.schema.get_field_index("V3")
    table = table.set_column(i, "V3", pc.multiply(table["V3"], pa.scalar(3.0)))
    pv.write_csv(table, path / "creditcard.csv", pv.WriteOptions(quoting_style="none"))
    return path


def test_drift_past_fail_stops_before_train_and_forcing_needs_a_reason(airflow_db, own_mlflow,
                                                                      tmp_path):
    from tasks.core.files import read_json
    from tasks.core.run import RunLayout
    from tasks.orchestration.dag_factory import build_dag
    from tasks.steps.drift_check import DriftFailed, check_training_data
    from tasks.steps.ingest import snapshot_files
    from tasks.tracking import configure

    # Tiny data cannot reach the real bar, and the forced candidate is not judged
    # against the champion here: this test is about the drift check.
    spec = replace(SPEC, gate=replace(SPEC.gate, min_value=-1e9, max_regression=None))
    dag = build_dag(spec)
    base = tmp_path / "base"
    base.mkdir()
    generate(base, 6000, 2)
    first = dag.test(logical_date=datetime(2026, 5, 1, tzinfo=UTC),
                     run_conf={**CONF, "source_dir": str(base)})
    assert str(first.state) == "success"
    verdict1 = read_json(RunLayout.of(SPEC.name, "20260501T000000Z").drift_dir / "verdict.json")
    assert verdict1["status"] == "no champion"

    drifted = tmp_path / "drifted"
    drifted.mkdir()
    _drifted(drifted, 4000, 9)
    when = datetime(2026, 5, 2, tzinfo=UTC)
    stopped = dag.test(logical_date=when, run_conf={**CONF, "source_dir": str(drifted)})
    states = {ti.task_id: str(ti.state) for ti in stopped.get_task_instances()}
    assert states["analyze"] == "failed" and states["train"] == "upstream_failed", states
    client = configure()
    assert [str(v.version) for v in client.search_model_versions(f"name='{SPEC.name}'")] == ["1"]
    layout = RunLayout.of(SPEC.name, "20260502T000000Z")
    verdict = read_json(layout.drift_dir / "verdict.json")
    assert [c for c in verdict["failing"] if not c.startswith("prediction:")] == ["V3"]
    assert verdict["champion_version"] == "1" and not verdict["forced"]
    report = json.loads((layout.drift_dir / "report.json").read_text())
    flagged = {c["name"] for c in report["columns"] if c["status"] in ("warn", "fail")}
    assert {c for c in flagged if not c.startswith("prediction:")} == {"V3"}
    assert (layout.drift_dir / "drift.png").stat().st_size > 10_000
    assert (layout.analysis_dir / "data_analysis.html").is_file()
    # The message the failed task logged names the feature and the way to force it.
    with pytest.raises(DriftFailed, match=r"V3 \(psi .* >= 0.25\).*force_drift=true"):
        check_training_data(spec, snapshot_files(layout.raw_dir), layout.dataset_dir,
                            tmp_path / "again", layout.key)

    # Forcing without a reason is refused; with one the run trains and deploys.
    no_reason = dag.test(logical_date=when, run_conf={**CONF, "source_dir": str(drifted),
                                                      "force_drift": True})
    assert {ti.task_id: str(ti.state) for ti in no_reason.get_task_instances()}[
        "analyze"] == "failed"
    forced = dag.test(logical_date=when, run_conf={
        **CONF, "source_dir": str(drifted), "force_drift": True,
        "force_drift_reason": "new card fleet scales V3; retrain on it"})
    states = {ti.task_id: str(ti.state) for ti in forced.get_task_instances()}
    assert set(states.values()) == {"success"}, states
    champion = client.get_model_version_by_alias(SPEC.name, "champion")
    assert str(champion.version) == "2"
    assert "FORCED by operator" in champion.description
    assert "new card fleet scales V3" in champion.description and "V3" in champion.description
    run = client.get_run(champion.run_id)
    assert run.data.tags["drift.forced"] == "true" and run.data.tags["drift.status"] == "fail"
    artifacts = {a.path for a in client.list_artifacts(champion.run_id, "drift")}
    assert {"drift/report.md", "drift/report.json", "drift/drift.png"} <= artifacts
    pages = {a.path for a in client.list_artifacts(champion.run_id, "analysis")}
    assert "analysis/data_analysis.html" in pages
    refs = {a.path for a in client.list_artifacts(champion.run_id, "monitoring")}
    assert refs == {"monitoring/predictions.json"}
