"""Malformed input fails its task once (no retry), naming the user's file, row and field.

Each case is a real `mlp run` (child process, Airflow ``dag.test()``); the summary is what
the operator reads.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _run(use_case, conf, day):
    from tasks.operations.local import run_pipeline

    lines: list[str] = []
    summary = run_pipeline(use_case, conf, datetime(2026, 7, day, tzinfo=UTC),
                           echo=lines.append)
    return summary, lines


def test_malformed_inputs_fail_once_naming_the_users_file(airflow_db, own_mlflow, mnist_dir,
                                                          tmp_path):
    from tasks.data.idx import write_idx

    # An IDX file of the wrong kind: images where the test labels belong.
    labels = mnist_dir / "t10k-labels-idx1-ubyte.gz"
    write_idx(labels, np.zeros((100, 28, 28), np.uint8))
    summary, lines = _run("mnist", {"source_dir": str(mnist_dir), "epochs": 1}, 1)
    assert summary["state"] == "failed"
    assert summary["failed_task"] == "ingest"
    assert str(labels.resolve()) in summary["error"] and ".tmp-" not in summary["error"]
    assert "bad magic number 0x00000803" in summary["error"]
    assert sum("▶ ingest" in line for line in lines) == 1  # failed once: no retry
    assert Path(summary["log_file"]).is_file()
    assert "mlflow_run_id" not in summary and None not in summary.values()

    # A CSV row with a non-numeric value: ingest runs preprocessing's row checks and
    # names file, line and field before anything is landed.
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True).frame
    data.columns = [c.replace(" ", "_") for c in data.columns]
    source = tmp_path / "bc"
    source.mkdir()
    csv = source / "breast_cancer.csv"
    data.to_csv(csv, index=False)
    rows = csv.read_text().splitlines()
    rows[7] = "abc" + rows[7][rows[7].index(","):]  # line 8: mean_radius is not a number
    csv.write_text("\n".join(rows) + "\n")
    summary, lines = _run("breast_cancer", {"source_dir": str(source), "epochs": 1}, 2)
    assert summary["failed_task"] == "ingest"
    assert f"{csv.resolve()} line 8 field 'mean_radius': not a number" in summary["error"]
    assert "max_bad_fraction" in summary["error"]
    assert sum("▶ ingest" in line for line in lines) == 1
    assert csv.read_text().splitlines()[7].startswith("abc")  # raw data untouched
