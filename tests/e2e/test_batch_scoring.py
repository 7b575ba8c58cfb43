"""Batch scoring and monitoring end to end, on models trained by real Airflow runs.

Tiny ``creditcard_fraud`` and ``mnist`` runs make the champions. Then:

- ``mlp score mnist <IDX dir>`` and ``mlp score creditcard_fraud <CSV>`` write Parquet
  predictions equal (1e-5) to what ``mlp serve`` (a server process on a free port)
  answers for the same rows; a malformed CSV row is quarantined with the user's file and
  line and the rest are scored;
- the same scoring on a Dask ``LocalCluster`` gives the same predictions;
- ``mlp ingest --for scoring`` lands input and announces it on ``mlp://<use case>/scoring``;
  the ``<use case>_score`` DAG scores it;
- the ``<use case>_monitor`` DAG turns logged requests (the request-log contract) into a
  skew report in MLflow, and, with ``retrain_on_drift``, announces the latest landed data
  on the raw-data asset with the reason.
"""

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from models.creditcard_fraud import SPEC as FRAUD
from models.creditcard_fraud import V_COLUMNS, generate
from models.mnist import SPEC as MNIST

pytestmark = pytest.mark.slow


def _relaxed(spec):
    return replace(spec, gate=replace(spec.gate, min_value=-1e9, max_regression=None))


@pytest.fixture(scope="module")
def champions(tmp_path_factory, airflow_db):
    """Fresh MLflow store; creditcard_fraud and mnist v1 trained by their DAGs."""
    from tasks.orchestration.dag_factory import build_dag
    from tests.conftest import digits_as_mnist, write_mnist_dir

    root = tmp_path_factory.mktemp("scoring")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    digits = write_mnist_dir(root / "digits", digits_as_mnist(400, 150, seed=3))
    runs = [(FRAUD, {"epochs": 2, "batch_size": 256, "source_dir": "synthetic:3000:4"},
             datetime(2026, 9, 1, tzinfo=UTC)),
            (MNIST, {"variant": "softmax", "epochs": 4, "batch_size": 32,
                     "learning_rate": 0.003, "validation_size": 50, "source_dir": str(digits)},
             datetime(2026, 9, 2, tzinfo=UTC))]
    for spec, conf, when in runs:
        dr = build_dag(_relaxed(spec)).test(logical_date=when, run_conf=conf)
        assert str(dr.state) == "success", spec.name
    yield {"root": root, "digits": digits}
    mp.undo()


def _transactions(folder, rows, seed, bad_line=None, times3=False):
    import pyarrow as pa
    import pyarrow.csv as pv

    folder.mkdir(parents=True, exist_ok=True)
    generate(folder, rows, seed)
    table = pv.read_csv(folder / "creditcard.csv").drop(["Class"])
    (folder / "creditcard.csv").unlink()
    if times3:
        table = table.set_column(table.schema.get_field_index("V3"), "V3",
                                 pa.array(table["V3"].to_numpy() * 3))
    path = folder / "transactions.csv"
    pv.write_csv(table, path, pv.WriteOptions(quoting_style="none"))
    if bad_line:
        lines = path.read_text().splitlines()
        fields = lines[bad_line - 1].split(",")
        fields[5] = "n/a"
        lines[bad_line - 1] = ",".join(fields)
        path.write_text("\n".join(lines) + "\n")
    return path


