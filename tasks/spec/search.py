"""Search spaces of hyper-parameter tuning, declared on the run params they vary.

A use case puts the space beside the param itself, so the param's default, bounds and
search range have one source of truth::

    "learning_rate": RunParam(0.01, "number", "Adam learning rate", minimum=1e-6,
                              maximum=10.0, search=LogUniform(1e-4, 1e-1)),

:func:`problems` is what ``mlp validate`` checks (a known distribution, its range inside
the param's bounds and choices, the param's type); :mod:`tasks.steps.tune` turns each
distribution into Optuna's. Pure data: cheap to import (no Optuna here), as DAG files build
specs at parse time. :class:`TuneSpec` says what a trial is judged on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from ``[low, high]``."""

    low: float
    high: float

    def describe(self) -> str:
        """Short text for reports and model cards."""
        return f"uniform({self.low:g}, {self.high:g})"


@dataclass(frozen=True)
class LogUniform:
    """A float drawn uniformly in log space from ``[low, high]`` (``low > 0``)."""

    low: float
    high: float

    def describe(self) -> str:
        """Short text for reports and model cards."""
        return f"log-uniform({self.low:g}, {self.high:g})"


@dataclass(frozen=True)
class IntRange:
    """An integer from ``low`` to ``high`` inclusive, by ``step`` (or in log space)."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    def describe(self) -> str:
        """Short text for reports and model cards."""
        how = ", log" if self.log else (f", step {self.step}" if self.step != 1 else "")
        return f"int({self.low}..{self.high}{how})"


@dataclass(frozen=True)
class Choice:
    """One of a few values (numbers, strings or booleans)."""

    values: tuple[Any, ...]

    def describe(self) -> str:
        """Short text for reports and model cards."""
        return "choice(" + ", ".join(repr(v) for v in self.values) + ")"


DISTRIBUTIONS = (Uniform, LogUniform, IntRange, Choice)
DIRECTIONS = ("minimize", "maximize")


@dataclass(frozen=True)
class TuneSpec:
    """What a tuning trial is judged on, and how bad trials are stopped early.

    Attributes:
        metric: A per-epoch validation value of the Keras logs (``val_loss``,
            ``val_accuracy`` ...); the trial's value is its last epoch's, reported every
            epoch to the pruner.
        direction: ``minimize`` or ``maximize``.
        warmup_epochs: Epochs every trial runs before the pruner may stop it.
        startup_trials: Trials that finish before any pruning (and before the sampler
            stops drawing at random).

    """

    metric: str = "val_loss"
    direction: str = "minimize"
    warmup_epochs: int = 2
    startup_trials: int = 3


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def problems(name: str, param: Any) -> list[str]:
    """What is wrong with the search space of run param ``name`` (empty when fine or absent).

    Args:
        name: The run param's name.
        param: Its :class:`~tasks.spec.usecase.RunParam`.

    Returns:
        One sentence per problem.

    """
    space = getattr(param, "search", None)
    if space is None:
        return []
    if not isinstance(space, DISTRIBUTIONS):
        kinds = ", ".join(d.__name__ for d in DISTRIBUTIONS)
        return [f"search {space!r} is not a known distribution; use one of {kinds} "
                "(tasks.spec.search)"]
    if isinstance(space, Choice):
        return _choice_problems(param, space)
    out = []
    if param.type not in ("number", "integer"):
        out.append(f"{type(space).__name__} searches a number, but {name} is a "
                   f"{param.type}; use Choice(...)")
        return out
    if param.type == "integer" and not isinstance(space, IntRange):
        out.append(f"{name} is an integer: search it with IntRange(low, high) or Choice(...)")
    if isinstance(space, IntRange) and param.type != "integer":
        out.append(f"IntRange draws integers, but {name} is a number; use Uniform or "
                   "LogUniform")
    if not (_number(space.low) and _number(space.high)) or not space.low < space.high:
        out.append(f"search range [{space.low}, {space.high}] is empty: low must be "
                   "below high")
        return out
    if (isinstance(space, LogUniform) or getattr(space, "log", False)) and space.low <= 0:
        out.append(f"a log-scale search needs low > 0, got {space.low}")
    if isinstance(space, IntRange) and (space.step < 1 or (space.log and space.step != 1)):
        out.append(f"IntRange step must be >= 1 (and 1 with log=True), got {space.step}")
    if param.minimum is not None and space.low < param.minimum:
        out.append(f"search low {space.low:g} is below the param's minimum "
                   f"{param.minimum:g}")
    if param.maximum is not None and space.high > param.maximum:
        out.append(f"search high {space.high:g} is above the param's maximum "
                   f"{param.maximum:g}")
    return out


def _choice_problems(param: Any, space: Choice) -> list[str]:
    if not space.values or len(set(space.values)) != len(space.values):
        return [f"Choice needs distinct values, got {list(space.values)}"]
    want = {"integer": int, "number": (int, float), "string": str, "boolean": bool}.get(
        param.type)
    out = []
    for v in space.values:
        if want is not None and (not isinstance(v, want)
                                 or (isinstance(v, bool) and param.type != "boolean")):
            out.append(f"choice {v!r} is not of the param's type {param.type}")
        elif param.enum is not None and v not in param.enum:
            out.append(f"choice {v!r} is not one of the param's values {list(param.enum)}")
        elif _number(v) and param.minimum is not None and v < param.minimum:
            out.append(f"choice {v!r} is below the param's minimum {param.minimum:g}")
        elif _number(v) and param.maximum is not None and v > param.maximum:
            out.append(f"choice {v!r} is above the param's maximum {param.maximum:g}")
    return out


def search_space(params: Any) -> dict[str, Any]:
    """Run param name -> distribution, for the params that declare one."""
    return {k: p.search for k, p in params.items() if getattr(p, "search", None) is not None}
