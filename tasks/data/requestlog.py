"""Reader of the server's sampled request logs (the monitor's input).

``mlp serve`` samples requests into ``$MLP_HOME/requests/<model>/`` as rotating files
``requests-<UTC %Y%m%dT%H%M%S%fZ>.jsonl``; the file being written ends in ``.jsonl.open``
and is renamed when it rotates or the server stops, so only closed ``.jsonl`` files are
read. One JSON object per sampled request::

    {"ts": "...", "model": "mnist", "version": "3", "status": 200, "latency_ms": 1.9,
     "n": 2, "inputs": {"<input name>": [<instance values>...]},
     "outputs": {"<output name>": [...]}}

``inputs`` are columnar by model input name, as the model got them after request
decoding. Unknown keys are ignored; requests that failed (status other than 200) or lack
inputs/outputs are counted and skipped; a line that is not JSON is counted as malformed
with its file and line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PREFIX, SUFFIX = "requests-", ".jsonl"


def log_dir(root: Path, model: str) -> Path:
    """``<root>/requests/<model>``: where the server logs a model's sampled requests."""
    return Path(root) / "requests" / model


def closed_files(location: Path, after: str | None = None) -> list[Path]:
    """Closed request-log files (sorted by their UTC stamp), newer than ``after`` if given.

    ``location`` is a folder of log files or one file.
    """
    location = Path(location)
    if location.is_file():
        return [location]
    if not location.is_dir():
        return []
    files = sorted(p for p in location.iterdir()
                   if p.is_file() and p.name.startswith(PREFIX) and p.name.endswith(SUFFIX))
    return [p for p in files if after is None or p.name > after]


@dataclass
class LoggedBatch:
    """The instances of one logged request: its version, inputs and outputs by name."""

    version: str
    ts: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values()))) if self.inputs else 0


@dataclass
class ReadStats:
    """What reading found besides usable requests."""

    requests: int = 0
    instances: int = 0
    failed: int = 0
    malformed: list[dict[str, Any]] = field(default_factory=list)
    first_ts: str | None = None
    last_ts: str | None = None


def _array(values: Any) -> np.ndarray:
    try:
        return np.asarray(values)
    except ValueError:  # ragged lists
        return np.asarray(values, dtype=object)


def read_requests(files: list[Path], stats: ReadStats | None = None) -> Iterator[LoggedBatch]:
    """The successful logged requests of ``files`` in order (see the module docstring)."""
    stats = stats if stats is not None else ReadStats()
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    if not isinstance(rec, dict):
                        raise ValueError("not a JSON object")
                except ValueError as exc:
                    stats.malformed.append({"file": str(path), "line": line_no,
                                            "reason": f"not a JSON object: {exc}"[:200]})
                    continue
                if rec.get("status", 200) != 200 or not rec.get("inputs") or \
                        not isinstance(rec.get("inputs"), dict):
                    stats.failed += 1
                    continue
                batch = LoggedBatch(str(rec.get("version", "")), str(rec.get("ts", "")),
                                    {k: _array(v) for k, v in rec["inputs"].items()},
                                    {k: _array(v) for k, v in (rec.get("outputs") or {}).items()})
                stats.requests += 1
                stats.instances += len(batch)
                if batch.ts:
                    stats.first_ts = min(stats.first_ts or batch.ts, batch.ts)
                    stats.last_ts = max(stats.last_ts or batch.ts, batch.ts)
                yield batch


def write_requests(path: Path, records: list[dict[str, Any]]) -> Path:
    """Write request-log records as a closed log file (tests and replays)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
