"""Bounded, non-blocking request handling.

- :class:`BodyLimit` answers 413 to a request whose ``Content-Length`` exceeds the limit
  before the application reads any of it, and closes the connection;
  :func:`read_body` stops reading a chunked body as soon as it passes the limit.
- :class:`Offload` runs CPU-heavy pure functions (parsing a large JSON body, encoding a
  large answer) in a separate process: orjson and NumPy hold the GIL for the whole call
  (about 1 s for a 20 MB body), so a thread would stall the event loop just the same.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

# Bodies larger than this are parsed in the offload process (about 12 ms of parsing inline).
OFFLOAD_BODY_BYTES = 256 * 1024
# Answers with more values than this are encoded in the offload process.
OFFLOAD_OUTPUT_VALUES = 256 * 1024


class PayloadTooLarge(Exception):
    """The request body exceeds the limit (HTTP 413)."""


class OffloadFailed(RuntimeError):
    """An offload process died mid-call (HTTP 503: the client may retry)."""


def too_large_message(limit: int, size: int | None = None) -> str:
    """What a 413 says: the size if known, the limit and how to raise it."""
    got = f"of {size} bytes " if size is not None else ""
    return (f"request body {got}exceeds the limit of {limit} bytes "
            f"(MLP_SERVE_MAX_BODY_BYTES); send fewer instances per request")


def _closing_error(status: int, message: str,
                   extra: list[tuple[bytes, bytes]] | None = None) -> tuple[dict, dict]:
    body = orjson.dumps({"error": message})
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()),
               # The rest of the body is never read: the connection cannot be reused.
               (b"connection", b"close"), *(extra or [])]
    return ({"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body})


async def send_closing_error(send: Send, status: int, message: str,
                             extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer ``{"error": message}`` with ``Connection: close``, without reading the body."""
    for message_ in _closing_error(status, message, extra):
        await send(message_)


class BodyLimit:
    """ASGI middleware: 413 for a declared ``Content-Length`` above ``limit``."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for key, value in scope["headers"]:
                if key == b"content-length":
                    size = int(value) if value.isdigit() else None
                    if size is not None and size > self.limit:
                        await send_closing_error(send, 413,
                                                 too_large_message(self.limit, size))
                        return
                    break
        await self.app(scope, receive, send)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, reading no more than ``limit`` bytes of it.

    Raises:
        PayloadTooLarge: The body (chunked, or longer than declared) passes ``limit``.

    """
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(too_large_message(limit))
        chunks.append(chunk)
    return b"".join(chunks)


def _exit_with(pid: int) -> None:
    """In a worker: exit as soon as the server process ``pid`` is gone (even after kill -9).

    A pool worker otherwise outlives a server that died without shutting the pool down: it
    holds both ends of its own task queue and the fork server's liveness pipe, so neither
    it nor the fork server ever sees an end of file.
    """
    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:  # pid reused by another user's process: also gone
                os._exit(0)

    threading.Thread(target=watch, name="server-watch", daemon=True).start()


def _ready() -> bool:
    import tasks.serving.codec  # noqa: F401  (NumPy and orjson loaded before the first call)

    return True


class Offload:
    """A small pool of worker processes for CPU-heavy pure functions.

    The workers are forked from a fork server that imported only the codec (NumPy,
    orjson): never from the server process itself, which runs TensorFlow and threads, and
    without re-importing the program's ``__main__`` as spawned processes do.
    """

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["tasks.serving.codec"])
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx,
                                             initializer=_exit_with, initargs=(os.getpid(),))
        return self._pool

    def start(self) -> None:
        """Start the workers now, so the first large request does not wait for them."""
        self._executor().submit(_ready)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a worker process (``fn`` and the arguments must pickle)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor(), fn, *args)
        except BrokenProcessPool as exc:  # a worker died (e.g. out of memory): start afresh
            log.error("an offload process died; restarting the pool")
            self.close()
            raise OffloadFailed("the request's parser process died; retry") from exc

    def worker_pids(self) -> list[int]:
        """Process ids of the running workers."""
        return list(self._pool._processes) if self._pool is not None else []

    def close(self) -> None:
        """Stop the workers (idle ones exit at once; a parse under way is bounded in size).

        Waited for: a pool shut down without waiting leaves a closed wake-up pipe that
        Python's exit handler then writes to (``OSError: Bad file descriptor`` on exit).
        """
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
