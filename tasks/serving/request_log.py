"""Sampled request/response logs: rotating, bounded JSONL files written off the request path.

The request path only draws the sample and puts a reference to the decoded batch and the
answer on a bounded queue (when it is full the sample is dropped and counted, never
waited for); a writer thread turns them into lines. The layout is the contract the
monitoring DAG reads (``/work/notes/CONTRACTS.md``, "Request log")::

    $MLP_HOME/requests/<model>/requests-<UTC %Y%m%dT%H%M%S%fZ>.jsonl

one JSON object per sampled request::

    {"ts": "2026-12-06T19:00:00.123Z", "model": "mnist", "version": "3", "status": 200,
     "latency_ms": 1.9, "n": 2,
     "inputs": {"<input name>": [<instance 0>, <instance 1>]},
     "outputs": {"<output name>": [<instance 0>, <instance 1>]}}

``inputs`` are columnar by input name, as the model got them (images decoded to pixels);
byte strings are written as text when they are UTF-8, else as ``{"b64": ...}``. Only
answered requests (200) are logged; errors are counted on ``/metrics``.

The file being written ends in ``.jsonl.open`` and holds an exclusive ``flock``; it is
renamed to ``.jsonl`` when it passes ``log_file_bytes`` or ``log_file_seconds``, or when
the server stops, so readers only read closed files. Closed files past ``log_max_bytes``
per model are deleted, oldest first. An ``.open`` file left by a killed server (no lock
held) is cut after its last complete line and closed when a server starts.
"""

from __future__ import annotations

import base64
import fcntl
import logging
import queue
import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tasks.serving.handoff import Handoff, nbytes
from tasks.serving.runtime_options import RuntimeOptions

log = logging.getLogger(__name__)

OPEN_SUFFIX = ".jsonl.open"
CLOSED_SUFFIX = ".jsonl"
PREFIX = "requests-"
QUEUE_BYTES = 64 * 1024 * 1024  # arrays waiting for the writer, at most
POLL_SECONDS = 0.2  # how often the writer takes what queued


