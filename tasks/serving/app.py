"""The HTTP layer: routes in TensorFlow Serving's REST shape, one small handler per route.

Handlers find the :class:`~tasks.serving.store.ModelStore` on ``request.app.state.store``;
request bodies go through :mod:`tasks.serving.codec`. Every client mistake is a JSON
``{"error": message}`` with a 4xx status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from tasks.core.config import Settings
from tasks.serving import limits, openapi
from tasks.serving.auth import TokenAuth
from tasks.serving.batching import QueueFull
from tasks.serving.codec import (
    BadRequest,
    TabularRequest,
    dumps,
    encode_outputs,
    encode_tabular,
    model_name,
    parse_request,
    parse_tabular_request,
    version_number,
)
from tasks.serving.metrics import RequestMetrics
from tasks.serving.options import ServeOptions
from tasks.serving.runtime import Runtime
from tasks.serving.runtime_options import RuntimeOptions
from tasks.serving.signature import SIGNATURE_NAME
from tasks.serving.store import ModelStore, NotFound, Served

log = logging.getLogger(__name__)

DEMO_HTML = Path(__file__).with_name("static") / "demo.html"
# Batches with more values than this run in the thread pool instead of on the event loop.
INLINE_MAX_VALUES = 64 * 784


def _json(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


def _closing(status: int, message: str) -> Response:
    """An error after which the connection is closed (the rest of the body is unread)."""
    response = _error(status, message)
    response.headers["connection"] = "close"
    return response


def _store(request: Request) -> ModelStore:
    return request.app.state.store


def _not_served(request: Request, name: str) -> Response:
    return _error(404, f"model {name!r} is not served; served: {_store(request).names()}")


async def _resolve(request: Request) -> Served | Response:
    """The version a request addresses, or the error response to send."""
    store = _store(request)
    try:
        name = model_name(request.path_params["name"])
        version = request.path_params.get("version")
        if version is not None:
            version = version_number(version)
    except BadRequest as exc:
        return _error(400, str(exc))
    if version is None:
        return store.get(name) or _not_served(request, name)
    served = store.cached_version(name, version)
    if served is not None:
        return served
    try:
        return await run_in_threadpool(store.get_version, name, version)
    except NotFound as exc:
        return _error(404, str(exc))


def _reason(message: str | None) -> str:
    """The model's own words from a TF error: a failed assertion's message, else line 1."""
    import re

    text = message or "invalid input"
    hit = re.search(r"assertion failed: \[(.*?)\]", text, re.S)
    if hit:
        return hit.group(1).strip()
    return re.sub(r"\{\{[^}]*\}\}\s*", "", text).strip().splitlines()[0]


async def _run_model(served: Served, batch: Any, runtime: Runtime) -> Any | Response:
    """The model's outputs for a validated batch (large batches off the event loop).

    While other requests are in flight, the batch joins a micro-batch (tasks.serving.batching).
    """
    try:
        if runtime.batches(served):
            return await runtime.batcher.run(served, batch)
        size = (sum(v.size for v in batch.values()) if isinstance(batch, dict)
                else batch.size)
        if size <= INLINE_MAX_VALUES:
            return served(batch)
        return await run_in_threadpool(served, batch)
    except QueueFull as exc:
        return _error(503, str(exc))
    except Exception as exc:  # validated input should never get here: a model fault
        import tensorflow as tf

        if isinstance(exc, tf.errors.InvalidArgumentError):
            return _error(400, f"the model rejected the input: {_reason(exc.message)}")
        log.exception("predict failed for %s version %s", served.name, served.version)
        return _error(500, f"prediction failed: {type(exc).__name__}")


async def _parse(request: Request, served: Served
                 ) -> tuple[Any, str] | TabularRequest | Response:
    """The validated batch and response key, or the error response to send.

    The body is read up to the size limit; a large one is parsed in the offload process so
    the event loop keeps answering other requests meanwhile.
    """
    options: ServeOptions = request.app.state.options
    try:
        body = await limits.read_body(request, options.max_body_bytes)
    except limits.PayloadTooLarge as exc:
        return _closing(413, str(exc))
    try:
        if served.schema is not None:  # a tabular model: named fields, schema checks
            strict = options.strict_inputs
            if len(body) <= limits.OFFLOAD_BODY_BYTES:
                return parse_tabular_request(body, served.schema, strict)
            return await request.app.state.offload.run(parse_tabular_request, body,
                                                       served.schema, strict)
        if len(body) <= limits.OFFLOAD_BODY_BYTES:
            return parse_request(body, served.signature)
        return await request.app.state.offload.run(parse_request, body, served.signature)
    except BadRequest as exc:
        if exc.counts:  # refused in strict mode: what it held is counted all the same
            served.input_checks.add(exc.counts, exc.instances, refused=True)
        return _error(400, str(exc))
    except limits.OffloadFailed as exc:
        return _error(503, str(exc))


async def _encode(request: Request, out: Any, key: str) -> bytes:
    import numpy as np

    # np.size: text outputs are lists of str (see store._text), numbers are arrays.
    values = sum(np.size(v) for v in out.values()) if isinstance(out, dict) else np.size(out)
    if values <= limits.OFFLOAD_OUTPUT_VALUES:
        return encode_outputs(out, key)
    return await request.app.state.offload.run(encode_outputs, out, key)


async def predict(request: Request) -> Response:
    """``POST /v1/models/{name}[/versions/{version}]:predict``.

    ---
    summary: Predict with the champion (or the given version)
    requestBody:
      required: true
      content:
        application/json:
          schema: {$ref: "#/components/schemas/PredictRequest"}
    responses:
      200:
        description: Predictions; the answering version is in the x-model-version header
        content:
          application/json:
            schema: {$ref: "#/components/schemas/PredictResponse"}
      400: {description: Invalid body or path part}
      404: {description: Unknown model or version}
      413: {description: Body larger than MLP_SERVE_MAX_BODY_BYTES}
    """
    started = time.perf_counter()
    served = await _resolve(request)
    if isinstance(served, Response):
        return served
    parsed = await _parse(request, served)
    if isinstance(parsed, Response):
        return parsed
    runtime: Runtime = request.app.state.runtime
    champion = "version" not in request.path_params
    if isinstance(parsed, TabularRequest):
        return await _predict_tabular(served, parsed, runtime, request.scope, started,
                                      champion)
    batch, key = parsed
    out = await _run_model(served, batch, runtime)
    if isinstance(out, Response):
        return out
    # Request log and shadow scoring: samples queued for background threads, no waiting.
    runtime.answered(request.scope, served, batch, out, started, champion=champion)
    # The version header lets clients (and the hot-reload test) see which one answered.
    return Response(await _encode(request, out, key), media_type="application/json",
                    headers={"x-model-version": served.version})


async def _predict_tabular(served: Served, req: TabularRequest, runtime: Runtime,
                           scope: dict, started: float, champion: bool) -> Response:
    """Answer a tabular model's request: readable or bare, with its schema warnings.

    The warnings are counted per model and field (``/metadata``, ``mlp.input_checks``)
    and their number is sent as the ``x-mlp-input-warnings`` header. The named inputs
    join micro-batches, the request log and the shadow like any other batch.
    """
    served.input_checks.add(req.decoded.counts, len(req.decoded))
    out = await _run_model(served, req.decoded.inputs, runtime)
    if isinstance(out, Response):
        return out
    runtime.answered(scope, served, req.decoded.inputs, out, started, champion=champion)
    assert served.schema is not None
    body = encode_tabular(out, req, served.schema)
    warned = sum(len(w) for w in req.decoded.warnings)
    return Response(body, media_type="application/json",
                    headers={"x-model-version": served.version,
                             "x-mlp-input-warnings": str(warned)})


def _status(versions: list[Served], loading: str | None) -> dict[str, Any]:
    ok = {"error_code": "OK", "error_message": ""}
    out = [{"version": v.version, "state": "AVAILABLE", "status": ok} for v in versions]
    if loading is not None and all(v.version != loading for v in versions):
        out.append({"version": loading, "state": "LOADING", "status": ok})
    return {"model_version_status": out}


async def status(request: Request) -> Response:
    """``GET /v1/models/{name}[/versions/{version}]``: TF Serving's version status.

    ---
    summary: Version status (champion first, then other versions in memory)
    responses:
      200: {description: "model_version_status list"}
      400: {description: Invalid name or version}
      404: {description: Unknown model or version}
    """
    if "version" in request.path_params:
        served = await _resolve(request)
        if isinstance(served, Response):
            return served
        return _json(_status([served], None))
    try:
        name = model_name(request.path_params["name"])
    except BadRequest as exc:
        return _error(400, str(exc))
    versions = _store(request).loaded_versions(name)
    if not versions:
        return _not_served(request, name)
    return _json(_status(versions, _store(request).loading(name)))


async def metadata(request: Request) -> Response:
    """``GET /v1/models/{name}[/versions/{version}]/metadata``: the signature.

    ---
    summary: The serving signature as TF Serving's signature_def, plus run id and classes
    responses:
      200: {description: Model metadata}
      400: {description: Invalid name or version}
      404: {description: Unknown model or version}
    """
    served = await _resolve(request)
    if isinstance(served, Response):
        return served
    mlp: dict[str, Any] = {"run_id": served.run_id, "class_names": served.class_names}
    aliases = None
    if served.schema is not None:  # named inputs: order, dtypes, declared schema, counts
        aliases = {f.key: f.name for f in served.schema.fields}
        mlp.update(served.schema.describe())
        mlp["strict"] = served.schema.strict or request.app.state.options.strict_inputs
        mlp["input_checks"] = served.input_checks.snapshot()
    return _json({
        "model_spec": {"name": served.name, "signature_name": SIGNATURE_NAME,
                       "version": served.version},
        "metadata": {"signature_def": served.signature.to_tf_serving(aliases)},
        "mlp": {**mlp, **({"label_map": served.label_map} if served.label_map else {})},
    })


async def healthz(request: Request) -> Response:
    """``GET /healthz``: the process answers.

    ---
    summary: Liveness (never needs a token)
    responses:
      200: {description: "status ok"}
    """
    return _json({"status": "ok"})


async def readyz(request: Request) -> Response:
    """``GET /readyz``: 503 until the first registry poll has loaded the champions.

    ---
    summary: Readiness and the version served per model
    responses:
      200: {description: Models and their served versions}
      503: {description: Models are still loading}
    """
    store = _store(request)
    if not store.ready.is_set():
        return _error(503, "models are still loading")
    return _json({"status": "ready", "models": {n: store.get(n).version
                                                for n in store.names()}})


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus exposition (tasks.serving.metrics).

    ---
    summary: Prometheus metrics per model and version (404 when MLP_SERVE_METRICS=0)
    responses:
      200: {description: Prometheus text format}
    """
    registry = request.app.state.runtime.metrics
    if registry is None:
        return _error(404, "metrics are off (MLP_SERVE_METRICS=0)")
    body, content_type = registry.exposition(request.headers.get("accept"))
    return Response(body, media_type=content_type)


