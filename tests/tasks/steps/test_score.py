"""Batch scoring on the in-process runner with a small registered model (no Airflow).

The model (:mod:`tests.tasks.steps.scoring_fixtures`) answers ``{"score", "flag"}`` and
its run carries the references a pipeline run logs, so the scoring run's drift report is
checked too: the scored file has V3 multiplied by 3.
"""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from models.creditcard_fraud import SPEC, V_COLUMNS, generate
from tasks.data.sources import SourceError
from tests.tasks.steps import scoring_fixtures

registered = scoring_fixtures.registered  # the fixture


def _scoring_file(tmp_path, rows, seed, times3=False, bad_line=None):
    import pyarrow as pa
    import pyarrow.csv as pv

    folder = tmp_path / f"in-{seed}"
    folder.mkdir()
    generate(folder, rows, seed)
    table = pv.read_csv(folder / "creditcard.csv").drop(["Class"])
    if times3:
        table = table.set_column(table.schema.get_field_index("V3"), "V3",
                                 pa.array(table["V3"].to_numpy() * 3))
    (folder / "creditcard.csv").unlink()
    path = folder / "transactions.csv"
    pv.write_csv(table, path, pv.WriteOptions(quoting_style="none"))
    if bad_line:
        lines = path.read_text().splitlines()
        lines[bad_line - 1] = lines[bad_line - 1].replace(",", ",,", 1)
        path.write_text("\n".join(lines) + "\n")
    return path


def test_scoring_writes_the_models_answers_with_row_keys_and_a_drift_report(registered,
                                                                            tmp_path):
    from tasks.core.config import settings
    from tasks.steps.score import score

    path = _scoring_file(tmp_path, 3000, 7, times3=True, bad_line=5)
    result = score(SPEC, str(path), run_key="k1", batch_size=700)
    out = settings().root / "scores" / SPEC.name / "k1"
    assert result.out_dir == str(out) and result.version == "1"
    assert result.rows == 2999 and result.quarantined == 1
    table = pq.read_table(out / "predictions").to_pandas().sort_values("line")
    assert list(table.columns) == ["file", "line", "score", "flag", "model", "version"]
    assert len(table) == 2999 and 5 not in set(table["line"]) and len(result.files) == 5
    assert set(table["file"]) == {str(path)} and set(table["version"]) == {"1"}
    # The answers are the model's own on the same rows (lines 2.. of the file).
    import pyarrow.csv as pv

    raw = pv.read_csv(path, parse_options=pv.ParseOptions(
        invalid_row_handler=lambda row: "skip")).to_pandas()
    x = raw[list(V_COLUMNS)].to_numpy(np.float32)
    want = registered.predict(x, verbose=0)
    np.testing.assert_allclose(table["score"].to_numpy(), want["score"], rtol=1e-5, atol=1e-6)
    assert (table["flag"].to_numpy() == want["flag"]).all()
    bad = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert [(b["file"], b["line"]) for b in bad] == [(str(path), 5)]
    assert "expected 30 fields, got 31" in bad[0]["reason"]
    # V3 x 3 is the only feature past a threshold (the score moves with it).
    report = json.loads((out / "drift" / "report.json").read_text())
    flagged = [c["name"] for c in report["columns"] if c["status"] in ("warn", "fail")]
    assert [c for c in flagged if not c.startswith("prediction:")] == ["V3"]
    assert (out / "drift" / "drift.png").stat().st_size > 10_000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run_id"] == result.run_id and summary["rows_per_s"] > 0
    # The MLflow run holds the version, the counts, the speed and the report.
    from tasks.tracking import configure

    run = configure().get_run(result.run_id)
    assert run.data.params["version"] == "1"
    assert run.data.metrics["rows"] == 2999 and run.data.metrics["quarantined_rows"] == 1
    assert run.data.metrics["rows_per_s"] > 0 and run.data.tags["drift.status"] == "fail"
    # Scoring the same run key again reuses the result.
    assert score(SPEC, str(path), run_key="k1").run_id == result.run_id


def test_scoring_refuses_unknown_versions_and_inputs_without_valid_rows(registered, tmp_path):
    from tasks.steps.score import ScoringError, score

    path = _scoring_file(tmp_path, 50, 8)
    with pytest.raises(ScoringError, match="no version 7"):
        score(SPEC, str(path), version="7")
    with pytest.raises(SourceError, match="no such file"):
        score(SPEC, str(tmp_path / "nothing.csv"))
    header = path.read_text().splitlines()[0]
    (tmp_path / "allbad.csv").write_text(header + "\n" + ",".join(["x"] * 30) + "\n")
    with pytest.raises(ScoringError, match=r"allbad.csv: no valid row to score .*line 2"):
        score(SPEC, str(tmp_path / "allbad.csv"), track=False)