def utc_stamp(when: float) -> str:
    """``2026-12-06T19:00:00.123Z`` (millisecond precision, UTC)."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _text_or_b64(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def jsonable(value: Any) -> Any:
    """A batch column (array or list) as something orjson writes as nested lists."""
    if isinstance(value, np.ndarray):
        if value.dtype == object or value.dtype.kind in "SU":
            return np.vectorize(_text_or_b64, otypes=[object])(value).tolist() \
                if value.size else value.tolist()
        return np.ascontiguousarray(value)
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return _text_or_b64(value)


def record_line(served: Any, batch: Any, out: Any, status: int, latency_ms: float,
                ts: float) -> bytes:
    """One log line (pure; the writer thread calls it)."""
    sig = served.signature
    inputs = batch if isinstance(batch, dict) else {sig.input_name: batch}
    outputs = out if isinstance(out, dict) else {sig.output_name: out}
    n = len(next(iter(inputs.values())))
    doc = {"ts": utc_stamp(ts), "model": served.name, "version": served.version,
           "status": status, "latency_ms": round(latency_ms, 3), "n": n,
           "inputs": {k: jsonable(v) for k, v in inputs.items()},
           "outputs": {k: jsonable(v) for k, v in outputs.items()}}
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE)


def _file_stamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y%m%dT%H%M%S%fZ")


def close_stale(directory: Path) -> list[Path]:
    """Close ``.open`` files no live writer holds: cut the last partial line, rename.

    Returns:
        The files closed (empty ones are removed instead).

    """
    closed = []
    for path in sorted(directory.glob(f"{PREFIX}*{OPEN_SUFFIX}")):
        try:
            fh = open(path, "r+b")  # noqa: SIM115
        except OSError:
            continue
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # another server is writing it
            data = fh.read()
            keep = data.rfind(b"\n") + 1
            if keep < len(data):
                fh.truncate(keep)
            if keep == 0:
                path.unlink()
                continue
            target = path.with_name(path.name[: -len(OPEN_SUFFIX)] + CLOSED_SUFFIX)
            path.rename(target)
            closed.append(target)
    return closed


class RotatingJsonl:
    """The request log files of one model: one open file at a time, bounded in total."""

    def __init__(self, directory: Path, file_bytes: int, file_seconds: float,
                 max_bytes: int) -> None:
        self.directory = directory
        self.file_bytes, self.file_seconds, self.max_bytes = file_bytes, file_seconds, max_bytes
        self._fh: Any = None
        self._path: Path | None = None
        self._size = 0
        self._opened = 0.0

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        when = time.time()
        while True:
            stem = PREFIX + _file_stamp(when)
            path = self.directory / (stem + OPEN_SUFFIX)
            if not path.exists() and not (self.directory / (stem + CLOSED_SUFFIX)).exists():
                break
            when += 1e-6
        self._fh = open(path, "ab")  # noqa: SIM115
        fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._path, self._size, self._opened = path, 0, time.monotonic()

    def write(self, line: bytes) -> None:
        """Append one line, rotating first when it would pass the size limit."""
        if self._fh is not None and self._size and self._size + len(line) > self.file_bytes:
            self.rotate()
        if self._fh is None:
            self._open()
        self._fh.write(line)
        self._size += len(line)

    def flush(self) -> None:
        """Write buffered lines to the open file."""
        if self._fh is not None:
            self._fh.flush()

    def due(self) -> bool:
        """Whether the open file is older than ``file_seconds``."""
        return self._fh is not None and time.monotonic() - self._opened >= self.file_seconds

    def rotate(self) -> Path | None:
        """Close the open file (rename to ``.jsonl``) and trim the oldest closed ones."""
        if self._fh is None:
            return None
        self._fh.flush()
        path = self._path
        target = path.with_name(path.name[: -len(OPEN_SUFFIX)] + CLOSED_SUFFIX)
        path.rename(target)  # renamed while still locked: no one can take it for stale
        self._fh.close()
        self._fh, self._path = None, None
        self._trim()
        return target

    def _trim(self) -> None:
        closed = sorted(self.directory.glob(f"{PREFIX}*{CLOSED_SUFFIX}"))
        sizes = {p: p.stat().st_size for p in closed}
        total = sum(sizes.values())
        for path in closed:
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= sizes[path]


class RequestLog:
    """Samples answered requests per model and writes them from a background thread.

    Args:
        root: ``$MLP_HOME/requests``.
        options: Sampling rates and file limits.
        metrics: Told records written and dropped (or None).

    """

    def __init__(self, root: Path, options: RuntimeOptions, metrics: Any = None) -> None:
        self.root = root
        self._options = options
        self._rates = dict(options.log_sample)
        self._metrics = metrics
        self._queue = Handoff(options.log_queue, QUEUE_BYTES)
        self._files: dict[str, RotatingJsonl] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        """Whether any model is sampled at all."""
        return any(r > 0 for r in self._rates.values())

    def sampled(self, model: str) -> bool:
        """Draw the sample for one request (cheap: the request path calls it)."""
        rate = self._rates.get(model, self._rates.get("*", 0.0))
        return rate >= 1.0 or (rate > 0.0 and random.random() < rate)

    def offer(self, served: Any, batch: Any, out: Any, status: int, latency_ms: float,
              ts: float) -> None:
        """Queue one answered request for the writer; drop and count it when full."""
        if not self._queue.offer((served, batch, out, status, latency_ms, ts),
                                 nbytes(batch) + nbytes(out)):
            self._drop(served.name, "queue_full")

    def _drop(self, model: str, reason: str) -> None:
        self.dropped += 1
        if self._metrics is not None:
            self._metrics.log_dropped.labels(model, reason).inc()

    def _file(self, model: str) -> RotatingJsonl:
        f = self._files.get(model)
        if f is None:
            o = self._options
            f = self._files[model] = RotatingJsonl(self.root / model, o.log_file_bytes,
                                                   o.log_file_seconds, o.log_max_bytes)
        return f

    def _write(self, item: tuple) -> None:
        served = item[0]
        try:
            line = record_line(*item)
        except Exception:  # noqa: BLE001 - an unexpected value must not stop the writer
            log.exception("cannot write a request log record of %s", served.name)
            self._drop(served.name, "error")
            return
        if len(line) > self._options.log_file_bytes:
            self._drop(served.name, "too_large")
            return
        self._file(served.name).write(line)
        if self._metrics is not None:
            self._metrics.log_records.labels(served.name).inc()

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            # Wake up a few times a second and write what queued meanwhile: a wake-up per
            # record would cost the request path GIL hand-offs.
            self._stop.wait(POLL_SECONDS)
            while True:
                try:
                    item = self._queue.take_nowait()
                except queue.Empty:
                    break
                try:
                    self._write(item)
                except OSError:
                    log.exception("request log write failed")
                    self._drop(item[0].name, "error")
            for f in self._files.values():
                f.flush()
                if f.due():
                    f.rotate()
        for f in self._files.values():
            f.rotate()

    def start(self) -> None:
        """Close files a killed server left open, then start the writer (when sampling)."""
        if not self.enabled or self._thread is not None:
            return
        if self.root.is_dir():
            for directory in sorted(p for p in self.root.iterdir() if p.is_dir()):
                for path in close_stale(directory):
                    log.info("closed request log %s left open by a stopped server", path)
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        """Write what is queued, close every open file (renamed to ``.jsonl``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
