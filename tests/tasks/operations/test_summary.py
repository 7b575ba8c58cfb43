"""A failed run's summary: the failed task, its first error line, the log file; no None."""

import time
from dataclasses import replace

import pytest

from tasks.cli import summary_lines
from tasks.core import progress
from tasks.core.config import settings
from tasks.operations.local import summarise
from tasks.spec import catalog
from tasks.steps.validate import ValidationError, ensure_valid


def test_failed_run_summary_names_task_error_and_log(tmp_path, monkeypatch):
    progress_file = tmp_path / "run.progress"
    log_file = tmp_path / "run.log"
    monkeypatch.setenv(progress.ENV, str(progress_file))
    spec = catalog.get("breast_cancer")
    bad = replace(spec, preprocess=replace(spec.preprocess, label="diagnosis"))
    with pytest.raises(ValidationError), progress.step("ingest", bad.name, "20260101T000000Z"):
        ensure_valid(bad, {}, dag_file=False)
    summary = summarise("breast_cancer", "20260101T000000Z", "failed", log_file,
                        progress_file, settings())
    assert summary["failed_task"] == "ingest"
    assert summary["error"].startswith("breast_cancer models/breast_cancer.py "
                                       "preprocess.label: 'diagnosis' is not a column")
    text = "\n".join(summary_lines(summary, settings()))
    assert "failed task     ingest: breast_cancer models/breast_cancer.py preprocess.label" \
        in text
    assert f"full log        {log_file}" in text
    assert "None" not in text and "MLflow run" not in text and "query" not in text


def test_failed_run_without_a_failed_step_points_at_the_log(tmp_path):
    summary = summarise("breast_cancer", "20260101T000001Z", "failed", tmp_path / "x.log",
                        tmp_path / "missing.progress", settings())
    text = "\n".join(summary_lines(summary, settings()))
    assert "failed task     none reported (the run failed before or between steps; see " \
           "the full log)" in text
    assert "None" not in text


def test_wall_time_splits_start_up_steps_fit_and_the_rest():
    from tasks.cli import wall_time_line
    from tasks.operations.local import WallClock

    clock = WallClock()
    assert clock.started <= time.time()  # this process's creation
    clock.started = time.time() - 60.0  # say the mlp process began 60 s ago ...
    clock.line("10:00:00 ▶ ingest     breast_cancer run 20260101T000000Z")
    clock.first_task -= 20.0  # ... and its first task 20 s ago
    clock.line("10:00:01 ▶ train      breast_cancer run 20260101T000000Z")  # not the first
    clock.line("10:00:02 ✓ ingest     2.5s  569 rows")
    clock.line("10:00:02   epoch 1/2 loss=0.5000 (1.0s)")
    clock.line("10:00:09 ✓ train      7.0s  test accuracy 0.95")
    clock.line("10:00:09 ✗ evaluate   failed after 0.5s: boom")  # no duration counted
    wall = clock.split(fit_seconds=4.0, install_seconds=12.0)
    assert wall["per_step"] == {"ingest": 2.5, "train": 7.0}
    assert wall["steps"] == pytest.approx(9.5)
    assert 39.0 < wall["start_up"] < 41.0 and wall["fit"] == 4.0
    assert wall["other"] > 9.0
    assert wall["start_up"] + wall["steps"] + wall["other"] == pytest.approx(wall["run"])
    assert wall["total"] == pytest.approx(wall["run"] + 12.0)
    line = wall_time_line(wall)
    assert line.startswith("install 12s + start-up ")
    assert "steps 10s (fit 4s)" in line and line.endswith("min)")
    summary = summarise("breast_cancer", "20260101T000002Z", "failed", None, None, settings())
    summary["wall_time"] = wall
    assert f"  wall time       {line}" in summary_lines(summary, settings())
