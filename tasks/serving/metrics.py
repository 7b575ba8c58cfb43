"""Prometheus metrics of the server (``GET /metrics``), with the official ``prometheus-client``.

Every app has its own :class:`prometheus_client.CollectorRegistry` (no global state, so
several apps in one process do not mix their figures). Series, per model and version:

====================================================  =========================================
``mlp_serving_requests_total{model,version,code}``    predict requests by HTTP status code
``mlp_serving_request_duration_seconds``              latency histogram (arrival to last byte)
``mlp_serving_requests_in_flight``                    predict requests being answered
``mlp_serving_request_instances``                     instances per request (histogram)
``mlp_serving_request_body_bytes``                    request body sizes (histogram)
``mlp_serving_batch_instances`` / ``_batch_requests``  instances / requests per model call
``mlp_serving_model_loads_total{model,version,alias,outcome}``  loads (ok / failed)
``mlp_serving_model_load_seconds{model}``              load time (histogram)
``mlp_serving_model_swaps_total{model,alias}``         champion/challenger swaps (hot reload)
``mlp_serving_model_version{model,alias}``             the version served under each alias
``mlp_serving_shadow_*``                               challenger agreement (tasks.serving.shadow)
``mlp_serving_request_log_*``                          sampled request logs written / dropped
====================================================  =========================================

A request for a model the server does not serve is counted under ``model="_unknown"``,
so random paths cannot grow the number of series. :class:`RequestMetrics` is the ASGI
middleware that measures predict requests.
"""

from __future__ import annotations

import re
import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# No "<name>_created" series: they double the exposition and the scrape for nothing here.
disable_created_metrics()

UNKNOWN = "_unknown"
# Scope keys the predict handler fills in for the middleware.
INSTANCES_KEY = "mlp.instances"
_PREDICT = re.compile(r"^/v1/models/([^/]+?)(?:/versions/([^/:]+))?:predict$")

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
                   5.0, 10.0, 30.0)
COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
BYTES_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216,
                 67108864)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class ServingMetrics:
    """The metric families of one app and cheap per-series accessors.

    Label lookups (``.labels(...)``) cost a lock and a dict lookup each; the request path
    keeps the children it uses in plain dicts instead.
    """

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        from prometheus_client import PlatformCollector, ProcessCollector

        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        mv = ("model", "version")
        self.requests = Counter("mlp_serving_requests", "Predict requests by HTTP status "
                                "code", (*mv, "code"), registry=r)
        self.latency = Histogram("mlp_serving_request_duration_seconds", "Predict latency "
                                 "from arrival to the last byte of the answer", mv,
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("mlp_serving_requests_in_flight", "Predict requests being "
                               "answered", mv, registry=r)
        self.instances = Histogram("mlp_serving_request_instances", "Instances per predict "
                                   "request", mv, buckets=COUNT_BUCKETS, registry=r)
        self.body_bytes = Histogram("mlp_serving_request_body_bytes", "Predict request body "
                                    "size", mv, buckets=BYTES_BUCKETS, registry=r)
        self.batch_instances = Histogram("mlp_serving_batch_instances", "Instances per "
                                         "model call (micro-batches)", mv,
                                         buckets=COUNT_BUCKETS, registry=r)
        self.batch_requests = Histogram("mlp_serving_batch_requests", "Requests merged into "
                                        "one model call (micro-batches)", mv,
                                        buckets=COUNT_BUCKETS[:9], registry=r)
        self.loads = Counter("mlp_serving_model_loads", "Model version loads",
                             (*mv, "alias", "outcome"), registry=r)
        self.load_seconds = Histogram("mlp_serving_model_load_seconds", "Time to load a "
                                      "version and trace it", ("model",),
                                      buckets=LOAD_BUCKETS, registry=r)
        self.swaps = Counter("mlp_serving_model_swaps", "Served version changes of an "
                             "alias (hot reload)", ("model", "alias"), registry=r)
        self.served_version = Gauge("mlp_serving_model_version", "Version served under an "
                                    "alias (0: none)", ("model", "alias"), registry=r)
        shadow = (*mv, "challenger_version")
        self.shadow_instances = Counter("mlp_serving_shadow_instances", "Instances the "
                                        "challenger scored in the champion's shadow", shadow,
                                        registry=r)
        self.shadow_agreement_sum = Counter(
            "mlp_serving_shadow_agreement_value", "Sum of the per-instance agreement (1/0 for "
            "same class, flag or top-1 token; absolute difference for regression); divide "
            "the rate by mlp_serving_shadow_instances_total's", (*shadow, "measure"),
            registry=r)
        self.shadow_agreement = Gauge(
            "mlp_serving_shadow_agreement", "Agreement of challenger and champion since the "
            "server started scoring the pair (a rate, or a mean absolute difference)",
            (*shadow, "measure"), registry=r)
        self.shadow_dropped = Counter("mlp_serving_shadow_dropped", "Shadow samples not "
                                      "scored (queue_full, error)", ("model", "reason"),
                                      registry=r)
        self.log_records = Counter("mlp_serving_request_log_records", "Sampled requests "
                                   "written to the request log", ("model",), registry=r)
        self.log_dropped = Counter("mlp_serving_request_log_dropped", "Sampled requests not "
                                   "logged (queue_full, too_large, error)",
                                   ("model", "reason"), registry=r)
        self._series: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}
        self._codes: dict[tuple[str, str, int], Any] = {}
        self._batches: dict[tuple[str, str], tuple[Any, Any]] = {}

    # -- request path -----------------------------------------------------------------------

    def series(self, model: str, version: str) -> tuple[Any, Any, Any, Any]:
        """(latency, in_flight, instances, body_bytes) children of one model version."""
        key = (model, version)
        got = self._series.get(key)
        if got is None:
            got = self._series[key] = (self.latency.labels(model, version),
                                       self.in_flight.labels(model, version),
                                       self.instances.labels(model, version),
                                       self.body_bytes.labels(model, version))
        return got

    def count(self, model: str, version: str, code: int) -> None:
        """One answered predict request."""
        key = (model, version, code)
        child = self._codes.get(key)
        if child is None:
            child = self._codes[key] = self.requests.labels(model, version, str(code))
        child.inc()

    def batch(self, model: str, version: str, requests: int, instances: int) -> None:
        """One model call of the micro-batcher."""
        key = (model, version)
        got = self._batches.get(key)
        if got is None:
            got = self._batches[key] = (self.batch_requests.labels(model, version),
                                        self.batch_instances.labels(model, version))
        got[0].observe(requests)
        got[1].observe(instances)

    # -- model store events (the poller thread) ---------------------------------------------

    def loaded(self, model: str, version: str, alias: str, seconds: float, ok: bool) -> None:
        """A version was loaded (or failed to)."""
        self.loads.labels(model, version, alias, "ok" if ok else "failed").inc()
        if ok:
            self.load_seconds.labels(model).observe(seconds)

    def swapped(self, model: str, alias: str, version: str | None) -> None:
        """An alias now serves ``version`` (None: no longer served)."""
        self.swaps.labels(model, alias).inc()
        self.served_version.labels(model, alias).set(int(version) if version else 0)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The metrics in the format the scraper asked for (Prometheus text by default)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class RequestMetrics:
    """ASGI middleware: measures predict requests (when metrics are on).

    The model label is the path's model name when the server serves it, the version the
    answering one (the ``x-model-version`` header), else the one addressed by the path, else
    the champion's when the request arrived.
    """

    def __init__(self, app: ASGIApp, runtime: Any) -> None:
        self.app = app
        self.runtime = runtime  # tasks.serving.runtime.Runtime: .store, .metrics

    def _labels(self, name: str, version: str | None) -> tuple[str, str]:
        store = self.runtime.store
        champ = store.get(name)
        if version is not None:
            if champ is not None and champ.version == version:
                return name, version
            return (name, version) if store.cached_version(name, version) else (
                (name, "") if champ is not None else (UNKNOWN, ""))
        if champ is None:
            return UNKNOWN, ""
        return name, champ.version

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        hit = _PREDICT.match(scope["path"])
        if hit is None:
            await self.app(scope, receive, send)
            return
        metrics: ServingMetrics | None = self.runtime.metrics
        if metrics is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        model, version = self._labels(hit.group(1), hit.group(2))
        latency, in_flight, _, _ = metrics.series(model, version)
        in_flight.inc()
        answer: dict[str, Any] = {"status": 500, "version": None}
        body = [0]

        async def counted_receive() -> Message:
            message = await receive()
            body[0] += len(message.get("body", b""))
            return message

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                for key, value in message.get("headers", ()):
                    if key == b"x-model-version":
                        answer["version"] = value.decode("latin-1")
                        break
            await send(message)

        declared = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = int(value) if value.isdigit() else None
                break
        try:
            await self.app(scope, counted_receive if declared is None else receive,
                           observed_send)
        finally:
            in_flight.dec()
            seconds = time.perf_counter() - started
            if answer["version"] is not None and answer["version"] != version:
                version = answer["version"]  # a hot swap happened while it ran
                latency = metrics.series(model, version)[0]
            _, _, instances, body_bytes = metrics.series(model, version)
            latency.observe(seconds)
            metrics.count(model, version, answer["status"])
            body_bytes.observe(declared if declared is not None else body[0])
            n = scope.get(INSTANCES_KEY)
            if n:
                instances.observe(n)
