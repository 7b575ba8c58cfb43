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


def _in_new_root(tmp_path, code: str):
    """Run ``code`` in a fresh interpreter whose data root is ``tmp_path`` (Airflow binds
    its database at import, so a new database needs a new process)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AIRFLOW") and k != "MLP_HOME"}
    env["MLP_HOME"] = str(tmp_path / "root")
    prelude = ("from tasks.core.config import apply_env\napply_env()\n"
               "from tasks.operations.local import migrate_airflow_db, airflow_db_current\n")
    return subprocess.run([sys.executable, "-c", prelude + code], env=env, text=True,
                          capture_output=True, timeout=300)


def test_a_new_database_is_created_in_process_as_airflow_db_migrate_would(tmp_path):
    import os
    import subprocess
    import sys

    out = _in_new_root(tmp_path, "assert not airflow_db_current()\nmigrate_airflow_db()\n"
                                 "assert airflow_db_current()\n")
    assert out.returncode == 0, out.stderr[-3000:]
    home = tmp_path / "root" / "airflow"
    # The configuration file the `airflow` command writes first, with the secrets the
    # scheduler and the API server must share.
    cfg = (home / "airflow.cfg").read_text()
    assert "jwt_secret = " in cfg and "fernet_key = " in cfg
    # Airflow's own command agrees that the schema is at its head.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(home),
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}")
    check = subprocess.run([sys.executable, "-m", "airflow", "db", "check-migrations",
                            "-t", "0"], env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-3000:]


def test_a_failed_migration_is_one_clear_error(tmp_path):
    (tmp_path / "root" / "airflow").mkdir(parents=True)
    (tmp_path / "root" / "airflow" / "airflow.db").mkdir()  # a folder where the file goes
    out = _in_new_root(tmp_path, "migrate_airflow_db()\n")
    assert out.returncode != 0
    assert "airflow db migrate failed" in out.stderr
    assert "Traceback" not in out.stderr
