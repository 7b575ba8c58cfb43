"""Settings of the server's runtime extras: metrics, micro-batching, request logs, shadow.

Read from ``MLP_SERVE_*`` variables (``mlp serve`` flags win over them); every invalid
value is an :class:`~tasks.serving.options.OptionError` naming the variable, raised before
anything is loaded.

Micro-batching takes TensorFlow Serving's batching parameters (``max_batch_size``,
``batch_timeout_micros``, ``max_enqueued_batches``), globally or per model from a JSON file
(``--batching-parameters FILE`` / ``MLP_SERVE_BATCHING_PARAMETERS``)::

    {"max_batch_size": 64, "batch_timeout_micros": 0, "max_enqueued_batches": 64,
     "models": {"ptb_lm": {"max_batch_size": 8}, "faces": {"enabled": false}}}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tasks.serving.options import OptionError

MIB = 1024 * 1024


@dataclass(frozen=True)
class BatchingParameters:
    """How concurrent requests for one model are merged into one model call.

    The names and meaning follow TensorFlow Serving's ``BatchingParameters``.

    Attributes:
        enabled: Merge requests at all (``MLP_SERVE_BATCHING=0`` turns it off).
        max_batch_size: Most instances in one model call; a request larger than this
            runs alone (``MLP_SERVE_MAX_BATCH_SIZE``, default 64).
        batch_timeout_micros: How long a batch may wait for more requests before the
            model is called while the model is idle (``MLP_SERVE_BATCH_TIMEOUT_MICROS``,
            default 0: no waiting; requests that arrive while the model runs form the
            next batch, so batches grow with the load and a lone request never waits).
        max_enqueued_batches: Queue bound in batches of ``max_batch_size`` instances;
            beyond it requests are answered 503 at once (``MLP_SERVE_MAX_ENQUEUED_BATCHES``,
            default 64).

    """

    enabled: bool = True
    max_batch_size: int = 64
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 64

    @property
    def max_enqueued_instances(self) -> int:
        """The queue bound in instances."""
        return self.max_batch_size * self.max_enqueued_batches


@dataclass(frozen=True)
class RuntimeOptions:
    """The runtime extras of ``mlp serve``.

    Attributes:
        metrics: Expose ``GET /metrics`` and record request metrics (``MLP_SERVE_METRICS``,
            default on).
        batching: Batching parameters of every model without its own.
        batching_per_model: Per model overrides.
        log_sample: Request log sampling rate per model name (``"*"`` for every model;
            ``MLP_SERVE_LOG_SAMPLE``, e.g. ``0.1`` or ``mnist=1,faces=0.05``; default off).
        log_file_bytes: Rotate a request log file past this size
            (``MLP_SERVE_LOG_FILE_BYTES``, default 16 MiB).
        log_file_seconds: ... or this age, so readers see closed files regularly
            (``MLP_SERVE_LOG_FILE_SECONDS``, default 300).
        log_max_bytes: Closed files kept per model; the oldest go first
            (``MLP_SERVE_LOG_MAX_BYTES``, default 512 MiB).
        log_queue: Records waiting for the writer; beyond it samples are dropped and
            counted (``MLP_SERVE_LOG_QUEUE``, default 1024).
        shadow_sample: Share of the champion's answered requests also scored by the
            challenger, per model (``MLP_SERVE_SHADOW_SAMPLE``, default 1: all of them,
            as far as the queue takes them).
        shadow_queue: Requests waiting for the challenger; when full, samples are dropped
            and counted, never waited for (``MLP_SERVE_SHADOW_QUEUE``, default 256).
        shadow_log_seconds: How often the agreement figures go to the challenger's MLflow
            run (``MLP_SERVE_SHADOW_LOG_SECONDS``, default 30).

    """

    metrics: bool = True
    batching: BatchingParameters = field(default_factory=BatchingParameters)
    batching_per_model: dict[str, BatchingParameters] = field(default_factory=dict)
    log_sample: dict[str, float] = field(default_factory=dict)
    log_file_bytes: int = 16 * MIB
    log_file_seconds: float = 300.0
    log_max_bytes: int = 512 * MIB
    log_queue: int = 1024
    shadow_sample: dict[str, float] = field(default_factory=lambda: {"*": 1.0})
    shadow_queue: int = 256
    shadow_log_seconds: float = 30.0

    def batching_for(self, model: str) -> BatchingParameters:
        """The batching parameters of one model."""
        return self.batching_per_model.get(model, self.batching)

    @staticmethod
    def rate(rates: dict[str, float], model: str) -> float:
        """A per-model rate: the model's own, else ``"*"``'s, else 0."""
        return rates.get(model, rates.get("*", 0.0))

    @classmethod
    def from_env(cls, *, log_requests: list[str] | None = None,
                 batching_file: str | Path | None = None,
                 batching: bool | None = None) -> RuntimeOptions:
        """Options from ``MLP_SERVE_*`` variables; the arguments (CLI flags) win.

        Args:
            log_requests: ``[NAME=]RATE`` items (``mlp serve --log-requests``).
            batching_file: JSON batching parameters (``--batching-parameters``).
            batching: False for ``--no-batching``.

        Raises:
            OptionError: A value is invalid (the message names the variable or flag).

        """
        env = os.environ
        batch = BatchingParameters(
            enabled=_flag("MLP_SERVE_BATCHING", True),
            max_batch_size=_int("MLP_SERVE_MAX_BATCH_SIZE", 64, 1),
            batch_timeout_micros=_int("MLP_SERVE_BATCH_TIMEOUT_MICROS", 0, 0),
            max_enqueued_batches=_int("MLP_SERVE_MAX_ENQUEUED_BATCHES", 64, 1))
        per_model: dict[str, BatchingParameters] = {}
        batching_file = batching_file or env.get("MLP_SERVE_BATCHING_PARAMETERS") or None
        if batching_file:
            batch, per_model = read_batching_file(Path(batching_file), batch)
        if batching is False:
            batch = replace(batch, enabled=False)
            per_model = {k: replace(v, enabled=False) for k, v in per_model.items()}
        log_sample = parse_rates(env.get("MLP_SERVE_LOG_SAMPLE", ""), "MLP_SERVE_LOG_SAMPLE")
        for item in log_requests or []:
            log_sample.update(parse_rates(item, "--log-requests"))
        shadow = parse_rates(env.get("MLP_SERVE_SHADOW_SAMPLE", ""), "MLP_SERVE_SHADOW_SAMPLE")
        return cls(
            metrics=_flag("MLP_SERVE_METRICS", True),
            batching=batch, batching_per_model=per_model, log_sample=log_sample,
            log_file_bytes=_int("MLP_SERVE_LOG_FILE_BYTES", 16 * MIB, 4096),
            log_file_seconds=_float("MLP_SERVE_LOG_FILE_SECONDS", 300.0),
            log_max_bytes=_int("MLP_SERVE_LOG_MAX_BYTES", 512 * MIB, 4096),
            log_queue=_int("MLP_SERVE_LOG_QUEUE", 1024, 1),
            shadow_sample={"*": 1.0, **shadow},
            shadow_queue=_int("MLP_SERVE_SHADOW_QUEUE", 256, 1),
            shadow_log_seconds=_float("MLP_SERVE_SHADOW_LOG_SECONDS", 30.0))


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "on", "yes"):
        return True
    if raw in ("0", "false", "off", "no"):
        return False
    raise OptionError(f"{name}={raw!r} must be 1/0 (or true/false, on/off)")


def _int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise OptionError(f"{name}={raw!r} must be an integer >= {minimum}")
    return value


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise OptionError(f"{name}={raw!r} must be a positive number of seconds")
    return value


def parse_rates(text: str, where: str) -> dict[str, float]:
    """``0.1`` or ``mnist=1,faces=0.05`` (``*`` is every model) -> {name: rate}.

    Raises:
        OptionError: A rate outside [0, 1] or a malformed item.

    """
    out: dict[str, float] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, sep, value = item.rpartition("=")
        name = name.strip() if sep else "*"
        try:
            rate = float(value)
        except ValueError:
            rate = -1.0
        if not name or not 0.0 <= rate <= 1.0:
            raise OptionError(f"{where} {item!r}: expected RATE or NAME=RATE with RATE "
                              "between 0 and 1 (e.g. 0.1 or mnist=1)")
        out[name] = rate
    return out


_BATCH_KEYS = {f.name for f in fields(BatchingParameters)}


def _batch_params(doc: Any, base: BatchingParameters, where: str) -> BatchingParameters:
    if not isinstance(doc, dict):
        raise OptionError(f"{where}: expected a JSON object of batching parameters")
    unknown = sorted(set(doc) - _BATCH_KEYS)
    if unknown:
        raise OptionError(f"{where}: unknown batching parameter(s) {unknown}; known: "
                          f"{sorted(_BATCH_KEYS)}")
    for key, value in doc.items():
        if key == "enabled":
            ok = isinstance(value, bool)
        else:
            ok = (isinstance(value, int) and not isinstance(value, bool)
                  and value >= (0 if key == "batch_timeout_micros" else 1))
        if not ok:
            want = "true or false" if key == "enabled" else (
                "an integer >= 0" if key == "batch_timeout_micros" else "an integer >= 1")
            raise OptionError(f"{where}: {key} must be {want}, got {value!r}")
    return replace(base, **doc)


def read_batching_file(path: Path, base: BatchingParameters
                       ) -> tuple[BatchingParameters, dict[str, BatchingParameters]]:
    """Global and per-model batching parameters from a JSON file (see the module doc).

    Raises:
        OptionError: Unreadable file, malformed JSON, unknown keys or bad values.

    """
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise OptionError(f"cannot read batching parameters {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise OptionError(f"batching parameters {path}: malformed JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise OptionError(f"batching parameters {path}: expected a JSON object")
    models = doc.pop("models", {})
    if not isinstance(models, dict):
        raise OptionError(f"batching parameters {path}: 'models' must map model names to "
                          "objects")
    glob = _batch_params(doc, base, f"batching parameters {path}")
    return glob, {name: _batch_params(v, glob, f"batching parameters {path}, model {name!r}")
                  for name, v in models.items()}
