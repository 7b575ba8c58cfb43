"""Operating a platform: land new data, trigger and follow retraining over Airflow's REST API.

When the Airflow API server answers (``MLP_AIRFLOW_URL``, default
``http://127.0.0.1:$MLP_AIRFLOW_PORT``), ``mlp ingest`` and ``mlp retrain`` use its public
REST API v2 with a JWT from ``POST /auth/token``; without services, ``mlp retrain`` runs
the pipeline in-process and ``mlp ingest`` records the asset event in the metadata
database, where the scheduler finds it when it starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tasks.config import Settings, settings

TERMINAL_TI = {"success", "failed", "skipped", "upstream_failed", "removed"}
TERMINAL_RUN = {"success", "failed"}


class AirflowError(RuntimeError):
    """The Airflow API server refused or failed a request; the message says why."""


def raw_asset_uri(use_case: str) -> str:
    """URI of the asset whose events announce new raw data of a use case."""
    return f"mlp://{use_case}/raw"


def airflow_url() -> str:
    """Base URL of the Airflow API server this installation talks to."""
    port = os.environ.get("MLP_AIRFLOW_PORT", "8080")
    return os.environ.get("MLP_AIRFLOW_URL", f"http://127.0.0.1:{port}").rstrip("/")


def passwords_file(s: Settings | None = None) -> Path:
    """Where Airflow's SimpleAuthManager keeps the generated passwords of its users."""
    s = s or settings()
    configured = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    airflow_home = Path(os.environ.get("AIRFLOW_HOME", s.airflow_home))
    return Path(configured) if configured else (
        airflow_home / "simple_auth_manager_passwords.json.generated")


def airflow_credentials(s: Settings | None = None) -> tuple[str, str | None]:
    """User and password for ``POST /auth/token``.

    ``MLP_AIRFLOW_USER`` (default ``admin``) and ``MLP_AIRFLOW_PASSWORD``; without the
    latter, the password SimpleAuthManager generated for that user on first start (a
    local API server shares the data root). ``None`` means no password is known, which
    works only when ``[core] simple_auth_manager_all_admins`` is on.
    """
    user = os.environ.get("MLP_AIRFLOW_USER", "admin")
    password = os.environ.get("MLP_AIRFLOW_PASSWORD")
    if password is None:
        path = passwords_file(s)
        if path.is_file():
            try:
                password = json.loads(path.read_text() or "{}").get(user)
            except json.JSONDecodeError:
                password = None
    return user, password


