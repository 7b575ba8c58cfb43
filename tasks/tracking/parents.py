"""Models built on other registered models: resolving the parent, and its lineage tags.

A use case that declares ``ModelSpec.parent`` (:class:`tasks.spec.ParentModel`) is built
on a version of another registered model, named by alias (``cifar10@champion``). The
training step resolves the alias once, when the run starts (:func:`resolve_parent`),
loads that exact version (:func:`load_parent`) and records it on the training run as the
tags :data:`PARENT_TAGS`; the deploy step copies them onto the registered version
(:func:`parent_tags`). The builder copies what it takes from the parent into the new
model, so the registered model does not refer to the parent: moving or deleting the
parent's alias later leaves it intact, and the tags still say which version it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasks.core.config import Settings
from tasks.core.errors import PermanentError
from tasks.tracking.store import configure

PARENT_TAGS = ("parent_model", "parent_alias", "parent_version", "parent_run_id")


class ParentMissing(PermanentError, LookupError):
    """The parent alias names no version: the parent use case must run (and deploy) first."""


@dataclass(frozen=True)
class ResolvedParent:
    """One registered version a model is built on (what the alias named at training time)."""

    name: str
    alias: str
    version: str
    run_id: str

    @property
    def uri(self) -> str:
        """The version's model URI (by number: immune to later alias moves)."""
        return f"models:/{self.name}/{self.version}"

    def tags(self) -> dict[str, str]:
        """The lineage tags of a model built on this version."""
        return dict(zip(PARENT_TAGS, (self.name, self.alias, self.version, self.run_id or ""),
                        strict=True))


def resolve_parent(name: str, alias: str, s: Settings | None = None) -> ResolvedParent:
    """The version ``name@alias`` names now.

    Raises:
        ParentMissing: No such registered model or alias (the message says what to run).

    """
    from mlflow.exceptions import MlflowException

    client = configure(s)
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise ParentMissing(
            f"this model is built on the registered model {name!r} at alias {alias!r}, which "
            f"does not exist: run `mlp run {name}` (its deploy sets {alias!r}) first"
        ) from exc
    return ResolvedParent(name, alias, str(mv.version), mv.run_id or "")


def load_parent(parent: ResolvedParent, s: Settings | None = None) -> Any:
    """The parent version as a Keras model, loaded as the server loads it."""
    from tasks.tracking.loader import load_registered

    return load_registered(parent.name, parent.version, s).model


def parent_tags(run_tags: Mapping[str, str]) -> dict[str, str]:
    """The parent lineage tags among a training run's tags (empty for other models)."""
    return {k: run_tags[k] for k in PARENT_TAGS if k in run_tags}
