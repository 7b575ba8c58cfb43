"""Discovery of use cases: every module of the ``models`` package exposing ``SPEC``.

The platform never imports a use-case module by name in code: it asks the catalog, which
imports ``models.<name>`` dynamically. Adding a use case is adding a module (and its DAG
file); nothing in the platform changes.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil

from tasks.spec.usecase import SpecError, UseCaseSpec

PACKAGE = "models"


class UnknownUseCase(KeyError):
    """No use-case module of that name; ``str()`` lists the known ones and a close match."""

    def __str__(self) -> str:
        return str(self.args[0])


def names() -> list[str]:
    """Names of all use-case modules (``models/<name>.py``, not starting with ``_``)."""
    package = importlib.import_module(PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                  if not m.name.startswith("_"))


def get(name: str) -> UseCaseSpec:
    """Load the spec of one use case.

    Raises:
        UnknownUseCase: No such use case (the message lists the known ones and suggests
            the closest name).
        SpecError: The module's ``SPEC`` is missing or not a ``UseCaseSpec``.

    """
    known = names()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownUseCase(f"unknown use case {name!r}{hint}; known: {', '.join(known)}")
    spec = getattr(importlib.import_module(f"{PACKAGE}.{name}"), "SPEC", None)
    if not isinstance(spec, UseCaseSpec):
        raise SpecError(f"{PACKAGE}/{name}.py must define SPEC = UseCaseSpec(...)")
    return spec
