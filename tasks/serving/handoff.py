"""A queue from the request path to a background thread, bounded in items and in bytes.

The request path must never wait for the background work (request logs, shadow
scoring): :meth:`Handoff.offer` either takes the item at once or refuses it, and the
caller counts the drop. The byte bound keeps a burst of large requests (4096 images
each) from holding gigabytes of arrays in memory while the thread catches up.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import numpy as np


def nbytes(value: Any) -> int:
    """Approximate memory held by a batch or an answer (arrays, dicts and lists of them)."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return value.size * 64 + sum(len(v) for v in value.flat
                                         if isinstance(v, bytes | str))
        return value.nbytes
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return 64 * len(value) + sum(nbytes(v) for v in value[:1]) * len(value)
    return 64


class Handoff:
    """A queue holding at most ``max_items`` items and ``max_bytes`` bytes.

    One item always fits in an empty queue, however large.
    """

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self.max_items, self.max_bytes = max_items, max_bytes
        self.items = 0
        self.bytes = 0

    def offer(self, item: Any, size: int) -> bool:
        """Queue ``item`` of ``size`` bytes unless a bound would be passed (never blocks)."""
        with self._lock:
            if self.items and (self.items >= self.max_items
                               or self.bytes + size > self.max_bytes):
                return False
            self.items += 1
            self.bytes += size
        self._queue.put_nowait((item, size))
        return True

    def _took(self, size: int) -> None:
        with self._lock:
            self.items -= 1
            self.bytes -= size

    def take(self, timeout: float | None = None) -> Any:
        """The next item (blocking up to ``timeout``).

        Raises:
            queue.Empty: Nothing arrived in time.

        """
        item, size = self._queue.get(timeout=timeout)
        self._took(size)
        return item

    def take_nowait(self) -> Any:
        """The next item if one waits.

        Raises:
            queue.Empty: Nothing waits.

        """
        item, size = self._queue.get_nowait()
        self._took(size)
        return item

    def empty(self) -> bool:
        """Whether nothing waits."""
        return self._queue.empty()