class AirflowClient:
    """A small client of the Airflow 3 public REST API (``/api/v2``) with JWT auth.

    Args:
        url: Base URL of the API server (no ``/api/v2`` suffix).
        user: SimpleAuthManager (or other auth manager) user name.
        password: Its password; ``None`` asks for a token without credentials, which the
            API server grants only in ``simple_auth_manager_all_admins`` mode.
        timeout: Seconds per HTTP request.

    """

    def __init__(self, url: str, user: str, password: str | None, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.user = user
        self.password = password
        self._http = httpx.Client(base_url=self.url, timeout=timeout)
        self._token: str | None = None

    @classmethod
    def from_env(cls, s: Settings | None = None) -> AirflowClient:
        """Client for :func:`airflow_url` with :func:`airflow_credentials`."""
        user, password = airflow_credentials(s)
        return cls(airflow_url(), user, password)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def reachable(self) -> bool:
        """Whether an Airflow API server answers its (unauthenticated) health endpoint."""
        try:
            return self._http.get("/api/v2/monitor/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def token(self) -> str:
        """A JWT access token from ``/auth/token`` (cached until a request gets 401)."""
        if self._token is None:
            if self.password is None:
                r = self._http.get("/auth/token")
            else:
                r = self._http.post("/auth/token",
                                    json={"username": self.user, "password": self.password})
            if r.status_code not in (200, 201):
                hint = ("no password known: set MLP_AIRFLOW_PASSWORD" if self.password is None
                        else f"check MLP_AIRFLOW_USER/MLP_AIRFLOW_PASSWORD (user {self.user!r})")
                raise AirflowError(f"{self.url}/auth/token refused ({r.status_code}): "
                                   f"{_detail(r)}; {hint}")
            self._token = r.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Authenticated request to ``/api/v2<path>``; returns the decoded JSON body.

        Raises:
            AirflowError: Non-2xx answer (status and the server's detail in the message).

        """
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self.token()}"}
            r = self._http.request(method, f"/api/v2{path}", headers=headers, **kwargs)
            if r.status_code == 401 and attempt == 1:
                self._token = None  # expired: log in again once
                continue
            if r.status_code >= 400:
                raise AirflowError(f"{method} /api/v2{path} -> {r.status_code}: {_detail(r)}")
            return r.json() if r.content else None
        raise AssertionError("unreachable")

    def dag(self, dag_id: str) -> dict[str, Any]:
        """The DAG's API record (``is_paused``, ``next_dagrun_run_after`` ...)."""
        try:
            return self.request("GET", f"/dags/{dag_id}")
        except AirflowError as exc:
            if "-> 404" in str(exc):
                raise AirflowError(f"DAG {dag_id!r} is unknown to {self.url}: the dag-processor "
                                   "has not parsed dags/ yet, or the file has an import "
                                   "error") from exc
            raise

    def param_names(self, dag_id: str) -> set[str]:
        """Names of the DAG's run params (the trigger form's fields)."""
        return set(self.request("GET", f"/dags/{dag_id}/details")["params"])

    def trigger(self, dag_id: str, conf: Mapping[str, Any],
                logical_date: datetime) -> dict[str, Any]:
        """Create a DAG run (``POST /api/v2/dags/{dag_id}/dagRuns``); params are validated."""
        body = {"logical_date": logical_date.isoformat(), "conf": dict(conf),
                "note": "triggered with mlp retrain"}
        return self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """One DAG run's record (``state``, ``run_type``, ``logical_date`` ...)."""
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def dag_runs(self, dag_id: str, **params: Any) -> list[dict[str, Any]]:
        """DAG runs of a DAG (query params as the API takes them, e.g. ``run_type``)."""
        return self.request("GET", f"/dags/{dag_id}/dagRuns", params=params)["dag_runs"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """Task id -> state of every task instance of a run."""
        tis = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                           params={"limit": 1000})["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in tis}

    def asset_id(self, uri: str) -> int:
        """Id of the asset with exactly this URI."""
        rows = self.request("GET", "/assets", params={"uri_pattern": uri, "limit": 100})
        for row in rows["assets"]:
            if row["uri"] == uri:
                return int(row["id"])
        raise AirflowError(f"asset {uri} is unknown to {self.url}: no parsed DAG schedules on it "
                           "yet (is the dag-processor running?)")

    def create_asset_event(self, uri: str, extra: Mapping[str, Any]) -> dict[str, Any]:
        """Record an asset event (``POST /api/v2/assets/events``); consumers get queued."""
        body = {"asset_id": self.asset_id(uri), "extra": dict(extra)}
        return self.request("POST", "/assets/events", json=body)


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:500]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return json.dumps(detail)[:1000] if not isinstance(detail, str) else detail


# ------------------------------------------------------------------------------ ingest


def land(use_case: str, path: str | Path, s: Settings | None = None) -> tuple[Path, dict]:
    """Validate new raw data and snapshot it under ``$MLP_HOME/landing/<use_case>/<stamp>``.

    The copy is validated by the use case's data source (:func:`tasks.ingest.ingest`) and
    appears atomically, so bad input leaves no partial snapshot behind.

    Returns:
        The snapshot directory and its manifest (files, checksums, facts).

    Raises:
        SourceError, IdxFormatError: The data is missing or malformed (the file is named).

    """
    import models
    from tasks.ingest import ingest

    s = s or settings()
    spec = models.get(use_case)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    dest = s.root / "landing" / use_case / stamp
    manifest = ingest(spec.source, str(path), dest)
    return dest, manifest


def event_extra(dest: Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What the asset event carries: where the validated snapshot is, and what it holds."""
    return {"location": str(dest), "checksum": manifest["checksum"],
            "source": manifest["location"], "facts": manifest["facts"]}


def record_asset_event(uri: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """Record an asset event straight in the metadata DB (no API server running).

    This is what ``POST /api/v2/assets/events`` does server-side (Airflow's
    ``AssetManager.register_asset_change``): it stores the event and queues the consuming
    DAGs, which the scheduler turns into runs when it next runs. The asset row exists only
    once a DAG scheduled on it has been serialised, hence ``airflow dags reserialize`` first
    when it is missing.
    """
    from tasks.cli import migrate_airflow_db

    migrate_airflow_db()
    from airflow.assets.manager import asset_manager
    from airflow.models.asset import AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = select(AssetModel).where(AssetModel.uri == uri)
    with create_session() as session:
        known = session.scalar(query) is not None
    if not known:
        out = subprocess.run([sys.executable, "-m", "airflow", "dags", "reserialize"],
                             capture_output=True, text=True, env=os.environ.copy())
        if out.returncode != 0:
            raise AirflowError(f"airflow dags reserialize failed: {out.stderr[-2000:]}")
    with create_session() as session:
        model = session.scalar(query)
        if model is None:
            raise AirflowError(f"asset {uri} is unknown: no DAG in dags/ schedules on it")
        event = asset_manager.register_asset_change(asset=model, extra=dict(extra),
                                                    session=session)
        if event is None:
            raise AirflowError(f"could not record an event for asset {uri}")
        return {"id": event.id, "asset_uri": uri, "extra": event.extra,
                "timestamp": event.timestamp.isoformat()}


def ingest_new_data(use_case: str, path: str | Path, client: AirflowClient | None = None,
                    s: Settings | None = None) -> dict[str, Any]:
    """``mlp ingest``: validate, land, and announce new raw data of a use case.

    Returns:
        ``{"landing": dir, "manifest": ..., "event": ..., "via": "rest" | "metadata-db"}``.

    """
    s = s or settings()
    dest, manifest = land(use_case, path, s)
    uri = raw_asset_uri(use_case)
    extra = event_extra(dest, manifest)
    client = client or AirflowClient.from_env(s)
    via = "rest" if client.reachable() else "metadata-db"
    try:
        event = (client.create_asset_event(uri, extra) if via == "rest"
                 else record_asset_event(uri, extra))
    except AirflowError as exc:
        raise AirflowError(f"{exc} (the data is landed and valid in {dest}; announce it again "
                           f"with POST /api/v2/assets/events, extra.location={dest})") from exc
    return {"landing": str(dest), "manifest": manifest, "via": via, "event": event}


# ----------------------------------------------------------------------------- retrain


def run_outcome(use_case: str, key: str, s: Settings | None = None) -> dict[str, Any]:
    """Gate verdict and deployment of a run, from the files the DAG writes in its run dir."""
    s = s or settings()
    run_dir = s.run_dir(use_case, key)

    def load(name: str) -> dict[str, Any]:
        p = run_dir / name
        return json.loads(p.read_text()) if p.is_file() else {}

    return {"run_dir": str(run_dir), "gate": load("gate.json"), "deploy": load("deploy.json")}


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
    import models

    s = settings()
    models.get(use_case)  # unknown use case: KeyError listing the known ones
    logical = (logical_date or datetime.now(UTC)).replace(microsecond=0)
    if logical > datetime.now(UTC):
        raise ValueError(f"logical date {logical.isoformat()} is in the future: Airflow would "
                         "hold the run until then")
    key = logical.strftime("%Y%m%dT%H%M%SZ")
    client = client or AirflowClient.from_env(s)
    if not client.reachable():
        from tasks.cli import run_pipeline
        from tasks.dag_factory import build_dag

        check_params(use_case, conf, set(build_dag(models.get(use_case)).params.keys()))
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


def format_outcome(result: Mapping[str, Any]) -> str:
    """Human-readable end of ``mlp retrain --wait``: state, gate verdict, new version."""
    gate, deploy = result.get("gate") or {}, result.get("deploy") or {}
    lines = [f"run {result.get('run_id') or result.get('run_key')}: {result['state']}"]
    if gate:
        forced = " (forced by operator)" if gate.get("forced") else ""
        lines.append(f"  gate        {'PASSED' if gate.get('passed') else 'FAILED'}{forced}: "
                     f"{gate.get('reason')}")
    else:
        lines.append("  gate        not reached")
    if deploy:
        lines.append(f"  registered  version {deploy.get('version')} (alias "
                     f"{deploy.get('alias')}; previous {deploy.get('previous')})")
    else:
        lines.append("  registered  nothing (the run stopped before deployment)")
    return "\n".join(lines)
