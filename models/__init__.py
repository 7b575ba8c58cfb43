"""Use cases: one module per use case, each exposing ``SPEC`` (a ``UseCaseSpec``).

Discovery is by module name, so adding a use case means adding a module here and a DAG
file; nothing else in the platform changes.
"""

from __future__ import annotations

import importlib
import pkgutil

from tasks.spec import UseCaseSpec


def names() -> list[str]:
    """Names of all use-case modules."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get(name: str) -> UseCaseSpec:
    """Load the spec of one use case.

    Raises:
        KeyError: No such use case (the message lists the known ones).

    """
    if name not in names():
        raise KeyError(f"unknown use case {name!r}; known: {', '.join(names())}")
    spec = importlib.import_module(f"{__name__}.{name}").SPEC
    if not isinstance(spec, UseCaseSpec):
        raise TypeError(f"models.{name}.SPEC is not a UseCaseSpec")
    return spec
