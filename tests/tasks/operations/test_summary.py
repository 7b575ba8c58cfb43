"""A failed run's summary: the failed task, its first error line, the log file; no None."""

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
