"""Retraining: trigger a run with typed params and follow it to its verdict.

Through the Airflow REST API when the API server answers (params are validated
server-side against the DAG's typed params), else in-process on the embedded stack
(:mod:`tasks.operations.local`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from tasks.core.config import settings
from tasks.core.run import run_key
from tasks.operations.airflow_api import AirflowClient
from tasks.operations.local import run_outcome, run_pipeline
from tasks.spec import catalog

TERMINAL_TI = {"success", "failed", "skipped", "upstream_failed", "removed"}
TERMINAL_RUN = {"success", "failed"}


def follow(client: AirflowClient, dag_id: str, run_id: str, poll: float = 2.0,
           timeout: float | None = None, console: Any = None,
           on_change: Callable[[str, str], None] | None = None) -> str:
    """Follow a run's task states with a progress bar until the run ends.

    Returns:
        The run's final state (``success`` or ``failed``).

    Raises:
        TimeoutError: The run did not end within ``timeout`` seconds.

    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)  # stdout stays free for --json
    seen: dict[str, str | None] = {}
    deadline = None if timeout is None else time.monotonic() + timeout
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        bar = progress.add_task(f"{dag_id} queued", total=None)
        while True:
            run = client.dag_run(dag_id, run_id)
            states = client.task_states(dag_id, run_id)
            for task_id, state in states.items():
                if state != seen.get(task_id) and state is not None:
                    progress.console.print(f"{datetime.now():%H:%M:%S} {task_id}: {state}")
                    if on_change:
                        on_change(task_id, state)
            seen = states
            done = sum(1 for v in states.values() if v in TERMINAL_TI)
            active = [t for t, v in states.items() if v in ("running", "queued", "scheduled",
                                                             "up_for_retry", "deferred")]
            label = f"{dag_id} {', '.join(f'{t} {states[t]}' for t in active) or run['state']}"
            progress.update(bar, total=len(states) or None, completed=done, description=label)
            if run["state"] in TERMINAL_RUN:
                progress.update(bar, description=f"{dag_id} {run['state']}")
                return run["state"]
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} of {dag_id} still {run['state']} after "
                                   f"{timeout:.0f}s")
            time.sleep(poll)


def check_params(use_case: str, conf: Mapping[str, Any], known: set[str]) -> None:
    """Refuse conf keys the DAG has no param for (Airflow would silently ignore them).

    Raises:
        ValueError: An unknown key; the message lists the DAG's params.

    """
    unknown = sorted(set(conf) - known)
    if unknown:
        raise ValueError(f"{use_case} has no run param {', '.join(unknown)}; its params: "
                       f"{', '.join(sorted(known))}")


def retrain(use_case: str, conf: Mapping[str, Any], wait: bool = False,
            logical_date: datetime | None = None, client: AirflowClient | None = None,
            timeout: float | None = None, console: Any = None,
            on_triggered: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """``mlp retrain``: trigger a run with typed params, optionally follow it to the end.

    Through the REST API when the API server answers (params are validated server-side
    against the DAG's typed params), else in-process with ``dag.test()``. ``on_triggered``
    gets the new run's record (``run_id``, ``url`` ...) before following it.

    Returns:
        ``via`` (``rest`` or ``in-process``), ``run_id``, ``run_key``, ``state`` (``queued``
        /``running`` when not waiting), ``url``, and with the run ended its ``gate`` and
        ``deploy`` records.

    """
    s = settings()
    spec = catalog.get(use_case)  # unknown use case: an error listing the known ones
    logical = (logical_date or datetime.now(UTC)).replace(microsecond=0)
    if logical > datetime.now(UTC):
        raise ValueError(f"logical date {logical.isoformat()} is in the future: Airflow would "
                         "hold the run until then")
    key = run_key(logical)
    client = client or AirflowClient.from_env(s)
    if not client.reachable():
        from tasks.orchestration.dag_factory import trigger_params

        check_params(use_case, conf, set(trigger_params(spec)))
        summary = run_pipeline(use_case, dict(conf), logical)
        return {"via": "in-process", "run_id": None, "url": None, **summary}
    dag = client.dag(use_case)
    check_params(use_case, conf, client.param_names(use_case))
    run = client.trigger(use_case, conf, logical)
    out: dict[str, Any] = {
        "via": "rest", "run_id": run["dag_run_id"], "run_key": key, "state": run["state"],
        "paused": dag.get("is_paused", False),
        "url": f"{client.url}/dags/{use_case}/runs/{run['dag_run_id']}",
    }
    if on_triggered:
        on_triggered(out)
    if wait:
        out["state"] = follow(client, use_case, run["dag_run_id"], timeout=timeout,
                              console=console)
        out.update(run_outcome(use_case, key, s))
    return out
