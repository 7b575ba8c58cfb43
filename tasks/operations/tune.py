"""``mlp tune``: one run of a use case's tuning DAG, trials in parallel on a real executor.

Through the Airflow REST API when an API server answers (``make up``; the scaled profile's
Celery workers run the trials), else locally like ``mlp run``, but with an executor: a
child process (``python -m tasks.operations.tune``) serves Airflow's execution API on a
free loopback port (``airflow api-server --apps execution``) and runs the DAG with
``dag.test(use_executor=True)`` on the LocalExecutor with ``parallelism = K``, so the K
trials of a wave run as separate task processes, recorded as mapped task instances in the
metadata database like any scheduler's run. Its full output goes to a log file; the
console gets the progress lines and a summary with the search's outcome.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.core import progress
from tasks.core.config import REPO_ROOT, Settings, apply_env, settings
from tasks.core.files import read_json
from tasks.core.run import RunLayout, run_key
from tasks.operations.local import _tail, migrate_airflow_db, parsing_for, run_outcome, summarise

PARALLEL_ENV = "MLP_TUNE_PARALLEL"  # tasks.orchestration.tuning reads it at parse time
DAGS_FILE = REPO_ROOT / "dags" / "tuning.py"


def tune_conf(conf: dict[str, Any], trials: int, parallel: int,
              timeout: float | None) -> dict[str, Any]:
    """The tuning DAG's run conf: the use case's params plus the search's own."""
    return {**conf, "tune_trials": int(trials), "tune_parallel": int(parallel),
            "tune_timeout": int(timeout or 0)}


def tuning_outcome(use_case: str, key: str, s: Settings | None = None) -> dict[str, Any]:
    """The search of a run (``tune/summary.json``), shortened for the console."""
    path = RunLayout.of(use_case, key, s).run_dir / "tune" / "summary.json"
    if not path.is_file():
        return {}
    summary = read_json(path)
    return {"study": summary["study"], "metric": summary["metric"],
            "direction": summary["direction"], "best": summary["best"],
            "default": summary.get("default"), "counts": summary["counts"],
            "trials": len(summary["trials"]), "summary": str(path),
            "parent_run_id": summary["parent_run_id"]}


def tuning_lines(tuning: dict[str, Any]) -> list[str]:
    """The console lines of a search's outcome (empty without one)."""
    if not tuning:
        return []
    best, default = tuning["best"], tuning.get("default")
    counts = ", ".join(f"{n} {k.lower()}" for k, n in tuning["counts"].items())
    lines = [f"  study           {tuning['study']}: {tuning['trials']} trials ({counts})",
             f"  best trial      {best['number']}: {tuning['metric']}={best['value']:.4f} "
             f"{best['params']}"]
    if default and default.get("value") is not None:
        lines.append(f"  default params  trial {default['number']}: "
                     f"{tuning['metric']}={default['value']:.4f} {default['params']}")
    lines.append(f"  search          {tuning['summary']} (plots beside it; MLflow run "
                 f"{tuning['parent_run_id']})")
    return [*lines, ""]


