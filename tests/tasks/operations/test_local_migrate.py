"""``mlp run`` skips ``airflow db migrate`` only when the metadata database is current."""

from tasks.operations.local import airflow_db_current


def test_a_migrated_database_is_current(airflow_db):
    assert airflow_db_current()


def test_a_missing_database_is_not_current(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                       f"sqlite:///{tmp_path / 'airflow.db'}")
    assert not airflow_db_current()


def test_the_stamp_is_trusted_only_while_the_database_revision_matches(airflow_db):
    import os
    from pathlib import Path

    from tasks.core.files import read_json, write_json
    from tasks.operations.local import MIGRATED_STAMP, _db_heads, _stamp_key

    stamp = Path(os.environ["AIRFLOW_HOME"]) / MIGRATED_STAMP
    assert airflow_db_current()
    assert read_json(stamp) == {"key": _stamp_key(), "heads": _db_heads()}
    # A stamp naming another revision is not believed: Airflow's own check decides, and
    # the stamp is rewritten with what the database holds.
    write_json(stamp, {"key": _stamp_key(), "heads": ["0000older0000"]})
    assert airflow_db_current()
    assert read_json(stamp)["heads"] == _db_heads() != ["0000older0000"]
