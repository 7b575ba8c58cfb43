"""What happens around a model call: micro-batching, metrics, request logs, shadow scoring.

:class:`Runtime` is one object per app (``app.state.runtime``) that the predict handler
calls twice: :meth:`Runtime.predict` for the champion's (or a version's) answer, and
:meth:`Runtime.answered` after it, which only draws samples and puts references on
bounded queues (request log, shadow scoring): the work happens in background threads.
"""

from __future__ import annotations

import time
from typing import Any

from tasks.core.config import Settings, settings
from tasks.serving.batching import Batcher
from tasks.serving.metrics import INSTANCES_KEY, ServingMetrics
from tasks.serving.request_log import RequestLog
from tasks.serving.runtime_options import RuntimeOptions
from tasks.serving.shadow import ShadowScorer


class Runtime:
    """The runtime extras of one app.

    Args:
        store: The model store (metrics observe its loads and swaps).
        options: Metrics on/off, batching parameters, sampling rates.
        s: Settings (data root of the request logs, MLflow store of the shadow figures).

    """

    def __init__(self, store: Any, options: RuntimeOptions | None = None,
                 s: Settings | None = None) -> None:
        self.options = options = options or RuntimeOptions()
        s = s or settings()
        self.store = store
        self.metrics = ServingMetrics() if options.metrics else None
        self.batcher = Batcher(options, self.metrics)
        self.request_log = RequestLog(s.root / "requests", options, self.metrics)
        self.shadow = ShadowScorer(store, options, self.metrics, s)
        if self.metrics is not None:
            store.observer = self.metrics

    def start(self) -> None:
        """Start the request log writer and the shadow scorer."""
        self.request_log.start()
        self.shadow.start()

    def stop(self) -> None:
        """Flush and close request logs, log the last shadow figures, stop the threads."""
        self.shadow.stop()
        self.request_log.stop()
        self.batcher.close()

    def batches(self, served: Any) -> bool:
        """Whether requests for ``served`` go through the micro-batcher."""
        return self.batcher.accepts(served)

    def answered(self, scope: dict, served: Any, batch: Any, out: Any, started: float,
                 champion: bool) -> None:
        """After the answer is computed: sample it for the request log and the shadow.

        Args:
            scope: The request's ASGI scope (the metrics middleware reads the size).
            served: The version that answered.
            batch: The decoded batch it got.
            out: Its answer.
            started: ``time.perf_counter()`` when the handler started.
            champion: Whether the request addressed the champion (not a version).

        """
        n = len(next(iter(batch.values()))) if isinstance(batch, dict) else len(batch)
        scope[INSTANCES_KEY] = n
        if self.request_log.sampled(served.name):
            latency = (time.perf_counter() - started) * 1000
            self.request_log.offer(served, batch, out, 200, latency, time.time())
        if champion:
            self.shadow.offer(served, batch, out)
