"""Every DAG file parses, without import errors, DB access, network, or heavy imports."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tasks.spec import catalog

DAGS = Path(__file__).resolve().parents[2] / "dags"

# Run in a fresh interpreter so sys.modules shows exactly what parsing imported. Sockets and
# SQLAlchemy connections raise, so a DAG that touches the DB or network at parse fails.
PARSE = r"""
import json, socket, sys
import sqlalchemy.engine

def _forbidden(*a, **k):
    raise RuntimeError("DB or network access while parsing DAGs")

socket.socket.connect = _forbidden
socket.create_connection = _forbidden
sqlalchemy.engine.Engine.connect = _forbidden

from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
heavy = sorted(m for m in ("tensorflow", "keras", "apache_beam", "mlflow", "sklearn")
               if m in sys.modules)
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": {d: {"tags": sorted(bag.dags[d].tags), "params": sorted(bag.dags[d].params.keys()),
                 "tasks": [t.task_id for t in bag.dags[d].topological_sort()],
                 "retries": [t.retries for t in bag.dags[d].tasks]} for d in bag.dags},
    "heavy": heavy,
}))
"""


def _parse(for_dag: str | None = None):
    env = {k: v for k, v in os.environ.items() if k != "_AIRFLOW_PARSING_CONTEXT_DAG_ID"}
    if for_dag is not None:  # as an Airflow worker (or mlp run's dag.test) parses for one DAG
        env["_AIRFLOW_PARSING_CONTEXT_DAG_ID"] = for_dag
    out = subprocess.run([sys.executable, "-c", PARSE, str(DAGS)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_dagbag_parses_every_use_case_without_side_effects():
    result = _parse()
    assert result["errors"] == {}
    assert result["heavy"] == [], f"heavy modules imported at parse time: {result['heavy']}"
    from tasks.orchestration.tuning import tunable

    names = [n for n in catalog.names() if (DAGS / f"{n}.py").exists()]
    with_model = [n for n in names if catalog.get(n).model is not None]
    tuning = {f"{n}_tune" for n in catalog.names() if tunable(catalog.get(n))}
    assert {"breast_cancer_tune", "mnist_tune"} <= tuning
    # Each use case with a model also gets its batch-scoring and monitoring DAGs.
    assert sorted(result["dags"]) == sorted(
        names + [f"{n}_score" for n in with_model] + [f"{n}_monitor" for n in with_model]
        + sorted(tuning))
    for dag_id in tuning:  # dags/tuning.py: trials as mapped tasks, then the same release
        dag = result["dags"].pop(dag_id)
        assert dag["tasks"] == ["ingest", "preprocess", "analyze", "study", "trial", "best",
                                "train", "evaluate", "gate", "approve", "deploy"]
        assert {"tune_trials", "tune_parallel", "tune_timeout", "epochs"} <= set(dag["params"])
        assert "tuning" in dag["tags"] and min(dag["retries"]) >= 1
    for dag_id, dag in result["dags"].items():
        assert "mlp" in dag["tags"], dag_id
        assert min(dag["retries"]) >= 1
        if dag_id.endswith("_monitor") and dag_id.removesuffix("_monitor") in with_model:
            assert dag["tasks"] == ["skew", "retrain"] and "monitoring" in dag["tags"]
            continue
        if dag_id.endswith("_score") and dag_id.removesuffix("_score") in with_model:
            assert dag["tasks"] == ["score"] and "scoring" in dag["tags"]
            assert {"source_dir", "version", "alias"} <= set(dag["params"])
            continue
        assert "source_dir" in dag["params"]
        if catalog.get(dag_id).model is None:  # data-only use case: stops after preprocessing
            assert dag["tasks"] == ["ingest", "preprocess", "analyze"]
            continue
        assert dag["tasks"] == ["ingest", "preprocess", "analyze", "train", "evaluate", "gate",
                                "approve", "deploy"]
        assert {"epochs", "batch_size", "require_approval", "rollout"} <= set(dag["params"])


def test_a_parse_for_one_dag_builds_only_its_use_case():
    # dag.test() writes every DAG it finds to the metadata database: the others cost seconds.
    assert sorted(_parse("breast_cancer")["dags"]) == [
        "breast_cancer", "breast_cancer_monitor", "breast_cancer_score"]
    assert sorted(_parse("mnist_score")["dags"]) == ["mnist", "mnist_monitor", "mnist_score"]
    assert sorted(_parse("mnist_tune")["dags"]) == ["mnist_tune"]
    assert _parse("no_such_dag")["dags"] == {}


def test_every_use_case_has_a_thin_dag_file():
    assert len((DAGS / "tuning.py").read_text().splitlines()) <= 10  # every <name>_tune
    for name in catalog.names():
        dag_file = DAGS / f"{name}.py"
        assert dag_file.is_file(), f"models/{name}.py has no DAG file dags/{name}.py"
        text = dag_file.read_text()
        assert len(text.splitlines()) <= 10, name
        assert f'build_dag("{name}")' in text


def test_the_retry_delay_comes_from_the_environment(monkeypatch):
    from datetime import timedelta

    from tasks.orchestration import build_dag
    from tasks.orchestration.tuning import build_tuning_dag

    monkeypatch.delenv("MLP_RETRY_DELAY", raising=False)
    assert build_dag("breast_cancer").task_dict["train"].retry_delay == timedelta(seconds=30)
    monkeypatch.setenv("MLP_RETRY_DELAY", "7")
    for dag in (build_dag("breast_cancer"), build_tuning_dag("breast_cancer")):
        assert dag.task_dict["train"].retry_delay == timedelta(seconds=7)
