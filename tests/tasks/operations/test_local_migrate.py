"""``mlp run`` skips ``airflow db migrate`` only when the metadata database is current."""

from tasks.operations.local import airflow_db_current


def test_a_migrated_database_is_current(airflow_db):
    assert airflow_db_current()


def test_a_missing_database_is_not_current(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                       f"sqlite:///{tmp_path / 'airflow.db'}")
    assert not airflow_db_current()
