"""Phase timings of a run, for ``bench/pipeline.py`` (nothing happens unless asked).

When ``MLP_TIMINGS_FILE`` names a file, :func:`phase` appends one JSON line per phase
(``{"phase", "start", "end", "pid"}``, epoch seconds) and :func:`mark` one per instant;
otherwise both cost a dictionary lookup. The bench reads the file to split a run's wall
time into process start, database migration, DAG parsing, each task's start-up, fitting,
MLflow logging and export.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator

ENV = "MLP_TIMINGS_FILE"


def _write(record: dict[str, object]) -> None:
    path = os.environ.get(ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({**record, "pid": os.getpid()}) + "\n")


def mark(name: str) -> None:
    """Record an instant (e.g. a process reached its main function)."""
    if os.environ.get(ENV):
        _write({"mark": name, "t": time.time()})


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Record how long the block took (also when it raises)."""
    if not os.environ.get(ENV):
        yield
        return
    start = time.time()
    try:
        yield
    finally:
        _write({"phase": name, "start": start, "end": time.time()})
