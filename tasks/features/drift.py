"""Drift and skew: per-column distances between a reference and new histograms (pure).

The reference is the champion's training data (and its predictions on its own test
split); the new data is a training run's snapshot, a batch-scoring input or the
server's logged requests, counted on the reference's bins
(:class:`tasks.features.profile.Histogram`). Every column gets three distances computed
with scipy where it has them:

- the population stability index ``psi = sum((q - p) * ln(q / p))`` (shares floored at
  1e-4, so an empty bin counts as a large change rather than an infinite one);
- the Jensen-Shannon distance (``scipy.spatial.distance.jensenshannon``, base 2: 0 for
  equal distributions, 1 for disjoint ones);
- the L-infinity distance ``max |q - p|`` (TFX's measure for categorical features).

The use case's :class:`~tasks.spec.monitoring.DriftSpec` picks the one that decides per
kind (PSI or JS for numbers and pixel intensities, L-infinity for categories) and its
``warn``/``fail`` thresholds. A column with fewer new rows than ``min_rows`` is reported
but not judged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tasks.spec import DriftSpec

OK, WARN, FAIL, NOT_JUDGED = "ok", "warn", "fail", "not judged"
_RANK = {NOT_JUDGED: 0, OK: 1, WARN: 2, FAIL: 3}
_FLOOR = 1e-4
PREDICTION = "prediction:"  # prefix of prediction columns in reports and thresholds


def shares(counts: Sequence[float]) -> np.ndarray:
    """Counts as shares summing to 1 (all zeros stay zeros)."""
    c = np.asarray(counts, np.float64)
    total = c.sum()
    return c / total if total > 0 else c


def distances(reference: Sequence[float], current: Sequence[float]) -> dict[str, float]:
    """PSI, Jensen-Shannon and L-infinity distances between two count vectors."""
    from scipy.spatial.distance import jensenshannon

    p, q = shares(reference), shares(current)
    pf, qf = np.maximum(p, _FLOOR), np.maximum(q, _FLOOR)
    js = float(jensenshannon(pf, qf, base=2)) if p.sum() and q.sum() else 0.0
    return {"psi": float(np.sum((qf - pf) * np.log(qf / pf))),
            "jensen_shannon": 0.0 if not np.isfinite(js) else js,
            "linf": float(np.max(np.abs(q - p))) if len(p) else 0.0}


@dataclass(frozen=True)
class ColumnDrift:
    """One column's comparison.

    Attributes:
        name: Profile column (predictions prefixed ``prediction:``).
        kind: ``numeric``, ``categorical`` or ``intensity``.
        metric: The distance that decides (``psi``, ``jensen_shannon`` or ``linf``).
        value: Its value (None when not judged).
        distances: All three distances.
        warn: Warn threshold.
        fail: Fail threshold (None: never fails).
        status: ``ok``, ``warn``, ``fail`` or ``not judged``.
        reference_rows: Rows of the reference.
        current_rows: Rows of the new data.
        note: Why a column is not judged, if it is not.

    """

    name: str
    kind: str
    metric: str
    value: float | None
    distances: dict[str, float]
    warn: float
    fail: float | None
    status: str
    reference_rows: int
    current_rows: int
    note: str = ""

    @property
    def severity(self) -> float:
        """How far past its warn threshold (ratio; 0 when not judged): worst first."""
        if self.value is None:
            return 0.0
        if self.warn > 0:
            return self.value / self.warn
        return 1e9 if self.value > 0 else 0.0


def compare(reference: Mapping[str, Mapping[str, Any]], current: Mapping[str, Mapping[str, Any]],
            spec: DriftSpec, prefix: str = "") -> list[ColumnDrift]:
    """Compare every reference column with the same column of the new data.

    Args:
        reference: Histograms of the reference (its bins).
        current: Histograms of the new data on the same bins.
        spec: Metrics and thresholds.
        prefix: Prepended to column names (``prediction:`` for outputs).

    Returns:
        One :class:`ColumnDrift` per reference column, worst first.

    """
    out = []
    for name, ref in reference.items():
        label = f"{prefix}{name}"
        kind = ref["kind"]
        metric = spec.metric(kind)
        th = spec.threshold(label, kind)
        cur = current.get(name)
        ref_rows = int(ref.get("rows", sum(ref["counts"])))
        if cur is None or list(cur.get("edges", cur.get("values", []))) != list(
                ref.get("edges", ref.get("values", []))):
            out.append(ColumnDrift(label, kind, metric, None, {}, th.warn, th.fail, NOT_JUDGED,
                                   ref_rows, 0, "no data for this column" if cur is None
                                   else "counted on other bins"))
            continue
        cur_rows = int(cur.get("rows", sum(cur["counts"])))
        d = distances(ref["counts"], cur["counts"])
        if min(cur_rows, ref_rows) < spec.min_rows:
            out.append(ColumnDrift(label, kind, metric, None, d, th.warn, th.fail, NOT_JUDGED,
                                   ref_rows, cur_rows,
                                   f"fewer than min_rows={spec.min_rows} rows"))
            continue
        value = d[metric]
        status = (FAIL if th.fail is not None and value >= th.fail
                  else WARN if value >= th.warn else OK)
        out.append(ColumnDrift(label, kind, metric, value, d, th.warn, th.fail, status,
                               ref_rows, cur_rows))
    return sorted(out, key=lambda c: (-_RANK[c.status], -c.severity, c.name))


@dataclass
class DriftReport:
    """Everything one comparison found, with the histograms it compared (for the PNG).

    Attributes:
        kind: ``drift`` (new data against training data) or ``skew`` (logged requests
            against training data).
        reference: What the reference is (model, version, run, data).
        current: What the new data is (location, rows, time range).
        columns: Per-column comparisons, worst first.
        histograms: ``{"reference": {name: hist}, "current": {name: hist}}``.
        notes: What could not be compared, and why.

    """

    kind: str
    reference: dict[str, Any]
    current: dict[str, Any]
    columns: list[ColumnDrift] = field(default_factory=list)
    histograms: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"reference": {}, "current": {}})
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """The worst column status (``not judged`` when nothing could be judged)."""
        return max((c.status for c in self.columns), key=_RANK.__getitem__, default=NOT_JUDGED)

    def with_status(self, *statuses: str) -> list[ColumnDrift]:
        """Columns in one of the given statuses, worst first."""
        return [c for c in self.columns if c.status in statuses]

    @property
    def failing(self) -> list[ColumnDrift]:
        """Columns past their fail threshold."""
        return self.with_status(FAIL)

    @property
    def flagged(self) -> list[ColumnDrift]:
        """Columns past their warn threshold (fail included)."""
        return self.with_status(FAIL, WARN)

    def summary(self) -> str:
        """One line: the status and the flagged columns with their distances."""
        flagged = self.flagged
        if not flagged:
            judged = sum(c.status != NOT_JUDGED for c in self.columns)
            return (f"{self.kind}: {self.status}; no column past its warn threshold "
                    f"({judged} of {len(self.columns)} columns judged)")
        return f"{self.kind}: {self.status}; " + ", ".join(
            f"{c.name} {c.metric} {c.value:.3g} ({c.status} >= "
            f"{c.fail if c.status == FAIL else c.warn:g})" for c in flagged)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able report (the histograms included)."""
        return {"kind": self.kind, "status": self.status, "summary": self.summary(),
                "reference": self.reference, "current": self.current,
                "columns": [{**asdict(c), "severity": c.severity if c.value is not None
                             else None} for c in self.columns],
                "histograms": self.histograms, "notes": self.notes}
