"""REST serving of every use case's ``champion`` in TensorFlow Serving's REST shape.

One server serves every registered model whose ``champion`` alias is set:

- ``POST /v1/models/{name}:predict`` and ``POST /v1/models/{name}/versions/{v}:predict``
  take ``{"instances": [...]}`` (row format, answered with ``{"predictions": ...}``) or
  ``{"inputs": ...}`` (columnar, answered with ``{"outputs": ...}``). An instance is the
  input tensor itself or ``{"<input name>": tensor}``. A specific version is loaded on
  first use and kept in a small LRU cache.
- ``GET /v1/models/{name}[/versions/{v}]`` (status) and ``.../metadata`` (signature:
  input name, shape and dtype, output shape), ``GET /healthz``, ``GET /readyz``,
  ``GET /demo`` (draw a digit in the browser, see the class probabilities).

Binary values ``{"b64": "..."}`` are decoded only for ``uint8`` inputs (the base64 bytes of
one whole instance, row-major, e.g. 784 raw pixels) and ``string`` inputs (each value
becomes bytes). A ``float32`` model such as ``mnist`` rejects them with HTTP 400: send
numbers. Every request is validated against the model's signature, and every client
mistake (malformed JSON, wrong shape, wrong dtype, NaN) is an HTTP 400 with a message;
an unknown model or version is a 404.

Hot reload: a background thread polls the registry every ``MLP_SERVE_POLL_SECONDS``
(default 5). When ``champion`` moves (deploy or rollback) it loads the new version off
the request path and swaps one reference; requests already running finish on the old
version, so none fails during the swap.

Speed: the body is parsed once with orjson straight into a typed NumPy array, the model
runs as a concrete ``tf.function`` traced once per version with a fixed input signature,
and responses are serialised from NumPy by orjson. Small batches run on the event loop
(a thread hop costs more than a softmax or small CNN on one instance); large ones go to
the thread pool so health checks stay responsive.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from tasks import tracking
from tasks.core.config import Settings, settings
from tasks.core.run import EVALUATION_ARTIFACT
from tasks.tracking import CHAMPION

log = logging.getLogger(__name__)

DEMO_HTML = Path(__file__).with_name("static") / "demo.html"
MAX_INSTANCES = 4096
# Batches with more values than this run in the thread pool instead of on the event loop.
INLINE_MAX_VALUES = 64 * 784
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_TF_DTYPES = {"float16": "DT_HALF", "float32": "DT_FLOAT", "float64": "DT_DOUBLE",
              "int8": "DT_INT8", "int16": "DT_INT16", "int32": "DT_INT32", "int64": "DT_INT64",
              "uint8": "DT_UINT8", "uint16": "DT_UINT16", "bool": "DT_BOOL",
              "string": "DT_STRING"}


class BadRequest(ValueError):
    """The request cannot be served (HTTP 400); the message goes back to the client."""


class NotFound(LookupError):
    """Unknown model or version (HTTP 404); the message goes back to the client."""


@dataclass(frozen=True)
class Signature:
    """The serving signature of a single-input model with one or several named outputs.

    Shapes exclude the batch dimension; ``None`` is a dimension of any size. ``outputs``
    lists every output as (name, shape, dtype); the ``output_*`` fields describe the first.
    A model with several outputs answers, as TF Serving does, one object per instance
    (row format) or one list per output (columnar format).
    """

    input_name: str
    input_shape: tuple[int | None, ...]
    input_dtype: str
    output_name: str
    output_shape: tuple[int | None, ...]
    output_dtype: str
    outputs: tuple[tuple[str, tuple[int | None, ...], str], ...] = ()

    def to_tf_serving(self) -> dict[str, Any]:
        """``signature_def`` in TF Serving's metadata format."""
        def tensor(name: str, shape: tuple[int | None, ...], dtype: str) -> dict[str, Any]:
            dims = [{"size": "-1", "name": ""}] + [
                {"size": str(-1 if d is None else d), "name": ""} for d in shape]
            return {"dtype": _TF_DTYPES.get(dtype, dtype), "name": name,
                    "tensor_shape": {"dim": dims, "unknown_rank": False}}

        return {"signature_def": {"serving_default": {
            "inputs": {self.input_name: tensor(self.input_name, self.input_shape,
                                               self.input_dtype)},
            "outputs": {n: tensor(n, shape, dtype) for n, shape, dtype in (
                self.outputs or ((self.output_name, self.output_shape, self.output_dtype),))},
            "method_name": "tensorflow/serving/predict",
        }}}


