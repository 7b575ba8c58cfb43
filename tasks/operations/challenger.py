"""``mlp models --set-challenger``: infra-validate a version, then make it the challenger.

The version must load as the server loads it and answer its own serving example
(:func:`tasks.steps.infra_validation.validate`) before the ``challenger`` alias moves, as
a deploy with ``rollout=shadow`` does: a challenger that cannot serve would only show up
as dropped shadow samples.
"""

from __future__ import annotations

from typing import Any

from tasks.core.config import Settings
from tasks.steps.infra_validation import InfraValidationError, validate
from tasks.tracking import CHAMPION, configure
from tasks.tracking.challenger import CHALLENGER, set_challenger
from tasks.tracking.registry import RegistryError


def set_challenger_checked(name: str, version: str, s: Settings | None = None,
                           why: str = "") -> dict[str, Any]:
    """Infra-validate ``name``/``version``, then point ``challenger`` at it (recorded).

    Raises:
        RegistryError: Unknown model or version, the version is the champion, or it
            fails infra validation (the alias does not move).

    """
    from mlflow.exceptions import MlflowException

    client = configure(s)
    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(f"{name} has no version {version} (or no such model)") from exc
    aliases = client.get_registered_model(name).aliases or {}
    if str(aliases.get(CHAMPION)) == str(mv.version):
        raise RegistryError(f"version {mv.version} of {name} is the {CHAMPION}; a "
                            f"{CHALLENGER} must be another version")
    try:
        validate(name, str(mv.version), mv.run_id, s, alias=CHALLENGER)
    except InfraValidationError as exc:
        raise RegistryError(str(exc)) from exc
    return set_challenger(name, str(mv.version), s, why=why
                          or "set by an operator (mlp models --set-challenger)")
