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
from bisect import bisect_left
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString
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
BATCH_REQUEST_BUCKETS = COUNT_BUCKETS[:9]
BYTES_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216,
                 67108864)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class _Histogram:
    """Bucket counts and sum of one series, updated on the event loop only (no lock)."""

    __slots__ = ("counts", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * (size + 1)  # the last one is +Inf
        self.total = 0.0

    def family(self, fam: HistogramMetricFamily, labels: list[str],
               bounds: tuple[float, ...]) -> None:
        cumulative, running = [], 0
        for bound, count in zip((*bounds, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else floatToGoString(bound),
                               running))
        fam.add_metric(labels, cumulative, self.total)


class _Series:
    """What the request path records for one (model, version)."""

    __slots__ = ("body_bytes", "codes", "in_flight", "instances", "latency")

    def __init__(self) -> None:
        self.latency = _Histogram(len(LATENCY_BUCKETS))
        self.instances = _Histogram(len(COUNT_BUCKETS))
        self.body_bytes = _Histogram(len(BYTES_BUCKETS))
        self.in_flight = 0
        self.codes: dict[int, int] = {}


class RequestStats:
    """A custom collector for the request path's series (the documented client API).

    Predict requests are measured on the event loop thread, and ``GET /metrics`` is served
    on it too, so plain integers and lists need no lock; ``prometheus_client``'s own
    metric objects take a lock per update (about 4 µs per histogram observation here),
    which would show at a thousand requests per second.
    """

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], _Series] = {}
        self.batches: dict[tuple[str, str], tuple[_Histogram, _Histogram]] = {}

    def get(self, model: str, version: str) -> _Series:
        """The series of one model version (created on first use)."""
        key = (model, version)
        got = self.series.get(key)
        if got is None:
            got = self.series[key] = _Series()
        return got

    def observe(self, series: _Series, seconds: float, code: int, body: int,
                instances: int | None) -> None:
        """One answered request."""
        h = series.latency
        h.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        h.total += seconds
        series.codes[code] = series.codes.get(code, 0) + 1
        h = series.body_bytes
        h.counts[bisect_left(BYTES_BUCKETS, body)] += 1
        h.total += body
        if instances:
            h = series.instances
            h.counts[bisect_left(COUNT_BUCKETS, instances)] += 1
            h.total += instances

    def batch(self, model: str, version: str, requests: int, instances: int) -> None:
        """One model call of the micro-batcher."""
        key = (model, version)
        got = self.batches.get(key)
        if got is None:
            got = self.batches[key] = (_Histogram(len(BATCH_REQUEST_BUCKETS)),
                                       _Histogram(len(COUNT_BUCKETS)))
        got[0].counts[bisect_left(BATCH_REQUEST_BUCKETS, requests)] += 1
        got[0].total += requests
        got[1].counts[bisect_left(COUNT_BUCKETS, instances)] += 1
        got[1].total += instances

    def describe(self) -> list:
        """No families up front (they are described when collected)."""
        return []

    def collect(self) -> Any:
        """The families, per model and version."""
        mv = ["model", "version"]
        requests = CounterMetricFamily("mlp_serving_requests", "Predict requests by HTTP "
                                       "status code", labels=[*mv, "code"])
        latency = HistogramMetricFamily("mlp_serving_request_duration_seconds", "Predict "
                                        "latency from arrival to the last byte of the "
                                        "answer", labels=mv)
        in_flight = GaugeMetricFamily("mlp_serving_requests_in_flight", "Predict requests "
                                      "being answered", labels=mv)
        instances = HistogramMetricFamily("mlp_serving_request_instances", "Instances per "
                                          "predict request", labels=mv)
        body = HistogramMetricFamily("mlp_serving_request_body_bytes", "Predict request "
                                     "body size", labels=mv)
        for (model, version), s in sorted(self.series.items()):
            labels = [model, version]
            for code, count in sorted(s.codes.items()):
                requests.add_metric([*labels, str(code)], count)
            s.latency.family(latency, labels, LATENCY_BUCKETS)
            s.instances.family(instances, labels, COUNT_BUCKETS)
            s.body_bytes.family(body, labels, BYTES_BUCKETS)
            in_flight.add_metric(labels, s.in_flight)
        batch_requests = HistogramMetricFamily("mlp_serving_batch_requests", "Requests "
                                               "merged into one model call (micro-batches)",
                                               labels=mv)
        batch_instances = HistogramMetricFamily("mlp_serving_batch_instances", "Instances "
                                                "per model call (micro-batches)", labels=mv)
        for (model, version), (reqs, inst) in sorted(self.batches.items()):
            reqs.family(batch_requests, [model, version], BATCH_REQUEST_BUCKETS)
            inst.family(batch_instances, [model, version], COUNT_BUCKETS)
        yield from (requests, latency, in_flight, instances, body, batch_requests,
                    batch_instances)


class ServingMetrics:
    """The metric families of one app.

    The request path's series live in :class:`RequestStats` (event loop only); the
    model store's, shadow scorer's and request log's are ``prometheus_client`` metrics
    (updated from their threads).
    """

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        from prometheus_client import PlatformCollector, ProcessCollector

        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.requests = RequestStats()
        r.register(self.requests)
        mv = ("model", "version")
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
                                      "scored (queue_full, signature, error)",
                                      ("model", "reason"), registry=r)
        self.log_records = Counter("mlp_serving_request_log_records", "Sampled requests "
                                   "written to the request log", ("model",), registry=r)
        self.log_dropped = Counter("mlp_serving_request_log_dropped", "Sampled requests not "
                                   "logged (queue_full, too_large, error)",
                                   ("model", "reason"), registry=r)

    def batch(self, model: str, version: str, requests: int, instances: int) -> None:
        """One model call of the micro-batcher (event loop)."""
        self.requests.batch(model, version, requests, instances)

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
        stats = metrics.requests
        series = stats.get(model, version)
        series.in_flight += 1
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
            series.in_flight -= 1
            answered_by = answer["version"]
            if answered_by is not None and answered_by != version:
                series = stats.get(model, answered_by)  # a hot swap happened while it ran
            stats.observe(series, time.perf_counter() - started, answer["status"],
                          declared if declared is not None else body[0],
                          scope.get(INSTANCES_KEY))
