"""The gate against a real MLflow store: verdicts, the side-by-side report, the override."""

import json
from pathlib import Path

import pytest

from tasks.core.run import Evaluation
from tasks.spec import GateSpec
from tasks.steps.gate import ForceWithoutReason, apply_override, decide, run_gate
from tasks.steps.gate_report import build_report, render_markdown
from tests.tasks.conftest import register

GATE = GateSpec(metric="test_accuracy", min_value=0.5, max_regression=0.01)


def _test_metrics(client, run_id):
    return {k: v for k, v in client.get_run(run_id).data.metrics.items()
            if k.startswith("test_")}


def candidate_from(s, source, champion=None, version="1"):
    """A fresh candidate run with the same metrics, history and evaluation report.

    With ``champion`` (a logged fixture scored on the same 200 test digits), the
    evaluation carries the champion's figures on the same rows, as the evaluation step
    writes them.
    """
    import tempfile

    import mlflow

    from tasks import tracking
    from tasks.core.files import write_json

    client = tracking.configure(s)
    src = client.get_run(source.run_id)
    report = mlflow.artifacts.load_dict(f"runs:/{source.run_id}/evaluation/evaluation.json")
    with mlflow.start_run(experiment_id=src.info.experiment_id, run_name="candidate") as run:
        for key in src.data.metrics:
            for m in client.get_metric_history(source.run_id, key):
                mlflow.log_metric(key, m.value, step=m.step)
        mlflow.log_dict(report, "evaluation/evaluation.json")
    champ = None
    if champion is not None:
        same = _test_metrics(client, champion.run_id)
        champ = {"version": version, "run_id": champion.run_id, "metrics": same,
                 "stored_metrics": same}
        report = {**report, "champion": {**champ, "report": mlflow.artifacts.load_dict(
            f"runs:/{champion.run_id}/evaluation/evaluation.json")}}
    path = Path(tempfile.mkdtemp()) / "evaluation.json"
    write_json(path, report)
    return Evaluation(run_id=run.info.run_id, metrics=_test_metrics(client, source.run_id),
                      report=str(path), data={"split": "test", "rows": 200,
                                              "snapshot_checksum": "f" * 64},
                      champion=champ)


def gate_artifacts(s, run_id):
    from tasks import tracking

    client = tracking.configure(s)
    return {a.path for a in client.list_artifacts(run_id, "gate")}


def png_width(path):
    import matplotlib.image

    return matplotlib.image.imread(path).shape[1]


def test_first_run_without_champion_passes_and_says_so(reg_settings, logged_models, tmp_path):
    from tasks import tracking

    cand = candidate_from(reg_settings, logged_models["good"])
    verdict = run_gate("gate_first", GATE, cand, reg_settings, out_dir=tmp_path)
    assert verdict.passed and not verdict.forced
    assert verdict.champion_version is None and "no champion yet" in verdict.reason

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["first_deployment"] is True and report["champion"] is None
    assert report["metrics"][0]["metric"] == "test_accuracy"
    assert report["metrics"][0]["candidate"] == pytest.approx(logged_models["good"].accuracy)
    md = (tmp_path / "report.md").read_text()
    assert "**Verdict: PASSED**" in md and "No champion yet" in md
    assert "| metric | candidate |" in md  # no champion column when there is none
    assert gate_artifacts(reg_settings, cand.run_id) == {
        "gate/verdict.json", "gate/report.md", "gate/report.json",
        "gate/confusion_matrices.png", "gate/learning_curves.png"}
    run = tracking.configure(reg_settings).get_run(cand.run_id)
    assert run.data.tags["gate.passed"] == "true" and run.data.tags["gate.forced"] == "false"


def test_fails_on_value_threshold(reg_settings, logged_models, tmp_path):
    from tasks import tracking

    cand = candidate_from(reg_settings, logged_models["good"])
    strict = GateSpec(metric="test_accuracy", min_value=0.999)
    verdict = run_gate("gate_threshold", strict, cand, reg_settings, out_dir=tmp_path)
    assert not verdict.passed
    assert "test_accuracy >= 0.999" in verdict.reason
    assert "**Verdict: FAILED**" in (tmp_path / "report.md").read_text()
    run = tracking.configure(reg_settings).get_run(cand.run_id)
    assert run.data.tags["gate.passed"] == "false"


def test_fails_on_regression_against_champion_side_by_side(reg_settings, logged_models,
                                                             tmp_path):
    good, weak = logged_models["good"], logged_models["weak"]
    register(reg_settings, "gate_cmp", good)
    one_panel, two_panels = tmp_path / "first", tmp_path / "second"
    run_gate("gate_cmp_first", GATE, candidate_from(reg_settings, good), reg_settings,
             out_dir=one_panel)

    cand = candidate_from(reg_settings, weak, champion=good)
    # A gate whose threshold the weak model passes, so only the comparison can fail it.
    lenient = GateSpec(metric="test_accuracy", min_value=0.0, max_regression=0.01)
    verdict = run_gate("gate_cmp", lenient, cand, reg_settings, out_dir=two_panels)
    assert not verdict.passed
    assert "regression vs champion v1" in verdict.reason
    assert verdict.champion == pytest.approx(good.accuracy)

    report = json.loads((two_panels / "report.json").read_text())
    assert report["champion"]["version"] == "1" and not report["first_deployment"]
    row = report["metrics"][0]
    assert row["champion"] == pytest.approx(good.accuracy)
    assert row["delta"] == pytest.approx(weak.accuracy - good.accuracy)
    md = (two_panels / "report.md").read_text()
    assert "| metric | candidate | champion v1 | Δ | champion on its own test split" in md
    assert "scored on the same rows: the `test` split of snapshot `ffffffffffffffff`, 200 " \
           "rows" in md
    assert "## Per class (same rows)" in md and len(report["per_class"]) == 10
    # The champion's confusion matrix is drawn beside the candidate's.
    assert png_width(two_panels / "confusion_matrices.png") > 1.8 * png_width(
        one_panel / "confusion_matrices.png")


