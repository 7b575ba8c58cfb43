"""Model cards: rendered from what the run knows, stored with the version, shown by the CLI."""

from dataclasses import replace

import pytest

from models.breast_cancer import SPEC
from tasks.core.files import write_json
from tasks.core.run import Deployment, RunLayout, Snapshot, TrainedModel, Verdict
from tasks.steps.model_card import read_card, render_card, write_card
from tests.tasks.tracking.test_registry import trained_of

SNAP = Snapshot("20260301T000000Z", "/raw", "ab" * 32)
MANIFEST = {"splits": {"train": {"rows": 341, "class_counts": {"0": 127, "1": 214}},
                       "validation": {"rows": 114, "class_counts": {"0": 42, "1": 72}},
                       "test": {"rows": 114, "class_counts": {"0": 43, "1": 71}}},
            "quarantined_rows": 0}
EVALUATION = {"test_accuracy": 0.9737, "test_roc_auc": 0.997,
              "data": {"snapshot_checksum": "ab" * 32, "split": "test", "rows": 114},
              "parity": {"max_abs_diff": 2e-7, "tolerance": "|served - trained| <= ..."},
              "champion": {"version": "3", "report": {"test_accuracy": 0.9561}}}
VERDICT = Verdict(True, "test_accuracy=0.9737 passed: regression vs champion v3 on the same "
                  "test rows (0.9561) <= 0.01 (is -0.0176)", "test_accuracy", 0.9737, 0.9561,
                  "3", [])


def test_card_holds_data_params_same_data_metrics_gate_approval_and_intended_use():
    trained = TrainedModel("run1", "0", "models:/m", "", "", {"epochs": 20, "lr": 0.1}, "d",
                           3.2)
    card = render_card(SPEC, "4", SNAP, MANIFEST, trained, EVALUATION, VERDICT,
                       {"required": True, "decision": "approved", "by": "admin",
                        "at": "2026-03-01T10:00:00", "reason": "checked the report"})
    assert card.startswith("# Model card: breast_cancer version 4\n")
    assert SPEC.description.strip().splitlines()[0] in card  # intended use
    assert f"checksum `{'ab' * 32}`" in card
    assert "| train | 341 | 0 malignant: 127, 1 benign: 214 |" in card
    assert "| test | 114 | 0 malignant: 43, 1 benign: 71 |" in card
    assert '`{"epochs": 20, "lr": 0.1}`' in card
    assert "114 rows; champion v3 on the same rows" in card
    assert "| test_accuracy | 0.9737 | 0.9561 |" in card
    assert "- Verdict: **passed** on `test_accuracy`" in card and VERDICT.reason in card
    assert "- approved by admin at 2026-03-01T10:00:00: checked the report" in card
    unasked = render_card(SPEC, "4", SNAP, MANIFEST, trained, EVALUATION,
                          replace(VERDICT, passed=True), None)
    assert "Not required for this run" in unasked


def test_card_is_stored_on_the_version_and_printed_by_mlp_models(
        reg_settings, logged_models, tmp_path, monkeypatch, capsys):
    from tasks import tracking
    from tasks.cli import main
    from tasks.steps.deploy import deploy

    layout = RunLayout(tmp_path, "card_model", SNAP.run_key)
    logged = logged_models["good"]
    dep = deploy("card_model", trained_of(logged), VERDICT, SNAP, layout, reg_settings)
    assert isinstance(dep, Deployment)
    write_json(layout.dataset_dir / "manifest.json", MANIFEST)
    write_json(layout.evaluation_file, EVALUATION)
    path = write_card(SPEC, dep, SNAP, trained_of(logged), VERDICT, layout, None,
                      reg_settings)
    card = path.read_text()
    assert read_card(f"card_model/{dep.version}", reg_settings) == card
    assert read_card("card_model", reg_settings) == card  # default: the champion
    client = tracking.configure(reg_settings)
    assert {a.path for a in client.list_artifacts(logged.run_id)} >= {"model_card.md"}

    monkeypatch.setenv("MLFLOW_TRACKING_URI", reg_settings.tracking_uri)
    assert main(["models", "--card", f"card_model/{dep.version}"]) == 0
    assert capsys.readouterr().out == card
    assert main(["models", "--card", "card_model/99"]) == 1
    assert "card_model/99: no such registered model version" in capsys.readouterr().err
    with pytest.raises(LookupError, match="no model card"):
        from tests.tasks.conftest import register

        version = register(reg_settings, "card_model", logged_models["weak"], alias=None)
        read_card(f"card_model/{version}", reg_settings)