async def demo(request: Request) -> Response:
    """``GET /demo``: draw a digit, see the class probabilities."""
    return HTMLResponse(request.app.state.demo_html)


async def index(request: Request) -> Response:
    """``GET /``: to the demo."""
    return RedirectResponse("/demo")


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 as JSON errors."""
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")


@asynccontextmanager
async def lifespan(app: Starlette):  # noqa: ANN201
    """The registry poller and the offload processes run while the app does."""
    app.state.offload.start()
    app.state.runtime.start()
    app.state.store.start()
    try:
        yield
    finally:
        app.state.store.stop()
        app.state.runtime.stop()
        app.state.offload.close()


ROUTES = [
    Route("/v1/models/{name}:predict", predict, methods=["POST"]),
    Route("/v1/models/{name}/versions/{version}:predict", predict, methods=["POST"]),
    Route("/v1/models/{name}", status, methods=["GET"]),
    Route("/v1/models/{name}/versions/{version}", status, methods=["GET"]),
    Route("/v1/models/{name}/metadata", metadata, methods=["GET"]),
    Route("/v1/models/{name}/versions/{version}/metadata", metadata, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi.openapi, methods=["GET"], include_in_schema=False),
    Route("/demo", demo, methods=["GET"]),
    Route("/", index, methods=["GET"]),
]


def create_app(s: Settings | None = None, store: ModelStore | None = None,
               models: Collection[str] | None = None,
               options: ServeOptions | None = None,
               runtime: RuntimeOptions | None = None) -> Starlette:
    """Build the ASGI app; the registry poller starts and stops with the app's lifespan.

    Args:
        s: Settings (registry location, poll interval).
        store: A store to serve from (default: a new one polling the registry of ``s``).
        models: Serve only these registered models (default: every model with a champion).
        options: Limits (default: from ``MLP_SERVE_*`` variables).
        runtime: Metrics, micro-batching, request logs, shadow scoring (default: from
            ``MLP_SERVE_*`` variables).

    """
    options = options or ServeOptions.from_env()
    store = store or ModelStore(s, models=models)
    extras = Runtime(store, runtime or RuntimeOptions.from_env(), s)
    # Outermost first: every predict request is measured (401 and 413 too); credentials
    # are checked before the body size, and neither reads it.
    middleware = [Middleware(RequestMetrics, runtime=extras)] if extras.metrics else []
    if options.keys:
        middleware.append(Middleware(TokenAuth, keys=options.keys))
    middleware.append(Middleware(limits.BodyLimit, limit=options.max_body_bytes))
    app = Starlette(routes=ROUTES, lifespan=lifespan, middleware=middleware,
                    exception_handlers={HTTPException: http_error})
    app.state.options = options
    app.state.offload = limits.Offload(options.parse_workers)
    app.state.store = store
    app.state.runtime = extras
    app.state.demo_html = DEMO_HTML.read_text()
    return app