def run_tune(use_case: str, conf: dict[str, Any], parallel: int,
             logical_date: datetime | None = None,
             echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``<use_case>_tune`` locally with K trials at a time; returns the run's summary."""
    s = apply_env()
    echo = echo or (lambda line: print(line, flush=True))
    logical = (logical_date or datetime.now(UTC)).replace(microsecond=0)
    key = run_key(logical)
    logs = s.root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log_file = logs / f"tune-{use_case}-{key}-{stamp}.log"
    progress_file = log_file.with_suffix(".progress")
    echo(f"{use_case} tuning run {key} ({conf.get('tune_trials')} trials, {parallel} at a "
         f"time): full logs in {log_file}")
    env = {**os.environ, progress.ENV: str(progress_file)}
    cmd = [sys.executable, "-m", "tasks.operations.tune", use_case, json.dumps(conf),
           logical.isoformat(), str(parallel)]
    offset = 0
    with open(log_file, "ab") as log_fh:
        child = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True)
        try:
            while child.poll() is None:
                offset = _tail(progress_file, offset, echo)
                time.sleep(0.5)
        except KeyboardInterrupt:
            import signal

            os.killpg(child.pid, signal.SIGTERM)
            child.wait()
            raise
    _tail(progress_file, offset, echo)
    state = "success" if child.returncode == 0 else "failed"
    out = summarise(use_case, key, state, log_file, progress_file, s)
    out["tuning"] = tuning_outcome(use_case, key, s)
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_execution_api(port: int, log_path: Path, timeout: float = 240.0) -> subprocess.Popen:
    """Airflow's execution API (what task processes talk to) on a loopback port, ready.

    Raises:
        RuntimeError: It did not answer within ``timeout`` seconds.

    """
    import httpx

    server = subprocess.Popen(
        [sys.executable, "-m", "airflow", "api-server", "--apps", "execution",
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, env=os.environ.copy(),
        start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the execution API server exited ({server.returncode}); "
                               f"see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/execution/health", timeout=2).is_success:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    stop(server)
    raise RuntimeError(f"the execution API server did not answer in {timeout:.0f}s; "
                       f"see {log_path}")


def stop(server: subprocess.Popen) -> None:
    """Stop a server started by :func:`start_execution_api` (its whole process group)."""
    import signal

    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _child(use_case: str, conf_json: str, logical_iso: str, parallel: str) -> int:
    """The child process: execution API up, the tuning DAG on the LocalExecutor."""
    import logging

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    port = _free_port()
    # Before Airflow reads its configuration: task processes find the API here, the
    # executor runs at most K of them, and the DAG caps the trials at K.
    os.environ["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = \
        f"http://127.0.0.1:{port}/execution/"
    os.environ["AIRFLOW__CORE__PARALLELISM"] = parallel
    os.environ["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
    os.environ[PARALLEL_ENV] = parallel
    s = apply_env()
    migrate_airflow_db()
    server = start_execution_api(port, s.root / "logs" / f"execution-api-{port}.log")
    try:
        from tasks.orchestration.tuning import build_tuning_dag

        dag = build_tuning_dag(use_case)
        dag.fileloc = str(DAGS_FILE)  # task processes parse the DAG from its file
        parsing_for(dag.dag_id)
        dag_run = dag.test(logical_date=datetime.fromisoformat(logical_iso),
                           run_conf=json.loads(conf_json), use_executor=True)
    finally:
        stop(server)
    state = str(dag_run.state)
    logging.getLogger(__name__).info("tuning run %s of %s ended: %s", logical_iso, use_case,
                                     state)
    if state != "success":
        return 1
    from tasks.operations.examples import write_example_request

    write_example_request(use_case, RunLayout.of(use_case, run_key(dag_run.logical_date)))
    return 0


def tune(use_case: str, conf: dict[str, Any], trials: int, parallel: int,
         timeout: float | None = None, logical_date: datetime | None = None,
         client: Any = None, wait_timeout: float | None = None,
         on_triggered: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """``mlp tune``: over REST when Airflow's API server answers, else locally.

    Returns:
        ``via`` (``rest`` or ``in-process``), ``state``, ``run_key``, the gate/deploy
        records and ``tuning`` (the search's outcome).

    """
    from tasks.operations.airflow_api import AirflowClient
    from tasks.operations.retrain import check_params, follow
    from tasks.orchestration.tuning import tuning_dag_id

    s = settings()
    logical = (logical_date or datetime.now(UTC)).replace(microsecond=0)
    key = run_key(logical)
    full = tune_conf(conf, trials, parallel, timeout)
    client = client or AirflowClient.from_env(s)
    if not client.reachable():
        summary = run_tune(use_case, full, parallel, logical)
        return {"via": "in-process", **summary}
    dag_id = tuning_dag_id(use_case)
    check_params(dag_id, full, client.param_names(dag_id))
    run = client.trigger(dag_id, full, logical)
    out: dict[str, Any] = {"via": "rest", "run_id": run["dag_run_id"], "run_key": key,
                           "url": f"{client.url}/dags/{dag_id}/runs/{run['dag_run_id']}"}
    if on_triggered:
        on_triggered(out)
    out["state"] = follow(client, dag_id, run["dag_run_id"], timeout=wait_timeout)
    out.update(run_outcome(use_case, key, s))
    out["tuning"] = tuning_outcome(use_case, key, s)
    return out


if __name__ == "__main__":
    sys.exit(_child(*sys.argv[1:5]))
