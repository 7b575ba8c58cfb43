"""Evaluation of models whose served input the test split does not hold (media, text).

Their champion cannot be re-scored on the candidate's rows; its stored figures count as
figures on the same rows only when it was evaluated on the very same test records.
"""

from pathlib import Path

from tasks.data.tfrecord import split_digest
from tasks.spec import catalog
from tasks.steps.evaluate import stored_champion

WHY = "its served model takes its own inputs (text), encoded per run"


def champion_evaluated_on(s, name, digest):
    """A registered champion whose run's evaluation report names ``digest`` as its data."""
    import mlflow

    from tasks import tracking

    client = tracking.configure(s)
    mlflow.set_experiment(f"{name}-stored")
    with mlflow.start_run() as run:
        mlflow.log_metrics({"test_perplexity": 120.0, "test_accuracy": 0.25})
        mlflow.log_dict({"test_perplexity": 120.0, "test_accuracy": 0.25,
                         "data": {"split": "test", "test_digest": digest}},
                        "evaluation/evaluation.json")
        mlflow.log_text("not a model", "model/MLmodel")
    client.create_registered_model(name)
    mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model",
                                     run.info.run_id)
    client.set_registered_model_alias(name, "champion", mv.version)
    return run.info.run_id


def test_split_digest_changes_with_the_records(tmp_path):
    (tmp_path / "test").mkdir()
    shard = tmp_path / "test" / "part-00000-of-00001.tfrecord"
    shard.write_bytes(b"abc")
    first = split_digest(tmp_path, "test")
    assert first == split_digest(Path(tmp_path), "test") and len(first) == 64
    shard.write_bytes(b"abd")
    assert split_digest(tmp_path, "test") != first


def test_stored_figures_count_as_same_rows_only_for_the_same_test_records(reg_settings):
    from dataclasses import replace

    spec = catalog.get("ptb_lm")
    spec = replace(spec, name="ptb_lm_stored")
    run_id = champion_evaluated_on(reg_settings, spec.name, "d" * 64)

    same = stored_champion(spec, WHY, "d" * 64, reg_settings)
    assert same["run_id"] == run_id and "not_same_data" not in same
    assert same["metrics"]["test_perplexity"] == 120.0 and same["report"]["test_accuracy"]
    assert "data" not in same["report"]

    other = stored_champion(spec, WHY, "e" * 64, reg_settings)
    assert other["not_same_data"] == WHY and "metrics" not in other
    assert other["stored_metrics"]["test_perplexity"] == 120.0