@dataclass
class Served:
    """One loaded model version and its compiled predict function.

    Attributes:
        name: Registered model name.
        version: Registry version (a string, as in the URL).
        signature: What requests are validated against.
        predict: ``np.ndarray -> np.ndarray`` for a validated batch.
        run_id: MLflow run the version came from.
        class_names: Class labels from the run's evaluation report, if any.

    """

    name: str
    version: str
    signature: Signature
    predict: Any
    run_id: str | None = None
    class_names: list[str] = field(default_factory=list)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.predict(batch)


def signature_of(model: Any) -> Signature:
    """Read the serving signature of a Keras model.

    Raises:
        ValueError: The model does not have exactly one input, or its several outputs are
            not named (a dict).

    """
    if len(model.inputs) != 1:
        raise ValueError(f"only single-input models are served; this one has "
                         f"{len(model.inputs)} inputs")
    inp = model.inputs[0]

    def dims(t: Any) -> tuple[int | None, ...]:
        return tuple(None if d is None else int(d) for d in t.shape[1:])

    def name(t: Any, default: str) -> str:
        return str(getattr(t, "name", "") or default).split(":")[0]

    if isinstance(model.output, dict):  # named outputs, e.g. {"score", "flag"}
        outs = tuple((k, dims(t), str(t.dtype)) for k, t in model.output.items())
        first = outs[0]
        return Signature(name(inp, "input"), dims(inp), str(inp.dtype), *first, outputs=outs)
    if len(model.outputs) != 1:
        raise ValueError(f"a model with {len(model.outputs)} outputs must name them (dict)")
    out = model.outputs[0]
    # Keras names output tensors keras_tensor_N; the producing layer's name is the useful one.
    out_name = (list(getattr(model, "output_names", None) or []) or [name(out, "output")])[0]
    return Signature(name(inp, "input"), dims(inp), str(inp.dtype), out_name, dims(out),
                     str(out.dtype))


def _example(sig: Signature) -> np.ndarray:
    shape = (1, *[1 if d is None else d for d in sig.input_shape])
    if sig.input_dtype == "string":
        return np.full(shape, b"", dtype=object)
    return np.zeros(shape, dtype=sig.input_dtype)