def test_passes_against_weaker_champion(reg_settings, logged_models, tmp_path):
    register(reg_settings, "gate_up", logged_models["weak"])
    cand = candidate_from(reg_settings, logged_models["good"], champion=logged_models["weak"])
    verdict = run_gate("gate_up", GATE, cand, reg_settings, out_dir=tmp_path)
    assert verdict.passed and verdict.champion_version == "1"
    assert any("regression vs champion v1" in c["check"] and c["passed"]
               for c in verdict.checks)


def test_force_without_reason_fails_before_anything_is_recorded(reg_settings, logged_models,
                                                                 tmp_path):
    cand = candidate_from(reg_settings, logged_models["weak"])
    for reason in ("", "   ", None):
        with pytest.raises(ForceWithoutReason, match="requires a non-empty force_reason"):
            run_gate("gate_force", GATE, cand, reg_settings, force_deploy=True,
                     force_reason=reason, out_dir=tmp_path)
    assert gate_artifacts(reg_settings, cand.run_id) == set()


def test_force_with_reason_passes_and_deploy_tags_the_version(reg_settings, logged_models,
                                                              tmp_path):
    from tasks import tracking
    from tasks.core.run import RunLayout, Snapshot
    from tasks.steps.deploy import deploy
    from tests.tasks.tracking.test_registry import trained_of

    cand = candidate_from(reg_settings, logged_models["weak"])
    strict = GateSpec(metric="test_accuracy", min_value=0.999)
    verdict = run_gate("gate_force", strict, cand, reg_settings, force_deploy=True,
                       force_reason=" hotfix INC-42 ", out_dir=tmp_path)
    assert verdict.passed and verdict.forced and verdict.force_reason == "hotfix INC-42"
    assert verdict.reason.startswith("FORCED by operator (hotfix INC-42); the gate itself failed")
    assert not all(c["passed"] for c in verdict.checks)  # the gate's own outcome is kept
    assert "**Verdict: FORCED by operator**" in (tmp_path / "report.md").read_text()

    weak = logged_models["weak"]
    key = "20260101T000000Z"
    result = deploy("gate_force", trained_of(weak), verdict, Snapshot(key, "", "c" * 64),
                    RunLayout(tmp_path, "gate_force", key), reg_settings)
    assert result.forced is True
    mv = tracking.configure(reg_settings).get_model_version("gate_force", result.version)
    assert mv.tags["forced_by_operator"] == "true"
    assert mv.tags["force_reason"] == "hotfix INC-42"
    assert mv.tags["gate_passed"] == "true" and "FORCED" in mv.tags["gate_reason"]


def test_override_is_pure_and_leaves_unforced_verdicts_alone():
    failed = decide(GATE, {"test_accuracy": 0.4}, champion=None)
    assert apply_override(failed, False, "ignored without force_deploy") is failed
    forced = apply_override(failed, True, "why")
    assert forced.passed and forced.forced and not failed.passed
    with pytest.raises(ForceWithoutReason):
        apply_override(failed, True, "")


def test_markdown_report_without_plots_or_champion_metrics():
    v = decide(GATE, {"test_accuracy": 0.9, "test_loss": 0.3}, champion=0.85,
               champion_version="7")
    report = build_report("m", v.to_dict(), {"run_id": "abc", "metrics": {
        "test_accuracy": 0.9, "test_loss": 0.3}},
        {"run_id": "def", "version": "7", "metrics": {"test_accuracy": 0.85}})
    md = render_markdown(report)
    assert "| **test_accuracy** (gate) | 0.9000 | 0.8500 | +0.0500 | — |" in md
    assert "| test_loss | 0.3000 | — | — | — |" in md
    assert "## Plots" not in md


def test_markdown_names_a_comparison_on_other_data():
    why = "its served model takes its own inputs (text), encoded per run"
    v = decide(GATE, {"test_accuracy": 0.9}, champion=0.85, champion_version="7",
               champion_stored=0.85, champion_other_data=why)
    report = build_report(
        "m", v.to_dict(), {"run_id": "abc", "metrics": {"test_accuracy": 0.9}},
        {"run_id": "def", "version": "7", "stored_metrics": {"test_accuracy": 0.85},
         "not_same_data": why},
        data={"snapshot_checksum": "0123456789abcdef99", "split": "test", "rows": 40,
              "inputs": "text"})
    md = render_markdown(report)
    assert f"The champion could not be re-scored on them ({why})" in md
    assert "scored on the same rows" not in md
    assert "| **test_accuracy** (gate) | 0.9000 | — | — | 0.8500 |" in md


def test_test_rows_outside_the_training_schema_are_shown():
    from tasks.steps.gate_report import input_checks_lines

    checks = {"rows": 80, "rows_with_warnings": 2,
              "fields": {"region": {"unseen_category": 2}, "age": {"out_of_range": 1}},
              "examples": {"region:unseen_category": [{"row": 3, "value": "mars"}],
                           "age:out_of_range": [{"row": 9, "value": 85.0}]}}
    text = "\n".join(input_checks_lines(checks))
    assert "2 of 80 test rows hold values the training split never showed" in text
    assert "| region | 2 | 0 | 0 | row 3: 'mars' |" in text
    assert "| age | 0 | 1 | 0 | row 9: 85.0 |" in text
    assert "None: every value of the 80 test rows" in "\n".join(
        input_checks_lines({**checks, "rows_with_warnings": 0}))
    assert input_checks_lines(None) == []
