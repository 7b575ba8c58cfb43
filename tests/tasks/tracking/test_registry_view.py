"""The read-only registry view answers as MLflow's client does (and only where it may)."""

import math
from dataclasses import replace

import pytest

from tasks.tracking import registry_view
from tasks.tracking.registry import list_models


@pytest.fixture(scope="module")
def view_settings(tmp_path_factory):
    """A registry written through MLflow's client: two models, aliases, tags, a card."""
    from mlflow import MlflowClient

    from tasks.core.config import settings

    root = tmp_path_factory.mktemp("mlp-view")
    s = replace(settings(), root=root, tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    client = MlflowClient(tracking_uri=s.tracking_uri, registry_uri=s.tracking_uri)
    exp = client.create_experiment("view", artifact_location=(root / "art").as_uri())
    runs = []
    for acc in (0.81, 0.93, float("nan")):
        run = client.create_run(exp)
        client.log_metric(run.info.run_id, "test_accuracy", 0.5, step=0)
        client.log_metric(run.info.run_id, "test_accuracy", acc, step=1)
        client.log_metric(run.info.run_id, "test_rmse", 3.0)
        client.set_terminated(run.info.run_id)
        runs.append(run.info.run_id)
    for name, run_ids in (("view_a", runs), ("view_b", runs[:1])):
        client.create_registered_model(name)
        for i, run_id in enumerate(run_ids):
            mv = client.create_model_version(name, f"{root}/art/{run_id}/model", run_id=run_id,
                                             tags={"run_key": f"2026030{i + 1}T000000Z",
                                                   "gate_passed": "true"})
            client.update_model_version(name, mv.version,
                                        description=f"# Model card: {name} version {mv.version}")
    client.set_model_version_tag("view_a", "1", "gate_metric", "test_rmse")
    client.set_model_version_tag("view_a", "2", "forced_by_operator", "true")
    client.set_registered_model_alias("view_a", "champion", "2")
    client.set_registered_model_alias("view_a", "previous", "1")
    client.delete_model_version("view_a", "3")
    client.create_registered_model("view_empty")
    return s


def test_schema_revision_is_the_pinned_mlflow_head():
    from mlflow.store.db.utils import _get_latest_schema_revision

    assert registry_view.SCHEMA_REVISION == _get_latest_schema_revision()


def test_listing_equals_mlflow_client(view_settings, monkeypatch):
    assert registry_view.open_view(view_settings) is not None
    fast = list_models(view_settings)
    monkeypatch.setattr(registry_view, "open_view", lambda s=None: None)
    slow = list_models(view_settings)
    assert fast == slow
    by_key = {(r["model"], r["version"]): r for r in fast}
    assert set(by_key) == {("view_a", "1"), ("view_a", "2"), ("view_b", "1")}
    assert by_key["view_a", "2"]["aliases"] == ["champion"]
    assert by_key["view_a", "2"]["value"] == pytest.approx(0.93)  # the latest step
    assert by_key["view_a", "2"]["forced"] is True
    assert by_key["view_a", "1"]["metric"] == "test_rmse"
    assert by_key["view_a", "1"]["value"] == pytest.approx(3.0)


def test_cards_equal_mlflow_client(view_settings, monkeypatch):
    from tasks.steps.model_card import read_card

    refs = ["view_a", "view_a/1", "view_b/1"]
    fast = [read_card(r, view_settings) for r in refs]
    for bad in ("view_b", "view_a/9", "nope", "view_a/3"):  # no alias, version, model; deleted
        with pytest.raises(LookupError):
            read_card(bad, view_settings)
    monkeypatch.setattr(registry_view, "open_view", lambda s=None: None)
    assert [read_card(r, view_settings) for r in refs] == fast
    assert fast[0] == "# Model card: view_a version 2"


def test_nan_metric_and_fallbacks(view_settings, tmp_path):
    view = registry_view.open_view(view_settings)
    assert [v["version"] for v in view.versions("view_a")] == ["2", "1"]  # 3 was deleted
    # a server, PostgreSQL, a missing file or another schema: MLflow's client answers
    for uri in ("http://127.0.0.1:5000", "postgresql://x@localhost/db",
                f"sqlite:///{tmp_path / 'missing.db'}"):
        assert registry_view.open_view(replace(view_settings, tracking_uri=uri)) is None
    import shutil
    import sqlite3

    other = tmp_path / "other.db"
    shutil.copy(view_settings.tracking_uri.removeprefix("sqlite:///"), other)
    with sqlite3.connect(other) as con:
        con.execute("UPDATE alembic_version SET version_num = 'older'")
    assert registry_view.open_view(
        replace(view_settings, tracking_uri=f"sqlite:///{other}")) is None


def test_nan_value_reads_as_nan(view_settings):
    view = registry_view.open_view(view_settings)
    import sqlite3

    path = view_settings.tracking_uri.removeprefix("sqlite:///")
    with sqlite3.connect(path) as con:
        run_id = con.execute("SELECT run_uuid FROM latest_metrics WHERE is_nan = 1").fetchone()[0]
    assert math.isnan(view.metric(run_id, "test_accuracy"))
    assert view.metric(run_id, "no_such_metric") is None