def load_version(name: str, version: str, s: Settings | None = None) -> Served:
    """Load one registered version into a concrete ``tf.function`` (traced once, here).

    Raises:
        NotFound: The registry has no such version.

    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from tasks.tracking.loader import load_registered

    try:
        loaded = load_registered(name, str(version), s)
    except MlflowException as exc:
        raise NotFound(f"model {name!r} has no version {version}") from exc
    sig = signature_of(loaded.model)
    predict = loaded.predict
    predict(_example(sig))  # first call allocates; keep that off the first request
    class_names: list[str] = []
    if loaded.run_id:
        try:
            report = mlflow.artifacts.load_dict(f"runs:/{loaded.run_id}/{EVALUATION_ARTIFACT}")
            class_names = [str(c) for c in report.get("class_names", [])]
        except Exception:  # models logged outside the pipeline have no evaluation report
            class_names = []
    return Served(name, str(version), sig, predict, loaded.run_id, class_names)


class ModelStore:
    """The served champions, plus versions loaded on demand, kept in sync with the registry.

    Readers never lock: the champion table is replaced as a whole (copy on write), so a
    request sees either the old or the new version, and an old version stays alive until
    the requests using it finish.
    """

    def __init__(self, s: Settings | None = None, poll_seconds: float | None = None,
                 max_versions: int = 8, loader: Any = load_version,
                 models: Collection[str] | None = None) -> None:
        self._s = s or settings()
        self._only = frozenset(models) if models else None
        self.poll_seconds = (self._s.serve_poll_seconds if poll_seconds is None
                             else float(poll_seconds))
        self._loader = loader
        self._max_versions = max_versions
        self._champions: dict[str, Served] = {}
        self._versions: OrderedDict[tuple[str, str], Served] = OrderedDict()
        self._loading: dict[str, str] = {}
        self._failed: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()

    # -- reads (request path) -------------------------------------------------------------

    def get(self, name: str) -> Served | None:
        """The champion served for ``name``, if any."""
        return self._champions.get(name)

    def names(self) -> list[str]:
        """Names of all served models."""
        return sorted(self._champions)

    def cached_version(self, name: str, version: str) -> Served | None:
        """A version already in memory (champion or cached), without touching the registry."""
        champ = self._champions.get(name)
        if champ is not None and champ.version == version:
            return champ
        with self._lock:
            served = self._versions.get((name, version))
            if served is not None:
                self._versions.move_to_end((name, version))
            return served

    def loaded_versions(self, name: str) -> list[Served]:
        """Champion first, then other versions of ``name`` in memory."""
        champ = self._champions.get(name)
        with self._lock:
            others = [v for (n, _), v in self._versions.items()
                      if n == name and (champ is None or v.version != champ.version)]
        return ([champ] if champ else []) + sorted(others, key=lambda v: int(v.version))

    def loading(self, name: str) -> str | None:
        """Version of ``name`` being loaded by the poller right now, if any."""
        return self._loading.get(name)

    # -- loading --------------------------------------------------------------------------

    def _remember(self, served: Served) -> None:
        with self._lock:
            self._versions[(served.name, served.version)] = served
            self._versions.move_to_end((served.name, served.version))
            while len(self._versions) > self._max_versions:
                self._versions.popitem(last=False)

    def get_version(self, name: str, version: str) -> Served:
        """A specific version, loaded on first use (blocking: call off the event loop).

        Raises:
            NotFound: No such model version in the registry.

        """
        served = self.cached_version(name, version)
        if served is not None:
            return served
        # One on-demand load at a time: concurrent first requests load a version once, and
        # requests for arbitrary version numbers cannot pile up loads.
        with self._load_lock:
            served = self.cached_version(name, version)
            if served is None:
                served = self._loader(name, version, self._s)
                self._remember(served)
        return served

    def sync(self) -> dict[str, str]:
        """One registry poll: load and swap in every champion that moved.

        Returns:
            Model name -> version served after the poll.

        """
        client = tracking.configure(self._s)
        wanted: dict[str, str] = {}
        token = None
        while True:
            page = client.search_registered_models(max_results=100, page_token=token)
            for rm in page:
                if self._only is not None and rm.name not in self._only:
                    continue
                version = (rm.aliases or {}).get(CHAMPION)
                if version is not None:
                    wanted[rm.name] = str(version)
            token = page.token
            if not token:
                break
        for name, version in sorted(wanted.items()):
            current = self._champions.get(name)
            if current is not None and current.version == version:
                continue
            failed_at = self._failed.get((name, version))
            if failed_at is not None and time.monotonic() - failed_at < 60:
                continue  # a broken version is retried once a minute, not every poll
            self._loading[name] = version
            try:
                served = self.cached_version(name, version) or self._loader(name, version,
                                                                           self._s)
            except Exception:  # one broken model must not take the others down
                log.exception("cannot load %s version %s; still serving %s", name, version,
                              current.version if current else "nothing")
                self._failed[(name, version)] = time.monotonic()
                continue
            finally:
                self._loading.pop(name, None)
            if current is not None:
                self._remember(current)  # the demoted version stays warm for a rollback
            self._champions = {**self._champions, name: served}
            log.info("serving %s version %s (was %s)", name, version,
                     current.version if current else "none")
        return {n: s.version for n, s in self._champions.items()}

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception:  # registry unreachable: keep serving what is loaded
                log.exception("registry poll failed; serving %s", self.names())
            finally:
                self.ready.set()
            self._stop.wait(self.poll_seconds)

    def start(self) -> None:
        """Start polling the registry in a daemon thread (the first poll loads everything)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll, name="registry-poll",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        """Stop polling (waits for a load in progress to finish)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


# -- request validation -------------------------------------------------------------------


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _named(value: Any, sig: Signature, where: str) -> Any:
    """Unwrap ``{"<input name>": tensor}``; anything else is returned as is."""
    if not isinstance(value, dict) or "b64" in value:
        return value
    if set(value) != {sig.input_name}:
        raise BadRequest(f"{where} names inputs {sorted(value)}; the model has one input "
                         f"{sig.input_name!r}")
    return value[sig.input_name]


def _has_b64(data: Any) -> bool:
    if isinstance(data, dict):
        return "b64" in data
    return isinstance(data, list) and any(_has_b64(x) for x in data)


def _b64(value: Any) -> bytes:
    if set(value) != {"b64"} or not isinstance(value["b64"], str):
        raise BadRequest('a binary value must be {"b64": "<base64 string>"}')
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"invalid base64 value: {exc}") from exc


def _decode_strings(data: Any) -> Any:
    if isinstance(data, dict):
        return _b64(data)
    if isinstance(data, list):
        return [_decode_strings(x) for x in data]
    return data


def _decode_uint8(data: list[Any], sig: Signature) -> list[Any]:
    """Per-instance ``{"b64": raw bytes}`` of a uint8 input -> arrays of the input shape."""
    if any(d is None for d in sig.input_shape):
        raise BadRequest(f"b64 instances need a fully defined input shape; "
                         f"{sig.input_name!r} is {_shape_text(sig.input_shape)}")
    size = math.prod(sig.input_shape)
    out = []
    for item in data:
        if isinstance(item, dict):
            raw = _b64(item)
            if len(raw) != size:
                raise BadRequest(f"b64 instance decodes to {len(raw)} bytes; input "
                                 f"{sig.input_name!r} {_shape_text(sig.input_shape)} "
                                 f"uint8 needs {size}")
            item = np.frombuffer(raw, dtype=np.uint8).reshape(sig.input_shape)
        out.append(item)
    return out


def _typed(arr: np.ndarray, data: Any, sig: Signature) -> np.ndarray:
    """Check the parsed array's element type against the input dtype and convert."""
    want = np.dtype(object if sig.input_dtype == "string" else sig.input_dtype)
    kind = arr.dtype.kind
    label = f"input {sig.input_name!r} ({sig.input_dtype})"
    if sig.input_dtype == "string":
        bad = next((v for v in arr.flat if not isinstance(v, str | bytes)), None)
        if bad is not None:
            raise BadRequest(f"{label} takes strings, got {type(bad).__name__} values")
        return arr
    if kind == "O" and _has_b64(data):
        raise BadRequest(f'binary {{"b64": ...}} values are accepted for uint8 and string '
                         f"inputs only; {label} takes numbers")
    if kind in "USO":
        got = "strings" if kind in "US" else "non-numeric values (null, objects or mixed)"
        raise BadRequest(f"{label} takes numbers, got {got}")
    if want.kind == "f":
        if kind not in "iuf":
            raise BadRequest(f"{label} takes numbers, got {arr.dtype.name} values")
        with np.errstate(over="ignore"):  # overflow becomes inf, rejected just below
            arr = arr.astype(want, copy=False)
        if not np.isfinite(arr).all():
            raise BadRequest(f"{label}: values are NaN, infinite or out of float range")
        return arr
    if want.kind in "iu":
        if kind == "f":
            if not np.isfinite(arr).all() or (arr != np.floor(arr)).any():
                raise BadRequest(f"{label} takes integers, got fractional values")
        elif kind not in "iu":
            raise BadRequest(f"{label} takes integers, got {arr.dtype.name} values")
        info = np.iinfo(want)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise BadRequest(f"{label}: values must lie in [{info.min}, {info.max}]")
        return arr.astype(want, copy=False)
    if want.kind == "b" and kind == "b":
        return arr
    raise BadRequest(f"{label} cannot take {arr.dtype.name} values")


