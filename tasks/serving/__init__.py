"""REST serving of every use case's ``champion`` in TensorFlow Serving's REST shape.

This package owns the serving layer, and nothing else imports its insides:

- :mod:`~tasks.serving.signature`: a model's input/output signature and its TF Serving
  ``signature_def`` form;
- :mod:`~tasks.serving.codec`: request decoding and validation (JSON row and columnar
  formats, ``{"b64": ...}`` values) and response encoding; pure, no TensorFlow;
- :mod:`~tasks.serving.store`: loading registry versions into concrete ``tf.function`` objects
  and keeping the served champions in sync with the registry (hot reload);
- :mod:`~tasks.serving.limits`: body size limit (413) and the worker process that parses
  large bodies off the event loop;
- :mod:`~tasks.serving.auth` and :mod:`~tasks.serving.options`: bearer token / API keys,
  the server's own settings and the refusal to bind beyond loopback without credentials;
- :mod:`~tasks.serving.openapi`: the OpenAPI description (``GET /openapi.json``);
- :mod:`~tasks.serving.runtime` (settings in :mod:`~tasks.serving.runtime_options`):
  around the model call, :mod:`~tasks.serving.batching` (adaptive micro-batching),
  :mod:`~tasks.serving.metrics` (``GET /metrics``, Prometheus),
  :mod:`~tasks.serving.request_log` (sampled requests to rotating JSONL files) and
  :mod:`~tasks.serving.shadow` (the ``challenger`` scored in the champion's shadow);
- :mod:`~tasks.serving.app`: the Starlette app, one small handler per route;
- :mod:`~tasks.serving.server`: running it under uvicorn (``mlp serve``);
- ``static/demo.html``: the browser demo page (``GET /demo``).

One server serves every registered model whose ``champion`` alias is set:

- ``POST /v1/models/{name}:predict`` and ``POST /v1/models/{name}/versions/{v}:predict``
  take ``{"instances": [...]}`` (row format, answered with ``{"predictions": ...}``) or
  ``{"inputs": ...}`` (columnar, answered with ``{"outputs": ...}``). An instance is the
  input tensor itself or ``{"<input name>": tensor}``. A specific version is loaded on
  first use and kept in a small LRU cache.
- ``GET /v1/models/{name}[/versions/{v}]`` (status) and ``.../metadata`` (signature:
  input name, shape and dtype, output shape), ``GET /healthz``, ``GET /readyz``,
  ``GET /demo`` (draw a digit in the browser, see the class probabilities).

Binary values ``{"b64": "..."}`` are decoded for ``uint8`` inputs (the base64 bytes of
one whole instance, row-major, e.g. 784 raw pixels), ``string`` inputs (each value
becomes bytes) and image inputs (a fully defined (H, W) or (H, W, C) numeric input, e.g.
``mnist``'s 28x28 float32): a PNG or JPEG instance is decoded server-side to that shape,
converted to the input's channels, and refused with 400 naming the expected size if it
differs (never resized). Every request is validated against the model's signature, and
every client mistake (malformed JSON, wrong shape, wrong dtype, NaN, a malformed path
part) is an HTTP 400 with a message; an unknown model or version is a 404.

Limits and credentials (:mod:`~tasks.serving.limits`, :mod:`~tasks.serving.auth`): a body
over ``MLP_SERVE_MAX_BODY_BYTES`` (32 MiB) is answered 413 before it is read; bodies over
256 KiB are parsed in a worker process so the event loop keeps answering; with a token or
API keys every route but ``/healthz`` needs ``Authorization: Bearer <key>``, and
``mlp serve`` refuses a non-loopback bind without one unless ``--insecure``.

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

from typing import Any

from tasks.serving.options import OptionError

__all__ = ["OptionError", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the pure codec (as the parser process does) does not import
    # Starlette, MLflow or TensorFlow.
    if name == "create_app":
        from tasks.serving.app import create_app

        return create_app
    if name == "serve":
        from tasks.serving.server import serve

        return serve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
