"""Progress lines for people: one line per step start and end, one per epoch.

Every line is logged (logger ``mlp.progress``) and, when ``MLP_PROGRESS_FILE`` names a
file, appended to it: ``mlp run`` runs the pipeline in a child process whose full
Airflow/Beam/TensorFlow output goes to a log file, and prints only these lines from the
progress file, whatever the task runner does with logging handlers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from datetime import datetime

log = logging.getLogger("mlp.progress")
ENV = "MLP_PROGRESS_FILE"


def report(message: str, *args: object) -> None:
    """Log one progress line and append it to the progress file, if one is set."""
    text = message % args if args else message
    log.info(text)
    path = os.environ.get(ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{datetime.now():%H:%M:%S} {text}\n")


class StepOutcome:
    """What a step says when it ends (set ``summary`` inside the ``with`` block)."""

    summary: str = ""


@contextlib.contextmanager
def step(name: str, use_case: str, run_key: str) -> Iterator[StepOutcome]:
    """Report a step's start, and its end with duration and summary (or its failure)."""
    outcome = StepOutcome()
    report("▶ %-10s %s run %s", name, use_case, run_key)
    started = time.perf_counter()
    try:
        yield outcome
    except BaseException as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        report("✗ %-10s failed after %.1fs: %s", name, time.perf_counter() - started, first)
        raise
    report("✓ %-10s %.1fs  %s", name, time.perf_counter() - started, outcome.summary)
