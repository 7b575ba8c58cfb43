"""The error a use-case spec raises when it is inconsistent (shared by the spec modules)."""

from __future__ import annotations

from tasks.core.errors import PermanentError


class SpecError(PermanentError, ValueError):
    """A use-case spec is inconsistent; raised at DAG parse time, never silently passed."""
