"""A CSV as users bring it, end to end (issue 20's acceptance).

A file with a text label, a text column, an integer code column, an empty cell and a
header with '/' and spaces goes through `mlp new --from-csv` (a module in a temporary
root), `mlp validate` (the empty cell, in seconds), a real Airflow run with
``max_bad_fraction=0.01`` (the row quarantined), the registry, and the REST server:
named JSON rows with strings in, class names out, warnings for an unseen category and an
out-of-range number, refused in strict mode.
"""

import json
import shutil
import time
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest

from tests.conftest import serving

pytestmark = pytest.mark.slow

HEADER = ["time on site (min)", "pages/visit", "region", "store code", "outcome"]


def write_csv(path, n=300, seed=7):
    """Visits whose outcome follows time, pages, region and store (separable, seeded)."""
    import csv

    rng = np.random.default_rng(seed)
    regions, codes = ["north", "south", "east", "west"], [101, 205, 307]
    rows = []
    for _ in range(n):
        region, code = regions[rng.integers(4)], codes[rng.integers(3)]
        minutes, pages = float(np.round(rng.gamma(2.0, 5.0), 1)), int(rng.integers(1, 30))
        score = (0.15 * minutes + 0.1 * pages + 1.5 * (region == "north")
                 + 1.0 * (code == 307) - 4)
        rows.append([minutes, pages, region, code, "buyer" if score > 0 else "browser"])
    rows[20][0] = ""  # an empty cell: line 22
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


def test_a_users_csv_trains_serves_named_rows_and_flags_odd_values(
        tmp_path, airflow_db, own_mlflow, monkeypatch):
    from tasks.core.config import REPO_ROOT
    from tasks.operations.scaffold import new_use_case
    from tasks.orchestration.dag_factory import build_dag
    from tasks.steps.validate import check_rows, validate
    from tests.tasks.operations.test_scaffold import load_spec
    from tests.tasks.orchestration.test_force_deploy_dag import _register_dag

    data = tmp_path / "data"
    data.mkdir()
    csv = write_csv(data / "visits.csv")
    root = tmp_path / "repo"
    shutil.copytree(REPO_ROOT / "models", root / "models")
    (root / "dags").mkdir()
    module, _ = new_use_case("visits", from_csv=str(csv), root=root)
    spec = load_spec(module)

    # mlp validate: the empty cell, with file, line and field, in seconds.
    started = time.perf_counter()
    assert validate(spec, {}, dag_file=False) == []
    problems, _ = check_rows(spec, {})
    seconds = time.perf_counter() - started
    assert f"{csv} line 22 field 'time on site (min)': missing value" in str(problems[0])
    assert "max_bad_fraction" in str(problems[0]) and seconds < 10, seconds
    assert check_rows(spec, {"max_bad_fraction": 0.01})[0] == []

    # The run, tolerating the bad row: it is quarantined, the rest trains.
    spec = replace(spec, gate=replace(spec.gate, min_value=0.5))  # tiny data, few epochs
    when = datetime(2026, 5, 1, tzinfo=UTC)
    dag = build_dag(spec)
    _register_dag(dag, tmp_path / "no_dags")
    dr = dag.test(logical_date=when, run_conf={
        "max_bad_fraction": 0.01, "epochs": 25, "source_dir": str(data)})
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert set(states.values()) == {"success"}, states
    from tasks.core.run import RunLayout, run_key

    layout = RunLayout.of("visits", run_key(when))
    (bad,) = [json.loads(x) for x in layout.quarantine_file.read_text().splitlines()]
    assert (bad["line"], bad["field"], bad["file"]) == (22, "time on site (min)", str(csv))
    evaluation = json.loads(layout.evaluation_file.read_text())
    assert evaluation["class_names"] == ["browser", "buyer"]
    assert evaluation["input_checks"]["rows"] == evaluation["data"]["rows"]
    assert "## Test rows outside the training schema" in (layout.run_dir / "model_card.md"
                                                          ).read_text()

    row = {"time on site (min)": 30.0, "pages/visit": 25, "region": "north",
           "store code": 307}
    odd = {"time on site (min)": 400.0, "pages/visit": 3, "region": "atlantis",
           "store code": 101}
    with serving(["visits"]) as base:
        url = f"{base}/v1/models/visits:predict"
        meta = httpx.get(f"{base}/v1/models/visits/metadata").json()
        inputs = meta["metadata"]["signature_def"]["signature_def"]["serving_default"][
            "inputs"]
        assert {k: v["dtype"] for k, v in inputs.items()} == {
            "time on site (min)": "DT_FLOAT", "pages/visit": "DT_INT64",
            "region": "DT_STRING", "store code": "DT_INT64"}
        assert [i["name"] for i in meta["mlp"]["inputs"]] == HEADER[:-1]
        r = httpx.post(url, json={"instances": [row, odd]}, timeout=30)
        assert r.status_code == 200, r.text
        good, flagged = r.json()["predictions"]
        assert good["label"] == "buyer" and "warnings" not in good, good
        assert flagged["label"] in ("browser", "buyer")
        assert {(w["field"], w["kind"]) for w in flagged["warnings"]} == {
            ("time on site (min)", "out_of_range"), ("region", "unseen_category")}
        assert r.headers["x-mlp-input-warnings"] == "2"
        # The old bare vector in field order still works, and answers bare.
        bare = httpx.post(url, json={"instances": [[30.0, 25, "north", 307]]}).json()
        assert np.isclose(bare["predictions"][0][0], good["probability"], atol=1e-6)
        checks = httpx.get(f"{base}/v1/models/visits/metadata").json()["mlp"]["input_checks"]
        assert checks["fields"]["region"] == {"unseen_category": 1}
    monkeypatch.setenv("MLP_SERVE_STRICT_INPUTS", "1")
    with serving(["visits"]) as base:
        url = f"{base}/v1/models/visits:predict"
        refused = httpx.post(url, json={"instances": [row, odd]}, timeout=30)
        assert refused.status_code == 400
        assert "instance 1: field 'time on site (min)' = 400.0 is outside" in refused.text
        assert httpx.post(url, json={"instances": [row]}).status_code == 200
