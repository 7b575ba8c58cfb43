"""Row checks before anything is landed: one scan shared by ingest, validate and preprocessing.

A source checks its rows where it reads them (``read_batches``: labels in range, numbers
that parse, no empty cells, allowed values; bad rows ride along as ``_bad`` records with
file, line or record, field, value and reason). Preprocessing quarantines those rows;
:func:`scan_rows` runs the very same checks without Beam, so that

- ``mlp ingest`` and the DAG's ingest refuse, before anything is landed, data that
  preprocessing would refuse (more bad rows than the run's ``max_bad_fraction``);
- ``mlp validate`` reports dirty rows in seconds (sources with a quick check:
  ``sample_batches``; big files are sampled, and the note says so).

:func:`bad_rows_message` is the one wording of the refusal, used by both ingest and
preprocessing, naming the first bad row and the run param that would tolerate it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tasks.core.errors import PermanentError

SAMPLE_BYTES = 32 << 20  # mlp validate reads at most this much of each file
EXAMPLES = 3  # first rows kept per (field, reason)
BATCH = 1 << 16


class TooManyBadRows(PermanentError, ValueError):
    """More rows fail the source's row checks than ``max_bad_fraction`` tolerates."""


def _where(record: Mapping[str, Any]) -> str:
    if record.get("line") is not None:
        return f"line {record['line']}"
    return f"row {record['row']}"


def describe(record: Mapping[str, Any]) -> str:
    """``<file> line 21 field 'ash': missing value (value '')``."""
    fld = f" field {record['field']!r}" if record.get("field") is not None else ""
    value = record.get("value")
    shown = f" (value {value!r:.80})" if value is not None else ""
    return f"{record.get('file')} {_where(record)}{fld}: {record.get('reason')}{shown}"


def tolerated_fraction(bad: int, total: int) -> float:
    """A round ``max_bad_fraction`` just above ``bad / total`` (what to pass to accept it)."""
    if not total or not bad:
        return 0.0
    frac = bad / total
    step = 10 ** math.floor(math.log10(frac))
    return min(1.0, round(math.ceil(frac / step - 1e-9) * step, 12))


def bad_rows_message(bad: int, total: int, max_fraction: float,
                     first: Mapping[str, Any], where: str = "") -> str | None:
    """Why the data is refused, or None when ``bad`` rows of ``total`` are tolerated.

    The message names the first bad row (file, line or record, field, reason), the run
    param and the value that would quarantine the bad rows instead.
    """
    if total and bad / total <= max_fraction:
        return None
    if not total:
        return "no rows were read from the source"
    return (f"{bad} of {total} rows are bad (max_bad_fraction {max_fraction:g}); first: "
            f"{describe(first)}{where}. Fix the file, or quarantine the bad rows with "
            f"--param max_bad_fraction={tolerated_fraction(bad, total):g}")


@dataclass
class RowScan:
    """What the row checks found over a source's files.

    Attributes:
        rows: Rows read (good and bad).
        bad: Rows that fail a check.
        problems: ``(field, reason)`` -> ``{"count", "examples"}`` (first rows, with file,
            line or record, field, value and reason), in order of first appearance.
        notes: What was sampled rather than read whole.

    """

    rows: int = 0
    bad: int = 0
    problems: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, records: list[dict[str, Any]]) -> None:
        """Count bad-row records (keeping the first few of each kind)."""
        for r in records:
            reason = str(r.get("reason"))
            # "expected 14 fields, got 13" and "not one of [...]" group by their kind.
            kind = reason.split(",")[0] if reason.startswith("expected ") else reason
            entry = self.problems.setdefault((str(r.get("field")), kind),
                                             {"count": 0, "examples": []})
            entry["count"] += 1
            if len(entry["examples"]) < EXAMPLES:
                entry["examples"].append(r)
        self.bad += len(records)

    @property
    def first(self) -> dict[str, Any] | None:
        """The first bad row found (file order within each partition)."""
        firsts = [e["examples"][0] for e in self.problems.values()]
        return min(firsts, key=lambda r: (str(r.get("partition")), r.get("row") or 0),
                   default=None)

    def refusal(self, max_fraction: float, where: str = "") -> str | None:
        """The refusal message under ``max_fraction``, or None when tolerated."""
        if not self.rows:
            return None  # nothing read (e.g. the source has no quick check)
        return bad_rows_message(self.bad, self.rows, max_fraction, self.first or {}, where)

    def report(self) -> list[str]:
        """One line per kind of problem: count, then its first rows."""
        lines = []
        for (fld, kind), entry in self.problems.items():
            rows = "; ".join(_where(r) + (f" {r['value']!r:.40}" if r.get("value")
                                          not in (None, "") else "")
                             for r in entry["examples"])
            file = entry["examples"][0].get("file")
            named = f"field {fld!r}" if fld != "None" else "row"
            lines.append(f"{file} {named}: {kind}: {entry['count']} row"
                         f"{'s' if entry['count'] != 1 else ''} ({rows}"
                         f"{', ...' if entry['count'] > len(entry['examples']) else ''})")
        return lines


def scan_rows(source: Any, files: Mapping[str, str], *, sample_bytes: int | None = None,
              quick_only: bool = False, decode: bool = True) -> RowScan:
    """Run the source's row checks over its files (no Beam, nothing written).

    Args:
        source: The use case's data source.
        files: File keys -> paths (``source.files(...)``).
        sample_bytes: Read at most this much of each file (sources with
            ``sample_batches``); None reads everything.
        quick_only: Only sources with a quick check (``sample_batches``: tabular files,
            IDX labels); others return an empty scan (their checks need a full read,
            which ingest and preprocessing do).
        decode: Also sources whose row check is decoding every file (media:
            ``decodes_rows``); without, they return an empty scan.

    Returns:
        Rows read, bad rows by field and reason (first examples), notes on sampling.

    """
    scan = RowScan()
    sample = getattr(source, "sample_batches", None)
    if sample is None and (quick_only or (not decode and getattr(source, "decodes_rows",
                                                                 False))):
        return scan
    for part in sorted(source.partitions()):
        if sample is not None:
            batches, note = sample(files, part, BATCH, sample_bytes)
            if note:
                scan.notes.append(note)
        else:
            batches = source.read_batches(files, part, BATCH)
        for batch in batches:
            scan.rows += len(batch["row"]) + len(batch["_bad"])
            scan.add(batch["_bad"])
    return scan
