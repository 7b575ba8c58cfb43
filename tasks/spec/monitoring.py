"""Drift and skew thresholds a use case declares (``UseCaseSpec.drift``), with sane defaults.

New data (a training run's snapshot, a batch-scoring input, the server's logged requests)
is compared with the champion's training data column by column, and the model's
predictions on it with its predictions on its own test split
(:mod:`tasks.features.drift`). Each column gets a distance and a status against its
threshold: ``warn`` flags it in the report, ``fail`` (if set) stops a training run
before it trains (an operator can force it with a reason) and lets the monitoring DAG
start retraining when ``retrain_on_drift`` is on.

Distances: numeric columns by the population stability index (``psi``, default) or the
Jensen-Shannon distance (``jensen_shannon``, base 2, in [0, 1]) on the training split's
decile bins; categorical columns (and predicted classes) by the L-infinity distance (the
largest change of one category's share). The defaults follow common practice: PSI 0.1
"moderate shift" / 0.25 "significant shift"; a category whose share moves by 0.1 / 0.2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tasks.spec.errors import SpecError

NUMERIC_METRICS = ("psi", "jensen_shannon")


@dataclass(frozen=True)
class Threshold:
    """Warn and (optionally) fail levels of one distance.

    Attributes:
        warn: A column at or above this distance is flagged in the report.
        fail: A column at or above this distance fails the check (None: never fails).

    """

    warn: float
    fail: float | None = None

    def __post_init__(self) -> None:
        if self.warn < 0 or (self.fail is not None and self.fail < self.warn):
            raise SpecError(f"drift threshold needs 0 <= warn <= fail, got warn={self.warn} "
                            f"fail={self.fail}")


_DEFAULTS = {"psi": Threshold(0.1, 0.25), "jensen_shannon": Threshold(0.1, 0.2)}


@dataclass(frozen=True)
class DriftSpec:
    """How drift and training/serving skew are judged for one use case.

    Attributes:
        numeric_metric: ``psi`` or ``jensen_shannon`` for numeric columns.
        numeric: Thresholds of numeric columns (default: PSI 0.1 / 0.25, or JS 0.1 / 0.2).
        categorical: L-infinity thresholds of categorical columns and predicted classes.
        columns: Per-column overrides by profile name (``V3``, ``image.mean``,
            ``prediction:probabilities.class``).
        min_rows: Fewer new rows than this are not judged (the report says so): small
            samples differ from the reference by chance.
        check_training: Compare every training run's snapshot with the champion's data
            before training (the ``analyze`` task).
        monitor_schedule: Cron (UTC) of the ``<use case>_monitor`` DAG that compares the
            server's logged requests with the champion's training data; None: manual only.
        retrain_on_drift: When the monitoring DAG finds a column past its ``fail``
            threshold, start retraining on the latest landed data (off by default).

    """

    numeric_metric: str = "psi"
    numeric: Threshold | None = None
    categorical: Threshold = Threshold(0.1, 0.2)
    columns: Mapping[str, Threshold] = field(default_factory=dict)
    min_rows: int = 100
    check_training: bool = True
    monitor_schedule: str | None = "0 * * * *"
    retrain_on_drift: bool = False

    def __post_init__(self) -> None:
        if self.numeric_metric not in NUMERIC_METRICS:
            raise SpecError(f"drift numeric_metric {self.numeric_metric!r}: choose one of "
                            f"{list(NUMERIC_METRICS)}")
        if self.min_rows < 1:
            raise SpecError(f"drift min_rows must be >= 1, got {self.min_rows}")
        if self.monitor_schedule is not None and not self.monitor_schedule.startswith("@"):
            from croniter import croniter

            if not croniter.is_valid(self.monitor_schedule):
                raise SpecError(f"drift monitor_schedule {self.monitor_schedule!r} is not a "
                                "valid cron string")

    def metric(self, kind: str) -> str:
        """The distance used for a column kind (``numeric``, ``intensity``, ``categorical``)."""
        return "linf" if kind == "categorical" else self.numeric_metric

    def threshold(self, name: str, kind: str) -> Threshold:
        """The thresholds of one profile column (its override, else its kind's)."""
        if name in self.columns:
            return self.columns[name]
        if kind == "categorical":
            return self.categorical
        return self.numeric or _DEFAULTS[self.numeric_metric]
