"""A read-only view of the embedded MLflow registry, for commands that only look.

``mlp models`` and ``mlp models --card`` must answer in seconds. Importing MLflow's client
and opening its SQLAlchemy store costs about 2-3 CPU seconds here (10 s of wall time on
the slowest machine) before the first query, for a listing that reads a few rows. On the
embedded store (a local ``sqlite:///`` file) this view reads those rows with the
standard library instead, through a read-only connection, and only when the file's schema
revision is the one the pinned MLflow writes (:data:`SCHEMA_REVISION`, checked against
MLflow's own migration head by a test, as are the answers against ``MlflowClient``'s).
Anything else -- PostgreSQL, a tracking server, another schema -- gets ``None`` from
:func:`open_view` and goes through MLflow's client. Every write goes through MLflow.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from tasks.core.config import Settings, settings

# alembic head of the tracking/registry schema written by mlflow 3.17.2
SCHEMA_REVISION = "dc11669786a5"
WORKSPACE = "default"  # MLflow's default workspace (MLFLOW_WORKSPACE unset)
_DELETED = "Deleted_Internal"  # MLflow's stage of a soft-deleted version


class RegistryView:
    """Read-only queries on one MLflow SQLite file (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                     timeout=10)) as con:
            yield con

    def models(self) -> list[dict[str, Any]]:
        """Registered models by name: ``{"name", "aliases": {alias: version}}``."""
        with self._db() as con:
            names = [r[0] for r in con.execute(
                "SELECT name FROM registered_models WHERE workspace = ? ORDER BY name",
                (WORKSPACE,))]
            aliases: dict[str, dict[str, str]] = {n: {} for n in names}
            for alias, version, name in con.execute(
                    "SELECT alias, version, name FROM registered_model_aliases "
                    "WHERE workspace = ?", (WORKSPACE,)):
                if name in aliases:
                    aliases[name][alias] = str(version)
        return [{"name": n, "aliases": aliases[n]} for n in names]

    def versions(self, name: str) -> list[dict[str, Any]]:
        """The model's versions (newest first): version, run_id, description, tags."""
        with self._db() as con:
            rows = con.execute(
                "SELECT version, run_id, description FROM model_versions "
                "WHERE name = ? AND workspace = ? AND current_stage != ? "
                "ORDER BY version DESC", (name, WORKSPACE, _DELETED)).fetchall()
            tags: dict[int, dict[str, str]] = {}
            for key, value, version in con.execute(
                    "SELECT key, value, version FROM model_version_tags "
                    "WHERE name = ? AND workspace = ?", (name, WORKSPACE)):
                tags.setdefault(int(version), {})[key] = value
        return [{"version": str(v), "run_id": run_id, "description": desc or "",
                 "tags": tags.get(int(v), {})} for v, run_id, desc in rows]

    def version(self, name: str, version: str | None = None, alias: str | None = None
                ) -> dict[str, Any] | None:
        """One version, by number or by alias (None when there is no such version)."""
        if version is None:
            got = next((m["aliases"].get(alias or "") for m in self.models()
                        if m["name"] == name), None)
            if got is None:
                return None
            version = got
        return next((v for v in self.versions(name) if v["version"] == str(version)), None)

    def metric(self, run_id: str, key: str) -> float | None:
        """The run's latest value of a metric (what ``MlflowClient.get_run`` reports)."""
        with self._db() as con:
            row = con.execute("SELECT value, is_nan FROM latest_metrics "
                              "WHERE run_uuid = ? AND key = ?", (run_id, key)).fetchone()
        if row is None:
            return None
        return math.nan if row[1] else float(row[0])


def open_view(s: Settings | None = None) -> RegistryView | None:
    """The view of this installation's registry, or None where MLflow's client must answer.

    None for any store but an existing local SQLite file whose schema revision is
    :data:`SCHEMA_REVISION` (and whose registry tables exist).
    """
    import os

    s = s or settings()
    uri = s.tracking_uri
    if not uri.startswith("sqlite:///") or os.environ.get("MLFLOW_WORKSPACE"):
        return None
    path = Path(uri.removeprefix("sqlite:///"))
    if not path.is_file():
        return None
    try:
        view = RegistryView(path)
        with view._db() as con:
            revision = con.execute("SELECT version_num FROM alembic_version").fetchone()
            con.execute("SELECT name, workspace FROM registered_models LIMIT 0")
    except sqlite3.Error:
        return None
    return view if revision and revision[0] == SCHEMA_REVISION else None