def parse_request(body: bytes, sig: Signature) -> tuple[np.ndarray, str]:
    """Decode and validate a predict request against the model's signature.

    Args:
        body: Raw request body.
        sig: The served version's signature.

    Returns:
        The batch, typed as the model input, and the response key (``predictions`` for row
        format, ``outputs`` for columnar).

    Raises:
        BadRequest: Malformed JSON, missing or duplicate ``instances``/``inputs``, unknown
            input names, wrong element type, ragged arrays, a shape that does not match the
            signature, NaN/infinity, or ``b64`` values for a numeric float input.

    """
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise BadRequest("the body must be a JSON object with 'instances' or 'inputs'")
    if ("instances" in payload) == ("inputs" in payload):
        raise BadRequest("the body must have exactly one of 'instances' (row format) or "
                         "'inputs' (columnar format)")
    if "instances" in payload:
        key, data = "predictions", payload["instances"]
        if not isinstance(data, list) or not data:
            raise BadRequest("'instances' must be a non-empty list of instances")
        if isinstance(data[0], dict):
            data = [_named(x, sig, "an instance") for x in data]
    else:
        key, data = "outputs", _named(payload["inputs"], sig, "'inputs'")
        if not isinstance(data, list) or not data:
            raise BadRequest("'inputs' must be a non-empty list (batch dimension first)")
    if len(data) > MAX_INSTANCES:
        raise BadRequest(f"at most {MAX_INSTANCES} instances per request, got {len(data)}")
    if sig.input_dtype == "uint8" and any(isinstance(x, dict) for x in data):
        data = _decode_uint8(data, sig)
    elif sig.input_dtype == "string":
        data = _decode_strings(data)
    try:
        arr = np.asarray(data, dtype=object if sig.input_dtype == "string" else None)
    except (ValueError, TypeError) as exc:  # ragged nesting
        raise BadRequest(f"instances of {sig.input_name!r} must all have shape "
                         f"{_shape_text(sig.input_shape)}; the arrays are ragged") from exc
    arr = _typed(arr, data, sig)
    shape = arr.shape[1:]
    if len(shape) != len(sig.input_shape) or any(
            want is not None and got != want for got, want in zip(shape, sig.input_shape,
                                                                    strict=False)):
        raise BadRequest(f"each instance of {sig.input_name!r} must have shape "
                         f"{_shape_text(sig.input_shape)}, got {list(shape)}")
    return arr, key