def _events(uri):
    """The asset events of one asset, oldest first (Airflow's metadata DB)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from sqlalchemy import select

    return (select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == uri).order_by(AssetEvent.id))


def _post(base, name, instances):
    r = httpx.post(f"{base}/v1/models/{name}:predict", json={"instances": instances},
                   timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["predictions"]


def test_parquet_predictions_equal_the_rest_answers(champions, tmp_path, capsys):
    from tasks.cli import main
    from tasks.core.config import settings
    from tasks.data.idx import read_idx
    from tests.tasks.serving.conftest import ServerProcess

    digits = champions["digits"]
    assert main(["score", "mnist", str(digits), "--out", str(tmp_path / "mnist")]) == 0
    printed = capsys.readouterr().out
    assert "scored 550 rows of" in printed and "with mnist v1" in printed
    assert "vs label     scored_accuracy=" in printed
    mnist = pq.read_table(tmp_path / "mnist" / "predictions").to_pandas()
    assert list(mnist.columns) == ["file", "row", "label", "probabilities", "model",
                                   "version"]

    csv = _transactions(tmp_path / "in", 1200, 11, bad_line=9)
    assert main(["score", "creditcard_fraud", str(csv), "--out", str(tmp_path / "fraud")]) == 0
    printed = capsys.readouterr().out
    assert "scored 1,199 rows" in printed  # 1,200 data lines, one malformed
    assert f"(first: {csv} line 9 field 'V5': not a number)" in printed
    bad = json.loads((tmp_path / "fraud" / "quarantine.jsonl").read_text())
    assert (bad["file"], bad["line"], bad["field"]) == (str(csv), 9, "V5")
    fraud = pq.read_table(tmp_path / "fraud" / "predictions").to_pandas()
    assert len(fraud) == 1199 and 9 not in set(fraud["line"])

    with ServerProcess(settings(), "--model", "mnist", "--model", "creditcard_fraud",
                       log=tmp_path / "serve.log") as server:
        for stem in ("t10k-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz"):
            images = read_idx(digits / stem)
            rows = mnist[mnist["file"] == str(digits / stem)].sort_values("row")[:40]
            answers = _post(server.base, "mnist",
                            images[rows["row"].to_numpy()].astype(float).tolist())
            np.testing.assert_allclose(np.stack(rows["probabilities"].map(np.stack)),
                                       np.asarray(answers), rtol=0, atol=1e-5)
        import pyarrow.csv as pv

        raw = pv.read_csv(csv, convert_options=pv.ConvertOptions(
            column_types={c: "string" for c in V_COLUMNS})).to_pandas()
        rows = fraud.sort_values("line")[:60]
        x = raw.loc[rows["line"].to_numpy() - 2, list(V_COLUMNS)].astype(float)
        answers = _post(server.base, "creditcard_fraud", x.to_numpy().tolist())
        np.testing.assert_allclose(rows["score"], [a["score"] for a in answers],
                                   rtol=1e-5, atol=1e-6)
        assert rows["flag"].tolist() == [a["flag"] for a in answers]


def test_a_dask_cluster_scores_the_same(champions, tmp_path):
    from distributed import LocalCluster

    from tasks.core.config import settings
    from tasks.steps.score import score

    csv = _transactions(tmp_path / "in", 900, 12, bad_line=4)
    direct = score(FRAUD, str(csv), out_dir=tmp_path / "direct", batch_size=300)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        s = replace(settings(), beam_runner="dask",
                    beam_options=(f"--dask_client_address={cluster.scheduler_address}",))
        dask = score(FRAUD, str(csv), out_dir=tmp_path / "dask", batch_size=300, s=s)
    assert (dask.rows, dask.quarantined, dask.files) == (direct.rows, direct.quarantined,
                                                         direct.files) == (
        899, 1, [f"predictions/part-00000-0000{i}.parquet" for i in range(3)])
    a = pq.read_table(tmp_path / "direct" / "predictions").to_pandas().sort_values("line")
    b = pq.read_table(tmp_path / "dask" / "predictions").to_pandas().sort_values("line")
    np.testing.assert_allclose(a["score"], b["score"], rtol=1e-6)
    assert a["line"].tolist() == b["line"].tolist() and a["flag"].tolist() == b["flag"].tolist()


def test_landed_input_is_scored_by_the_score_dag(champions, tmp_path):
    from airflow.utils.session import create_session

    from tasks.operations.landing import ingest_new_data
    from tasks.orchestration.lifecycle import build_score_dag

    csv = _transactions(tmp_path / "in", 400, 13, bad_line=3)
    landed = ingest_new_data("creditcard_fraud", str(csv.parent), purpose="scoring")
    assert landed["asset"] == "mlp://creditcard_fraud/scoring"
    assert landed["landing"].startswith(str(Path(landed["landing"]).parents[2] /
                                            "scoring-landing"))
    with create_session() as session:
        events = session.scalars(_events("mlp://creditcard_fraud/scoring")).all()
        assert events[-1].extra["location"] == landed["landing"]
    when = datetime(2026, 9, 3, tzinfo=UTC)
    dr = build_score_dag(FRAUD).test(logical_date=when,
                                     run_conf={"source_dir": landed["landing"]})
    assert {ti.task_id: str(ti.state) for ti in dr.get_task_instances()} == {"score": "success"}
    from tasks.core.config import settings

    out = settings().root / "scores" / "creditcard_fraud" / "20260903T000000Z"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == 399 and summary["quarantined"] == 1 and summary["run_id"]
    bad = json.loads((out / "quarantine.jsonl").read_text())
    assert bad["file"] == str(csv) and bad["line"] == 3  # the user's file, not the copy


def _log_requests(path, rows, seed, times3):
    """Request-log lines as the contract says ``mlp serve`` writes them (the champion's
    own signature names the inputs; its answers are the outputs)."""
    from tasks.data.requestlog import write_requests
    from tasks.data.scoring import scoring_input
    from tasks.steps.model_io import model_inputs, served_inputs
    from tasks.steps.references import named_outputs
    from tasks.tracking.loader import load_registered

    loaded = load_registered("creditcard_fraud", "1")
    folder = path.parent / f"src-{seed}"
    csv = _transactions(folder, rows, seed, times3=times3)
    si = scoring_input(FRAUD.source, str(csv), "Class")
    batch = next(si.read_batches(0, rows))
    x = served_inputs(FRAUD, loaded.model, batch)
    out = named_outputs(loaded.model, loaded.predict(x))
    names = [n for n, _, _ in model_inputs(loaded.model)]
    records = []
    for i in range(0, rows, 5):
        sl = slice(i, i + 5)
        inputs = ({k: v[sl].tolist() for k, v in x.items()} if isinstance(x, dict)
                  else {names[0]: x[sl].tolist()})
        records.append({"ts": f"2026-09-04T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
                        "model": "creditcard_fraud", "version": "1", "status": 200,
                        "latency_ms": 2.0, "n": 5, "inputs": inputs,
                        "outputs": {k: v[sl].tolist() for k, v in out.items()}})
    return write_requests(path, records)


def test_the_monitor_dag_turns_logged_requests_into_a_skew_report(champions, tmp_path,
                                                                  capsys):
    from airflow.utils.session import create_session

    from tasks.cli import main
    from tasks.core.config import settings
    from tasks.data.requestlog import log_dir
    from tasks.operations.landing import land
    from tasks.orchestration.lifecycle import build_monitor_dag
    from tasks.tracking import configure

    logs = log_dir(settings().root, "creditcard_fraud")
    _log_requests(logs / "requests-20260904T000000000000Z.jsonl", 600, 14, times3=True)
    (logs / "requests-20260904T010000000000Z.jsonl.open").write_text("{not closed yet\n")
    dr = build_monitor_dag(FRAUD).test(logical_date=datetime(2026, 9, 4, tzinfo=UTC))
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert states == {"skew": "success", "retrain": "skipped"}  # retrain_on_drift is off
    client = configure()
    exp = client.get_experiment_by_name("creditcard_fraud-monitoring")
    (run,) = client.search_runs([exp.experiment_id], "tags.monitor_key = '20260904T000000Z'")
    assert run.data.tags["skew.status"] == "fail" and run.data.metrics["instances"] == 600
    assert "V3 psi" in run.data.tags["skew.summary"]
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "skew/skew-v1")}
    assert {"skew/skew-v1/report.md", "skew/skew-v1/report.json",
            "skew/skew-v1/drift.png"} <= arts

    # mlp monitor prints the per-column table of every closed log file.
    assert main(["monitor", "creditcard_fraud"]) == 0
    table = capsys.readouterr().out
    assert "120 logged requests (600 instances) in 1 files" in table
    v3 = next(line for line in table.splitlines() if line.startswith("V3 "))
    assert v3.split()[-1] == "FAIL"

    # With retrain_on_drift, new drifted requests announce the latest landed data.
    fresh = tmp_path / "fresh"  # new training data (the training format, with Class)
    fresh.mkdir()
    generate(fresh, 300, 15)
    landed, _ = land("creditcard_fraud", str(fresh))
    _log_requests(logs / "requests-20260905T000000000000Z.jsonl", 600, 16, times3=True)
    eager = replace(FRAUD, drift=replace(FRAUD.drift, retrain_on_drift=True))
    dr = build_monitor_dag(eager).test(logical_date=datetime(2026, 9, 5, tzinfo=UTC))
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert states == {"skew": "success", "retrain": "success"}
    with create_session() as session:
        event = session.scalars(_events("mlp://creditcard_fraud/raw")).all()[-1]
        assert event.extra["location"] == str(landed)
        assert "drifted past the fail threshold" in event.extra["force_drift_reason"]
