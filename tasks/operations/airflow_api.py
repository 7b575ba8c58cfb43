"""The Airflow REST API (v2), through the official ``apache-airflow-client``.

When the Airflow API server answers (``MLP_AIRFLOW_URL``, default
``http://127.0.0.1:$MLP_AIRFLOW_PORT``), ``mlp ingest``, ``mlp retrain`` (and the other
operators' commands) use its public REST API with a JWT from ``POST /auth/token`` (the
client library documents getting the token this way; the auth endpoint is not part of
the generated API). :class:`AirflowClient` keeps the few calls the platform needs and
turns API errors into :class:`AirflowError` messages.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tasks.core.config import Settings, settings

T = TypeVar("T")


class AirflowError(RuntimeError):
    """The Airflow API server refused or failed a request; the message says why."""


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
    """The calls of the Airflow 3 public REST API the platform makes, with JWT auth.

    Args:
        url: Base URL of the API server (no ``/api/v2`` suffix).
        user: SimpleAuthManager (or other auth manager) user name.
        password: Its password; ``None`` asks for a token without credentials, which the
            API server grants only in ``simple_auth_manager_all_admins`` mode.
        timeout: Seconds per HTTP request.

    """

    def __init__(self, url: str, user: str, password: str | None, timeout: float = 30.0):
        from airflow_client import client as api

        self.url = url.rstrip("/")
        self.user = user
        self.password = password
        self.timeout = timeout
        self._config = api.Configuration(host=self.url)
        self._api = api.ApiClient(self._config)
        self._token: str | None = None

    @classmethod
    def from_env(cls, s: Settings | None = None) -> AirflowClient:
        """Client for :func:`airflow_url` with :func:`airflow_credentials`."""
        user, password = airflow_credentials(s)
        return cls(airflow_url(), user, password)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._api.close()

    def reachable(self) -> bool:
        """Whether an Airflow API server answers its (unauthenticated) health endpoint."""
        try:
            return httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def token(self) -> str:
        """A JWT access token from ``/auth/token`` (cached until a request gets 401)."""
        if self._token is None:
            with httpx.Client(base_url=self.url, timeout=self.timeout) as http:
                if self.password is None:
                    r = http.get("/auth/token")
                else:
                    r = http.post("/auth/token",
                                  json={"username": self.user, "password": self.password})
            if r.status_code not in (200, 201):
                hint = ("no password known: set MLP_AIRFLOW_PASSWORD" if self.password is None
                        else f"check MLP_AIRFLOW_USER/MLP_AIRFLOW_PASSWORD (user {self.user!r})")
                raise AirflowError(f"{self.url}/auth/token refused ({r.status_code}): "
                                   f"{_detail(r.text)}; {hint}")
            self._token = r.json()["access_token"]
        return self._token

    def call(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(api_client)`` authenticated; log in again once on 401.

        Raises:
            AirflowError: The API answered an error (status and the server's detail).

        """
        from airflow_client.client.exceptions import ApiException

        for attempt in (1, 2):
            self._config.access_token = self.token()
            try:
                return fn(self._api)
            except ApiException as exc:
                if exc.status == 401 and attempt == 1:
                    self._token = None  # expired: log in again once
                    continue
                raise AirflowError(f"{what} -> {exc.status}: {_detail(exc.body)}") from exc
        raise AssertionError("unreachable")

    def dag(self, dag_id: str) -> dict[str, Any]:
        """The DAG's details as JSON (``is_paused``, ``params``, ``timetable_summary`` ...)."""
        from airflow_client.client import DAGApi

        try:
            return json.loads(self.call(f"GET /dags/{dag_id}/details",
                                        lambda c: DAGApi(c).get_dag_details(dag_id)).to_json())
        except AirflowError as exc:
            if "-> 404" in str(exc):
                raise AirflowError(f"DAG {dag_id!r} is unknown to {self.url}: the dag-processor "
                                   "has not parsed dags/ yet, or the file has an import "
                                   "error") from exc
            raise

    def param_names(self, dag_id: str) -> set[str]:
        """Names of the DAG's run params (the trigger form's fields)."""
        return set(self.dag(dag_id).get("params") or {})

    def trigger(self, dag_id: str, conf: Mapping[str, Any],
                logical_date: datetime) -> dict[str, Any]:
        """Create a DAG run; the API server validates ``conf`` against the typed params."""
        from airflow_client.client import DagRunApi, TriggerDAGRunPostBody

        body = TriggerDAGRunPostBody(logical_date=logical_date, conf=dict(conf),
                                     note="triggered with mlp retrain")
        run = self.call(f"POST /dags/{dag_id}/dagRuns",
                        lambda c: DagRunApi(c).trigger_dag_run(dag_id, body))
        return {"dag_run_id": run.dag_run_id, "state": _value(run.state)}

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """One DAG run's ``state`` and ``run_type``."""
        from airflow_client.client import DagRunApi

        run = self.call(f"GET /dags/{dag_id}/dagRuns/{run_id}",
                        lambda c: DagRunApi(c).get_dag_run(dag_id, run_id))
        return {"dag_run_id": run.dag_run_id, "state": _value(run.state),
                "run_type": _value(run.run_type), "conf": run.conf or {}}

    def set_run_state(self, dag_id: str, run_id: str, state: str) -> None:
        """Mark a DAG run ``success`` or ``failed`` (its unfinished tasks stop)."""
        from airflow_client.client import DagRunApi, DagRunMutableStates, DAGRunPatchBody

        body = DAGRunPatchBody(state=DagRunMutableStates(state))
        self.call(f"PATCH /dags/{dag_id}/dagRuns/{run_id}",
                  lambda c: DagRunApi(c).patch_dag_run(dag_id, run_id, body))

    def dag_runs(self, dag_id: str, run_type: str | None = None) -> list[dict[str, Any]]:
        """DAG runs of a DAG (optionally of one ``run_type``, e.g. ``asset_triggered``)."""
        from airflow_client.client import DagRunApi

        runs = self.call(f"GET /dags/{dag_id}/dagRuns",
                         lambda c: DagRunApi(c).get_dag_runs(
                             dag_id, run_type=[run_type] if run_type else None, limit=1000))
        return [{"dag_run_id": r.dag_run_id, "state": _value(r.state),
                 "run_type": _value(r.run_type)} for r in runs.dag_runs]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """Task id -> state of every task instance of a run."""
        from airflow_client.client import TaskInstanceApi

        tis = self.call(f"GET /dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                        lambda c: TaskInstanceApi(c).get_task_instances(dag_id, run_id,
                                                                        limit=1000))
        return {ti.task_id: _value(ti.state) for ti in tis.task_instances}

    def asset_id(self, uri: str) -> int:
        """Id of the asset with exactly this URI."""
        from airflow_client.client import AssetApi

        rows = self.call("GET /assets", lambda c: AssetApi(c).get_assets(uri_pattern=uri,
                                                                           limit=100))
        for row in rows.assets:
            if row.uri == uri:
                return int(row.id)
        raise AirflowError(f"asset {uri} is unknown to {self.url}: no parsed DAG schedules on it "
                           "yet (is the dag-processor running?)")

    def create_asset_event(self, uri: str, extra: Mapping[str, Any]) -> dict[str, Any]:
        """Record an asset event (``POST /api/v2/assets/events``); consumers get queued."""
        from airflow_client.client import AssetApi, CreateAssetEventsBody

        body = CreateAssetEventsBody(asset_id=self.asset_id(uri), extra=dict(extra))
        event = self.call("POST /assets/events",
                          lambda c: AssetApi(c).create_asset_event(body))
        return {"id": event.id, "asset_uri": uri, "extra": event.extra,
                "timestamp": event.timestamp.isoformat()}


    def approval_requests(self, dag_id: str, run_id: str = "~",
                          pending: bool = True) -> list[dict[str, Any]]:
        """Human-in-the-loop requests of a DAG's runs (``~``: all runs), newest first."""
        from airflow_client.client import TaskInstanceApi

        rows = self.call(
            f"GET /dags/{dag_id}/dagRuns/{run_id}/hitlDetails",
            lambda c: TaskInstanceApi(c).get_hitl_details(
                dag_id, run_id, response_received=False if pending else None,
                order_by=["-created_at"], limit=100))
        return [{"dag_run_id": d.task_instance.dag_run_id, "task_id": d.task_instance.task_id,
                 "map_index": d.task_instance.map_index, "subject": d.subject,
                 "options": list(d.options), "response_received": d.response_received,
                 "state": _value(d.task_instance.state)} for d in rows.hitl_details]

    def respond(self, dag_id: str, run_id: str, task_id: str, map_index: int,
                option: str, params_input: Mapping[str, Any]) -> dict[str, Any]:
        """Answer a human-in-the-loop request (``PATCH .../hitlDetails``): the task resumes."""
        from airflow_client.client import TaskInstanceApi, UpdateHITLDetailPayload

        body = UpdateHITLDetailPayload(chosen_options=[option], params_input=dict(params_input))
        out = self.call(
            f"PATCH /dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}"
            "/hitlDetails",
            lambda c: TaskInstanceApi(c).update_hitl_detail(dag_id, run_id, task_id,
                                                            map_index, body))
        return {"chosen_options": list(out.chosen_options),
                "params_input": out.params_input or {},
                "responded_at": out.responded_at.isoformat(),
                "responded_by": getattr(out.responded_by, "user_name", None)}


def _value(state: Any) -> Any:
    """An API enum's string value (None stays None)."""
    return getattr(state, "value", state)


def _detail(body: str | None) -> str:
    try:
        parsed = json.loads(body or "")
    except ValueError:
        return (body or "")[:500]
    detail = parsed.get("detail", parsed) if isinstance(parsed, dict) else parsed
    return json.dumps(detail)[:1000] if not isinstance(detail, str) else detail