# -- HTTP ---------------------------------------------------------------------------------


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj, option=_NUMPY), status_code=status,
                    media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


def _status(versions: list[Served], loading: str | None) -> dict[str, Any]:
    ok = {"error_code": "OK", "error_message": ""}
    out = [{"version": v.version, "state": "AVAILABLE", "status": ok} for v in versions]
    if loading is not None and all(v.version != loading for v in versions):
        out.append({"version": loading, "state": "LOADING", "status": ok})
    return {"model_version_status": out}


def _metadata(served: Served) -> dict[str, Any]:
    return {
        "model_spec": {"name": served.name, "signature_name": "serving_default",
                       "version": served.version},
        "metadata": {"signature_def": served.signature.to_tf_serving()},
        "mlp": {"run_id": served.run_id, "class_names": served.class_names},
    }


def create_app(s: Settings | None = None, store: ModelStore | None = None,
               models: Collection[str] | None = None) -> Starlette:
    """Build the ASGI app; the registry poller starts and stops with the app's lifespan.

    Args:
        s: Settings (registry location, poll interval).
        store: A store to serve from (default: a new one polling the registry of ``s``).
        models: Serve only these registered models (default: every model with a champion).

    """
    store = store or ModelStore(s, models=models)
    demo_html = DEMO_HTML.read_text()

    def not_served(name: str) -> Response:
        return _error(404, f"model {name!r} is not served; served: {store.names()}")

    async def resolve(request: Request) -> Served | Response:
        """The version a request addresses, or the error response to send."""
        name = request.path_params["name"]
        version = request.path_params.get("version")
        if version is None:
            return store.get(name) or not_served(name)
        if not version.isdigit() or int(version) < 1:
            return _error(400, f"version must be a positive integer, got {version!r}")
        version = str(int(version))
        served = store.cached_version(name, version)
        if served is not None:
            return served
        try:
            return await run_in_threadpool(store.get_version, name, version)
        except NotFound as exc:
            return _error(404, str(exc))

    async def predict(request: Request) -> Response:
        served = await resolve(request)
        if isinstance(served, Response):
            return served
        try:
            batch, key = parse_request(await request.body(), served.signature)
        except BadRequest as exc:
            return _error(400, str(exc))
        try:
            if batch.size <= INLINE_MAX_VALUES:
                out = served(batch)
            else:
                out = await run_in_threadpool(served, batch)
        except Exception as exc:  # validated input should never get here: a model fault
            import tensorflow as tf

            if isinstance(exc, tf.errors.InvalidArgumentError):
                return _error(400, f"the model rejected the input: {exc.message}")
            log.exception("predict failed for %s version %s", served.name, served.version)
            return _error(500, f"prediction failed: {type(exc).__name__}")
        if isinstance(out, dict) and key == "predictions":
            # Row format with named outputs: one object per instance, as TF Serving does.
            out = [dict(zip(out, values, strict=True)) for values in zip(*out.values(),
                                                                         strict=True)]
        # The version header lets clients (and the hot-reload test) see which one answered.
        return Response(orjson.dumps({key: out}, option=_NUMPY), media_type="application/json",
                        headers={"x-model-version": served.version})

    async def status(request: Request) -> Response:
        name = request.path_params["name"]
        if "version" in request.path_params:
            served = await resolve(request)
            if isinstance(served, Response):
                return served
            return _json(_status([served], None))
        versions = store.loaded_versions(name)
        if not versions:
            return not_served(name)
        return _json(_status(versions, store.loading(name)))

    async def metadata(request: Request) -> Response:
        served = await resolve(request)
        if isinstance(served, Response):
            return served
        return _json(_metadata(served))

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if not store.ready.is_set():
            return _error(503, "models are still loading")
        return _json({"status": "ready", "models": {n: store.get(n).version
                                                    for n in store.names()}})

    async def demo(request: Request) -> Response:
        return HTMLResponse(demo_html)

    async def index(request: Request) -> Response:
        return RedirectResponse("/demo")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")

    @asynccontextmanager
    async def lifespan(app: Starlette):  # noqa: ANN202
        store.start()
        try:
            yield
        finally:
            store.stop()

    routes = [
        Route("/v1/models/{name}:predict", predict, methods=["POST"]),
        Route("/v1/models/{name}/versions/{version}:predict", predict, methods=["POST"]),
        Route("/v1/models/{name}", status, methods=["GET"]),
        Route("/v1/models/{name}/versions/{version}", status, methods=["GET"]),
        Route("/v1/models/{name}/metadata", metadata, methods=["GET"]),
        Route("/v1/models/{name}/versions/{version}/metadata", metadata, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/demo", demo, methods=["GET"]),
        Route("/", index, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error})
    app.state.store = store
    return app


def serve(host: str | None = None, port: int | None = None, s: Settings | None = None,
          access_log: bool = False, models: Collection[str] | None = None) -> None:
    """Run the server in the foreground (``mlp serve``).

    Args:
        host: Bind address (default ``MLP_SERVE_HOST``).
        port: Port (default ``MLP_SERVE_PORT``).
        s: Settings.
        models: Serve only these registered models (default: every champion).
        access_log: Log every request (off by default: it costs a sizeable share of the
            per-request time at hundreds of requests per second).

    """
    import uvicorn

    s = s or settings()
    uvicorn.run(create_app(s, models=models), host=host or s.serve_host,
                port=port or s.serve_port, log_level="info", access_log=access_log)
