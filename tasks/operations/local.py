"""Local runs on the embedded stack: one DAG run with ``dag.test()``, a concise console.

``mlp run`` (and ``mlp retrain`` without an API server) runs the pipeline in a child
process (``python -m tasks.operations.local``) whose full Airflow, Beam and TensorFlow
output goes to a log file under ``$MLP_HOME/logs/``; the parent prints only the progress
lines the steps report (:mod:`tasks.core.progress`: one line per step start and end, one
per epoch) and, at the end, a summary read from the run's folders through its
:class:`~tasks.core.run.RunLayout`. On failure the summary names the failed task, its first
error line and the log file.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.core import progress
from tasks.core.config import Settings, apply_env
from tasks.core.files import read_json
from tasks.core.run import ABLATION, TRAIN_RESULT, RunLayout, run_key
from tasks.core.timing import mark, phase

MIGRATED_STAMP = ".mlp-db-current.json"


def _db_heads() -> list[str]:
    """The metadata database's alembic revision(s) (one indexed query)."""
    from airflow import settings as airflow_settings
    from sqlalchemy import text

    with airflow_settings.engine.connect() as conn:
        return sorted(r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version")))


def _stamp_key() -> dict[str, str]:
    import airflow

    return {"airflow": airflow.__version__,
            "conn": os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")}


def _stamp_path() -> Path | None:
    home = os.environ.get("AIRFLOW_HOME")
    return Path(home) / MIGRATED_STAMP if home else None


def airflow_db_current() -> bool:
    """Whether the metadata database exists at the schema this Airflow expects.

    Asked in-process so that a run on a current database skips ``airflow db migrate``, a
    separate Python process that costs seconds. Airflow's own alembic check reads every
    migration script (about a second here); once it has passed, a stamp beside the
    database records the Airflow version, the connection and the revision it saw, and
    later runs compare the database's revision with the stamp (one query). Any
    difference, or no stamp, goes back to Airflow's check.
    """
    conn = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
    if conn.startswith("sqlite:///") and not Path(conn.removeprefix("sqlite:///")).is_file():
        return False  # a new data root: nothing to check
    stamp = _stamp_path()
    try:
        if stamp is not None and stamp.is_file():
            recorded = read_json(stamp)
            if (recorded.get("key") == _stamp_key()
                    and recorded.get("heads") == _db_heads()):
                return True
    except Exception:  # noqa: BLE001 - unreadable stamp or no table: ask Airflow
        pass
    try:
        from airflow.utils.db import check_migrations

        check_migrations(timeout=0)  # raises when the heads differ (after a 1 s wait)
    except Exception:  # noqa: BLE001 - missing tables, older schema, no database: migrate
        return False
    _write_stamp()
    return True


def _write_stamp() -> None:
    """Record that Airflow found the database current (see :func:`airflow_db_current`)."""
    stamp = _stamp_path()
    if stamp is None:
        return
    try:
        from tasks.core.files import write_json

        write_json(stamp, {"key": _stamp_key(), "heads": _db_heads()})
    except Exception:  # noqa: BLE001 - the stamp only saves time; never fail a run on it
        pass


def migrate_airflow_db() -> None:
    """Create or upgrade the Airflow metadata database (idempotent), in this process.

    What ``airflow db migrate`` does, without its process: the callers import Airflow
    anyway, and a second interpreter importing it again made a new data root's migration
    take 3.4-3.7 s instead of 1.5-1.6 s (``bench/pipeline.py``). As the ``airflow`` command
    does before any subcommand, a missing ``airflow.cfg`` is written first (with the
    generated Fernet key and JWT secret that the scheduler and API server later share),
    and the providers' configuration is loaded.

    Raises:
        SystemExit: The migration failed; the message names Airflow's error.

    """
    if airflow_db_current():
        return
    from airflow.configuration import conf, write_default_airflow_configuration_if_needed
    from airflow.utils import db

    write_default_airflow_configuration_if_needed()
    conf.load_providers_configuration()
    try:
        db.upgradedb()
    except (Exception, SystemExit) as err:  # upgradedb exits 1 on its pre-checks
        raise SystemExit(f"airflow db migrate failed: {err!r}") from err
    _write_stamp()


def _load(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}


def run_outcome(use_case: str, key: str, s: Settings | None = None) -> dict[str, Any]:
    """Gate verdict and deployment of a run, from the files its steps wrote."""
    layout = RunLayout.of(use_case, key, s)
    return {"run_dir": str(layout.run_dir), "gate": _load(layout.gate_file),
            "deploy": _load(layout.deploy_file)}


def failure(progress_file: Path) -> dict[str, str] | None:
    """The first failed step and its first error line, from a run's progress lines."""
    if not progress_file.is_file():
        return None
    for line in progress_file.read_text(encoding="utf-8").splitlines():
        _, _, text = line.partition(" ")
        if text.startswith("✗"):
            task, _, rest = text[1:].strip().partition(" ")
            return {"task": task, "error": rest.split(": ", 1)[-1]}
    return None


def summarise(use_case: str, key: str, state: str, log_file: Path | None = None,
              progress_file: Path | None = None, s: Settings | None = None) -> dict[str, Any]:
    """What a run produced, read from its folders (absent parts are left out, never None)."""
    layout = RunLayout.of(use_case, key, s)
    train = _load(layout.train_dir / TRAIN_RESULT)
    evaluation = _load(layout.evaluation_file)
    out: dict[str, Any] = {"use_case": use_case, "run_key": key, "state": state,
                           "run_dir": str(layout.run_dir), **run_outcome(use_case, key, s)}
    if train:
        out.update(mlflow_run_id=train["run_id"], params=train["params"],
                   train_seconds=train["train_seconds"])
    out["metrics"] = {k: v for k, v in evaluation.items()
                      if isinstance(v, int | float) and not isinstance(v, bool)}
    if ablation := _load(layout.train_dir / ABLATION):
        metric = ablation["metric"].removeprefix("test_")
        out["ablation"] = {"metric": ablation["metric"], "winner": ablation["winner"],
                           "test": {arm: a["test"][metric]
                                    for arm, a in ablation["arms"].items()}}
    from tasks.spec import catalog

    if use_case in catalog.names() and (model := catalog.get(use_case).model):
        if model.book_figures:
            out["book_figures"] = dict(model.book_figures)
    if log_file is not None:
        out["log_file"] = str(log_file)
    if state == "success" and layout.request_file.is_file():
        out["request"] = str(layout.request_file)
    elif progress_file is not None and (failed := failure(progress_file)):
        out["failed_task"], out["error"] = failed["task"], failed["error"]
    return out


class WallClock:
    """Where a local run's wall time goes: start-up, steps (of which fitting), the rest.

    Fed the progress lines as they arrive: the first step start ends the start-up (from
    the ``mlp`` process's creation), each step end line carries its duration.
    """

    def __init__(self) -> None:
        self.started = _process_start()
        self.first_task: float | None = None
        self.steps: dict[str, float] = {}

    def line(self, text: str) -> None:
        """Note one progress line (``HH:MM:SS <mark> <step> ...``)."""
        _, _, rest = text.partition(" ")
        if rest.startswith("▶") and self.first_task is None:
            self.first_task = time.time()
        elif rest.startswith("✓"):
            parts = rest[1:].split()
            if len(parts) >= 2 and parts[1].endswith("s"):
                try:
                    self.steps[parts[0]] = float(parts[1][:-1])
                except ValueError:
                    pass

    def split(self, fit_seconds: float | None, install_seconds: float | None
              ) -> dict[str, float]:
        """Seconds per part; ``other`` is Airflow between the steps and the exit."""
        total = time.time() - self.started
        startup = (self.first_task or time.time()) - self.started
        steps = sum(self.steps.values())
        out = {"start_up": startup, "steps": steps, "other": max(0.0, total - startup - steps),
               "run": total}
        if fit_seconds is not None:
            out["fit"] = fit_seconds
        out["per_step"] = dict(self.steps)
        if install_seconds is not None:
            out["install"] = install_seconds
            out["total"] = total + install_seconds
        return out


def _process_start() -> float:
    """When this process was created (epoch seconds), else now."""
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:  # noqa: BLE001 - psutil missing or /proc unreadable: from here
        return time.time()


def _install_seconds() -> float | None:
    """``make run``'s install time, handed over in ``MLP_INSTALL_SECONDS``."""
    try:
        return float(os.environ["MLP_INSTALL_SECONDS"])
    except (KeyError, ValueError):
        return None


def _tail(path: Path, offset: int, echo: Callable[[str], None]) -> int:
    if not path.is_file():
        return offset
    with open(path, encoding="utf-8") as fh:
        fh.seek(offset)
        for line in fh.read().splitlines():
            echo(line)
        return fh.tell()


def run_pipeline(use_case: str, conf: dict[str, Any], logical_date: datetime | None = None,
                 echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run one use case's DAG end to end with Airflow's ``dag.test()`` in a child process.

    Args:
        use_case: Use-case name.
        conf: Run params (the trigger form's values).
        logical_date: The run's logical date (default: now); re-using one re-runs that run.
        echo: Where progress lines go (default: stdout).

    Returns:
        The run's summary (:func:`summarise`), with the log file's path.

    """
    s = apply_env()
    clock = WallClock()
    out = echo or (lambda line: print(line, flush=True))

    def echo(line: str) -> None:
        clock.line(line)
        out(line)

    logical = (logical_date or datetime.now(UTC)).replace(microsecond=0)
    key = run_key(logical)
    logs = s.root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log_file = logs / f"run-{use_case}-{key}-{stamp}.log"
    progress_file = log_file.with_suffix(".progress")
    echo(f"{use_case} run {key}: full logs in {log_file}")
    env = {**os.environ, progress.ENV: str(progress_file)}
    mark("child spawn")
    cmd = [sys.executable, "-m", "tasks.operations.local", use_case, json.dumps(conf),
           logical.isoformat()]
    offset = 0
    with open(log_file, "ab") as log_fh:
        child = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=env)
        while child.poll() is None:
            offset = _tail(progress_file, offset, echo)
            time.sleep(0.2)
    _tail(progress_file, offset, echo)
    state = "success" if child.returncode == 0 else "failed"
    summary = summarise(use_case, key, state, log_file, progress_file, s)
    summary["wall_time"] = clock.split(summary.get("train_seconds"), _install_seconds())
    return summary


def parsing_for(dag_id: str) -> None:
    """Name ``dag_id`` in Airflow's parsing context for the rest of this process.

    ``dag.test()`` re-parses the whole DAG bundle and writes what it finds to the metadata
    database; with the context set, the other use cases' DAG files build nothing
    (:func:`tasks.orchestration.wanted`). Airflow's workers set the same context when they
    parse for a task, and it is inherited by the processes this one starts.
    """
    from airflow.sdk.definitions.context import _AIRFLOW_PARSING_CONTEXT_DAG_ID

    os.environ[_AIRFLOW_PARSING_CONTEXT_DAG_ID] = dag_id


def _child(use_case: str, conf_json: str, logical_iso: str) -> int:
    """The child process: migrate the metadata DB, run the DAG, exit 0 on success."""
    import logging

    from tasks.core import collector

    mark("child main")
    collector.tune()  # before Airflow's, TensorFlow's and Beam's imports
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    apply_env()
    with phase("db migrate"):
        migrate_airflow_db()
    with phase("DAG parse"):
        from tasks.orchestration import build_dag

        dag = build_dag(use_case)
    parsing_for(use_case)
    with phase("dag.test"):
        dag_run = dag.test(logical_date=datetime.fromisoformat(logical_iso),
                           run_conf=json.loads(conf_json))
    state = str(dag_run.state)
    logging.getLogger(__name__).info("DAG run %s of %s ended: %s", logical_iso, use_case, state)
    if state != "success":
        return 1
    from tasks.operations.examples import write_example_request

    # Here, where TensorFlow is loaded already: the parent stays free of it.
    with phase("example request"):
        write_example_request(use_case, RunLayout.of(use_case, run_key(dag_run.logical_date)))
    mark("child end")
    return 0


def _exit_now(code: int) -> None:
    """Flush what could still be in flight, then end the child without interpreter teardown.

    Everything the run writes is on disk when ``_child`` returns (atomic files, ended MLflow
    runs). What is left is teardown: the in-process execution API's finalizer closes its
    event loop and waits for its thread, Beam's and TensorFlow's pools are joined; measured
    at about 4 s per run (``bench/pipeline.py``), for nothing. MLflow's asynchronous metric
    and artifact queues are flushed first, and the log handlers.
    """
    import logging

    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        for flush in ("flush_async_logging", "flush_artifact_async_logging"):
            with contextlib.suppress(Exception):
                getattr(mlflow, flush)()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit_now(_child(*sys.argv[1:4]))
