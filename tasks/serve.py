"""REST serving of every use case's ``champion`` with TensorFlow Serving's REST shape.

``POST /v1/models/{name}:predict`` takes ``{"instances": [...]}`` (row format) or
``{"inputs": ...}`` (columnar, a single input tensor) and returns ``{"predictions": ...}``;
``GET /v1/models/{name}`` reports the loaded version. Input is validated against the
model's signature, and every client mistake is an HTTP 400 with a clear message.
"""

from __future__ import annotations

import json
import logging
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tasks import tracking
from tasks.config import Settings, settings
from tasks.gate import CHAMPION

log = logging.getLogger(__name__)


class BadRequest(ValueError):
    """The request cannot be served; the message goes back to the client."""


@dataclass
class Served:
    """One loaded model version and its compiled predict function."""

    name: str
    version: str
    input_shape: tuple[int, ...]
    input_dtype: str
    predict: Any

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.predict(batch).numpy()


def load_version(name: str, version: str, s: Settings | None = None) -> Served:
    """Load a registered model version into a retrace-free ``tf.function``."""
    import mlflow
    import tensorflow as tf

    tracking.configure(s)
    model = mlflow.tensorflow.load_model(f"models:/{name}/{version}")
    spec = model.inputs[0]
    shape = tuple(int(d) for d in spec.shape[1:])
    dtype = str(getattr(spec, "dtype", "float32"))
    fn = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec([None, *shape], tf.as_dtype(dtype))],
    )
    fn.get_concrete_function()  # trace now, not on the first request
    return Served(name, str(version), shape, dtype, fn)


class ModelStore:
    """The champions currently served, keyed by registered model name."""

    def __init__(self, s: Settings | None = None) -> None:
        self._s = s or settings()
        self._models: dict[str, Served] = {}
        self._lock = threading.Lock()
        self.ready = threading.Event()

    def load_champions(self) -> dict[str, str]:
        """(Re)load the ``champion`` of every registered model; return name -> version."""
        from mlflow.exceptions import MlflowException

        client = tracking.configure(self._s)
        loaded = {}
        for rm in client.search_registered_models():
            try:
                mv = client.get_model_version_by_alias(rm.name, CHAMPION)
            except MlflowException:
                continue
            current = self._models.get(rm.name)
            if current is not None and current.version == str(mv.version):
                loaded[rm.name] = current.version
                continue
            try:
                served = load_version(rm.name, mv.version, self._s)
            except Exception:  # one broken model must not take the others down
                log.exception("cannot load %s version %s", rm.name, mv.version)
                continue
            with self._lock:
                self._models[rm.name] = served
            loaded[rm.name] = served.version
            log.info("serving %s version %s", rm.name, served.version)
        self.ready.set()
        return loaded

    def get(self, name: str) -> Served | None:
        """The served version of ``name``, if any."""
        with self._lock:
            return self._models.get(name)

    def names(self) -> list[str]:
        """Names of all served models."""
        with self._lock:
            return sorted(self._models)


def parse_instances(body: bytes, served: Served) -> np.ndarray:
    """Decode and validate a predict request body against the model's input signature.

    Raises:
        BadRequest: Malformed JSON, missing ``instances``/``inputs``, non-numeric values,
            ragged arrays, or a shape that does not match the signature.

    """
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise BadRequest("request body must be a JSON object with 'instances' or 'inputs'")
    if "instances" in payload:
        data = payload["instances"]
    elif "inputs" in payload:
        data = payload["inputs"]
    else:
        raise BadRequest("request body must contain 'instances' (row format) or 'inputs'")
    if not isinstance(data, list) or not data:
        raise BadRequest("'instances' must be a non-empty list")
    expected = list(served.input_shape)
    try:
        arr = np.asarray(data, dtype=served.input_dtype)
    except (ValueError, TypeError) as exc:
        raise BadRequest(
            f"instances must be numeric arrays of shape {expected} ({exc})"
        ) from exc
    if arr.shape[1:] != tuple(served.input_shape):
        raise BadRequest(
            f"each instance must have shape {expected}, got {list(arr.shape[1:])}"
        )
    if not np.isfinite(arr).all():
        raise BadRequest("instances contain NaN or infinite values")
    return arr


def create_app(s: Settings | None = None, store: ModelStore | None = None) -> FastAPI:
    """Build the ASGI app; champions are loaded in the background at start-up."""
    store = store or ModelStore(s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        threading.Thread(target=store.load_champions, daemon=True).start()
        yield

    app = FastAPI(title="mlp serving", lifespan=lifespan)
    app.state.store = store

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        if not store.ready.is_set():
            return error(503, "models are still loading")
        return JSONResponse({"status": "ready", "models": store.names()})

    @app.get("/v1/models/{name}")
    def status(name: str) -> JSONResponse:
        served = store.get(name)
        if served is None:
            return error(404, f"model {name!r} is not served; served: {store.names()}")
        return JSONResponse({"model_version_status": [{
            "version": served.version, "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""},
        }]})

    @app.post("/v1/models/{name}:predict")
    async def predict(name: str, request: Request) -> JSONResponse:
        served = store.get(name)
        if served is None:
            return error(404, f"model {name!r} is not served; served: {store.names()}")
        try:
            batch = parse_instances(await request.body(), served)
        except BadRequest as exc:
            return error(400, str(exc))
        out = served(batch)
        return JSONResponse({"predictions": out.tolist()})

    return app


def serve(host: str | None = None, port: int | None = None, s: Settings | None = None) -> None:
    """Run the server in the foreground (``mlp serve``)."""
    import uvicorn

    s = s or settings()
    uvicorn.run(create_app(s), host=host or s.serve_host, port=port or s.serve_port,
                log_level="info")
