"""Typed use-case specification: what a module in ``models/`` declares.

A use case is data (a spec object), not code paths in the platform: the DAG factory and
every step read what they need from here. Specs are cheap to import (no TensorFlow, no
Beam, no I/O) because DAG files build them at parse time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class SpecError(ValueError):
    """A use-case spec is inconsistent; raised at DAG parse time, never silently passed."""


@dataclass(frozen=True)
class GateSpec:
    """Deployment gate: absolute bounds plus a comparison with the current champion.

    Attributes:
        metric: Metric name as logged by the evaluation step (e.g. ``test_accuracy``).
        min_value: Candidate must reach at least this value (if set).
        max_value: Candidate must stay at or below this value (if set).
        higher_is_better: Direction of the metric, used for the champion comparison.
        max_regression: Largest allowed absolute regression versus the champion
            (``0.0`` = must not be worse; ``None`` = no champion comparison).

    """

    metric: str
    min_value: float | None = None
    max_value: float | None = None
    higher_is_better: bool = True
    max_regression: float | None = 0.0

    def __post_init__(self) -> None:
        if self.min_value is None and self.max_value is None:
            raise SpecError(
                f"gate on {self.metric!r} has no value threshold: set min_value or max_value "
                "(a gate without thresholds would bless everything)"
            )
        if self.max_regression is not None and self.max_regression < 0:
            raise SpecError(f"gate max_regression must be >= 0, got {self.max_regression}")


@dataclass(frozen=True)
class RunParam:
    """A typed run-time knob, rendered by Airflow as a field of the trigger form."""

    default: Any
    type: str
    description: str
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[Any, ...] | None = None

    def schema(self) -> dict[str, Any]:
        """JSON-schema keywords for ``airflow.sdk.Param``."""
        out: dict[str, Any] = {"type": self.type, "description": self.description}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.enum is not None:
            out["enum"] = list(self.enum)
        return out


@dataclass(frozen=True)
class SplitSpec:
    """How source partitions become train/validation/test.

    Attributes:
        validation_from: Source partition the validation split is carved from.
        validation_size: Number of rows moved from ``validation_from`` to validation.
        stratify_by: Column whose class proportions the carve-out preserves (or None).
        partition_to_split: Where each remaining source partition goes.
        seed: Seed of the split and of the global shuffle.
        shards: Number of TFRecord shards per output split.

    """

    validation_from: str = "train"
    validation_size: int = 0
    stratify_by: str | None = None
    partition_to_split: Mapping[str, str] = field(
        default_factory=lambda: {"train": "train", "test": "test"}
    )
    seed: int = 42
    shards: Mapping[str, int] = field(
        default_factory=lambda: {"train": 4, "validation": 1, "test": 1}
    )


class DataSource(Protocol):
    """Where raw data comes from and how it is validated and read in batches."""

    default_location: str

    def files(self, location: str) -> dict[str, str]:
        """Resolve the named raw files under ``location``; raise naming what is missing."""
        ...

    def validate(self, files: Mapping[str, str]) -> dict[str, Any]:
        """Check the raw files; raise a clear error naming file and field; return facts."""
        ...

    def partitions(self) -> dict[str, dict[str, str]]:
        """Source partitions (``train``, ``test`` ...): field -> key into :meth:`files`."""
        ...

    def read_batches(
        self, files: Mapping[str, str], partition: str, batch_size: int
    ) -> Any:
        """Yield column batches (dicts of numpy arrays, with a ``row`` index) in file order."""
        ...

    def row_errors(self, batch: Mapping[str, Any]) -> list[tuple[int, str, Any, str]]:
        """Per-row problems of a batch as (index in batch, field, value, reason)."""
        ...

    def feature_spec(self) -> dict[str, dict[str, Any]]:
        """TFRecord feature spec: name -> {dtype, shape, encoding}."""
        ...


@dataclass(frozen=True)
class ModelSpec:
    """Model side of a use case.

    Attributes:
        build: ``build(params, stats) -> keras.Model`` (compiled); imports Keras lazily.
        input_key: Feature name fed to the model.
        label_key: Feature name of the target.
        task: ``classification`` or ``regression``; selects the evaluation metrics.
        class_names: Human-readable class labels (classification).

    """

    build: Callable[[Mapping[str, Any], Mapping[str, Any]], Any]
    input_key: str
    label_key: str
    task: str = "classification"
    class_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class UseCaseSpec:
    """Everything the platform needs to run one use case end to end."""

    name: str
    description: str
    source: DataSource
    split: SplitSpec
    model: ModelSpec
    gate: GateSpec
    params: Mapping[str, RunParam]
    schedule: str | None = None
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise SpecError(f"use-case name {self.name!r} must be a Python identifier")
        for required in ("epochs", "batch_size"):
            if required not in self.params:
                raise SpecError(f"use case {self.name!r} lacks the run param {required!r}")
