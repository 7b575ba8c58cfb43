"""Shadow scoring: the ``challenger`` answers a sample of the champion's requests, unseen.

Clients always get the champion's answer. After it is computed, the request path offers
the decoded batch and the champion's answer to a bounded queue (dropped and counted when
full: never a wait); a background thread runs the challenger on what is queued (several
requests per call), compares both answers per instance and keeps the running agreement:

==================  =====================  =================================================
model kind          measure                per instance
==================  =====================  =================================================
classification      ``same_class_rate``    same most likely class (1/0)
binary              ``same_flag_rate``     same side of 0.5 (1/0)
anomaly             ``same_flag_rate``     same ``flag`` (1/0)
regression          ``mean_abs_diff``      mean absolute difference of the outputs
autoencoder         ``mean_abs_diff``      mean absolute difference of the reconstructions
language_model      ``top1_agreement``     same most likely next token (1/0)
detection           ``top1_agreement``     same class of the best-scored detection (1/0)
==================  =====================  =================================================

The kind is the ``objective`` param of the version's training run, else read from the
signature. Figures go to ``/metrics`` (``mlp_serving_shadow_*``) at once and, every
``shadow_log_seconds``, to the challenger's MLflow run (``shadow_<measure>``,
``shadow_instances``, ``shadow_dropped``; tags ``shadow.champion_version``,
``shadow.measure``), which ``mlp promote`` reads. A challenger whose input signature
differs from the champion's cannot take the champion's decoded batch: its samples are
dropped with reason ``signature``.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from tasks.core.config import Settings
from tasks.serving.batching import concat
from tasks.serving.handoff import Handoff, nbytes
from tasks.serving.runtime_options import RuntimeOptions
from tasks.tracking.challenger import (
    SHADOW_CHAMPION_TAG,
    SHADOW_MEASURE_TAG,
    SHADOW_PREFIX,
    SHADOW_UPDATED_TAG,
)

log = logging.getLogger(__name__)

MAX_ITEMS_PER_CALL = 64
POLL_SECONDS = 0.05  # how long queued requests wait to be scored together, at most
QUEUE_BYTES = 64 * 1024 * 1024  # arrays waiting for the challenger, at most


# -- agreement, one object per kind of answer ------------------------------------------------


def _pick(out: Any, keys: tuple[str, ...]) -> Any:
    """The output named by the first key present (or the only/first output)."""
    if not isinstance(out, dict):
        return out
    for key in keys:
        if key in out:
            return out[key]
    return next(iter(out.values()))


class Agreement:
    """Per-instance agreement of two answers; ``measure`` names the figure."""

    measure = ""

    def values(self, champion: Any, challenger: Any) -> np.ndarray:
        """One value per instance (1/0, or an absolute difference)."""
        raise NotImplementedError


class SameClass(Agreement):
    """Classifiers: the most likely class (or the class name output) is the same."""

    measure = "same_class_rate"

    def values(self, champion: Any, challenger: Any) -> np.ndarray:
        a, b = (np.asarray(_pick(o, ("probabilities", "probs", "scores"))) for o in
                (champion, challenger))
        a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
        return (a.argmax(axis=1) == b.argmax(axis=1)).astype(np.float64)


class SameFlag(Agreement):
    """Binary classifiers and anomaly detectors: the same flag (``flag`` or p >= 0.5)."""

    measure = "same_flag_rate"

    def values(self, champion: Any, challenger: Any) -> np.ndarray:
        def flag(out: Any) -> np.ndarray:
            if isinstance(out, dict) and "flag" in out:
                f = np.asarray(out["flag"])
            else:
                f = np.asarray(_pick(out, ("probability", "probabilities"))) >= 0.5
            return f.reshape(len(f), -1)[:, 0].astype(bool)

        return (flag(champion) == flag(challenger)).astype(np.float64)


class MeanAbsDiff(Agreement):
    """Regressors and autoencoders: the mean absolute difference of the outputs."""

    measure = "mean_abs_diff"

    def values(self, champion: Any, challenger: Any) -> np.ndarray:
        a, b = (np.asarray(_pick(o, ("prediction", "predictions")), dtype=np.float64)
                for o in (champion, challenger))
        return np.abs(a - b).reshape(len(a), -1).mean(axis=1)


class TopOne(Agreement):
    """Language models and detectors: the top-ranked token (or detection class) is the same."""

    measure = "top1_agreement"

    def __init__(self, key: str) -> None:
        self.key = key

    def values(self, champion: Any, challenger: Any) -> np.ndarray:
        def first(out: Any) -> list[Any]:
            v = _pick(out, (self.key,))
            return [row[0] if len(row) else None for row in
                    (v.tolist() if isinstance(v, np.ndarray) else v)]

        return np.array([x == y for x, y in zip(first(champion), first(challenger),
                                                 strict=True)], dtype=np.float64)


AGREEMENTS: dict[str, Agreement] = {
    "classification": SameClass(),
    "binary": SameFlag(),
    "anomaly": SameFlag(),
    "regression": MeanAbsDiff(),
    "autoencoder": MeanAbsDiff(),
    "language_model": TopOne("next"),
    "detection": TopOne("detection_classes"),
}


def kind_from_signature(sig: Any) -> str:
    """The model kind a served signature implies (models without a training run's param)."""
    names = {n for n, _, _ in sig.outputs} if sig.outputs else {sig.output_name}
    if "flag" in names:
        return "anomaly"
    if "next" in names:
        return "language_model"
    if "detection_classes" in names:
        return "detection"
    shape = sig.output_shape
    if sig.output_dtype.startswith("float") and len(shape) == 1 and (shape[0] or 0) > 1:
        return "classification"
    if shape == tuple(sig.input_shape) and len(shape) > 1:
        return "autoencoder"
    return "regression"


def kind_of(served: Any, client: Any) -> str:
    """The objective of the version's training run, else read from its signature."""
    if served.run_id:
        try:
            kind = client.get_run(served.run_id).data.params.get("objective")
        except Exception:  # noqa: BLE001 - run deleted or store unreachable
            kind = None
        if kind in AGREEMENTS:
            return kind
    return kind_from_signature(served.signature)


# -- the scorer ------------------------------------------------------------------------------


@dataclass
class Pair:
    """Running figures of one (champion, challenger) pair of a model."""

    model: str
    champion: str
    challenger: str
    run_id: str | None
    agreement: Agreement
    instances: int = 0
    total: float = 0.0
    logged_at: int = 0

    @property
    def value(self) -> float | None:
        """The mean per-instance agreement so far."""
        return self.total / self.instances if self.instances else None


def _signature_key(sig: Any) -> Any:
    inputs = getattr(sig, "inputs", None)
    return inputs if inputs else (sig.input_name, sig.input_shape, sig.input_dtype)


class ShadowScorer:
    """The queue and thread that score challengers in the champions' shadow.

    Args:
        store: The model store (``challenger(name)``).
        options: Sampling rates, queue size and the MLflow logging period.
        metrics: The app's metrics (or None).
        s: Settings (the MLflow store the figures go to).

    """

    def __init__(self, store: Any, options: RuntimeOptions, metrics: Any = None,
                 s: Settings | None = None) -> None:
        self._store = store
        self._options = options
        self._rates = dict(options.shadow_sample)
        self._metrics = metrics
        self._s = s
        self._queue = Handoff(options.shadow_queue, QUEUE_BYTES)
        self._pairs: dict[tuple[str, str, str], Pair] = {}
        self._kinds: dict[tuple[str, str], str] = {}
        self._dropped: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._last_log = time.monotonic()

    # -- request path (event loop) ----------------------------------------------------------

    def offer(self, champion: Any, batch: Any, out: Any) -> None:
        """Queue a champion-answered request for its challenger, if any (never blocks)."""
        challenger = self._store.challenger(champion.name)
        if challenger is None or challenger.version == champion.version:
            return
        rate = self._rates.get(champion.name, self._rates.get("*", 1.0))
        if rate < 1.0 and random.random() >= rate:
            return
        if not self._queue.offer((champion, challenger, batch, out),
                                 nbytes(batch) + nbytes(out)):
            self._drop(champion.name, "queue_full")

    def _drop(self, model: str, reason: str, count: int = 1) -> None:
        self._dropped[model] = self._dropped.get(model, 0) + count
        if self._metrics is not None:
            self._metrics.shadow_dropped.labels(model, reason).inc(count)

    # -- the scoring thread ------------------------------------------------------------------

    def _mlflow(self) -> Any:
        if self._client is None:
            from tasks import tracking

            self._client = tracking.configure(self._s)
        return self._client

    def _pair(self, champion: Any, challenger: Any) -> Pair:
        key = (champion.name, champion.version, challenger.version)
        pair = self._pairs.get(key)
        if pair is None:
            kkey = (challenger.name, challenger.version)
            kind = self._kinds.get(kkey)
            if kind is None:
                kind = self._kinds[kkey] = kind_of(challenger, self._mlflow())
            pair = self._pairs[key] = Pair(champion.name, champion.version,
                                           challenger.version, challenger.run_id,
                                           AGREEMENTS[kind])
        return pair

    def _score(self, items: list[tuple]) -> None:
        """Run one challenger on compatible queued requests and update the figures."""
        champion, challenger = items[0][0], items[0][1]
        if _signature_key(champion.signature) != _signature_key(challenger.signature):
            self._drop(champion.name, "signature", len(items))
            return
        try:
            batch = concat([i[2] for i in items]) if len(items) > 1 else items[0][2]
            theirs = challenger(batch)
            ours = concat([i[3] for i in items]) if len(items) > 1 else items[0][3]
            if isinstance(ours, list):  # text outputs are lists
                ours = np.asarray(ours, dtype=object)
            pair = self._pair(champion, challenger)
            values = pair.agreement.values(ours, theirs)
        except Exception:  # noqa: BLE001 - a challenger fault never reaches clients
            log.warning("shadow scoring of %s challenger version %s failed", champion.name,
                        challenger.version, exc_info=True)
            self._drop(champion.name, "error", len(items))
            return
        pair.instances += len(values)
        pair.total += float(values.sum())
        if self._metrics is not None:
            labels = (pair.model, pair.champion, pair.challenger)
            self._metrics.shadow_instances.labels(*labels).inc(len(values))
            self._metrics.shadow_agreement_sum.labels(*labels, pair.agreement.measure).inc(
                float(values.sum()))
            self._metrics.shadow_agreement.labels(*labels, pair.agreement.measure).set(
                pair.value)

    def _groups(self, items: list[tuple]) -> list[list[tuple]]:
        """Queued requests grouped by pair and batch form, in arrival order."""
        groups: dict[Any, list[tuple]] = {}
        for item in items:
            champion, challenger, batch, _ = item
            form = (tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(batch.items()))
                    if isinstance(batch, dict) else (batch.dtype.str, batch.shape[1:]))
            key = (champion.name, champion.version, challenger.version, form)
            groups.setdefault(key, []).append(item)
        return list(groups.values())

    def log_figures(self, force: bool = False) -> None:
        """Log each pair's figures to its challenger's MLflow run (when they changed)."""
        due = [p for p in list(self._pairs.values()) if p.run_id is not None and p.instances
               and (force or p.instances != p.logged_at)]
        if not due:
            return  # (and MLflow is not imported: the poller thread may be importing it)
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        for pair in due:
            # The step is the time, so the latest figures are the newest whichever server
            # process logged them (MLflow's latest value is the one of the largest step).
            step = now // 1000
            name = f"{SHADOW_PREFIX}{pair.agreement.measure}"
            metrics = [Metric(name, float(pair.value), now, step),
                       Metric(f"{SHADOW_PREFIX}instances", float(pair.instances), now, step),
                       Metric(f"{SHADOW_PREFIX}dropped",
                              float(self._dropped.get(pair.model, 0)), now, step)]
            tags = [RunTag(SHADOW_CHAMPION_TAG, pair.champion),
                    RunTag(SHADOW_MEASURE_TAG, pair.agreement.measure),
                    RunTag(SHADOW_UPDATED_TAG,
                           datetime.now(UTC).isoformat(timespec="seconds"))]
            try:
                self._mlflow().log_batch(pair.run_id, metrics=metrics, tags=tags)
                pair.logged_at = pair.instances
            except Exception:  # noqa: BLE001 - the store may be down: retried next period
                log.warning("cannot log shadow figures of %s v%s to run %s", pair.model,
                            pair.challenger, pair.run_id, exc_info=True)

    def _run(self) -> None:
        import contextlib

        # Below the request path in the CPU's eyes (Linux: per-thread nice value).
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        period = self._options.shadow_log_seconds
        while not (self._stop.is_set() and self._queue.empty()):
            # Let requests accumulate, then score them in few calls: a wake-up per request
            # would cost the request path more (GIL hand-offs) than the scoring itself.
            if self._queue.items < MAX_ITEMS_PER_CALL:
                self._stop.wait(POLL_SECONDS)
            items = []
            while len(items) < MAX_ITEMS_PER_CALL:
                try:
                    items.append(self._queue.take_nowait())
                except queue.Empty:
                    break
            for group in self._groups(items):
                self._score(group)
            if time.monotonic() - self._last_log >= period:
                self._last_log = time.monotonic()
                self._log_safely()
        self._log_safely()

    def _log_safely(self) -> None:
        try:
            self.log_figures()
        except Exception:  # noqa: BLE001 - the scorer thread must outlive a logging fault
            log.warning("cannot log shadow figures", exc_info=True)

    def start(self) -> None:
        """Start the scoring thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        """Score what is queued, log the last figures to MLflow, stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def figures(self) -> list[dict[str, Any]]:
        """Every pair's running figures (for tests and status)."""
        return [{"model": p.model, "champion": p.champion, "challenger": p.challenger,
                 "measure": p.agreement.measure, "value": p.value, "instances": p.instances}
                for p in self._pairs.values()]
