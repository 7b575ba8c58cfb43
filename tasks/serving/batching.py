"""Adaptive micro-batching: concurrent requests for one model version, one model call.

Under load, batch-1 requests otherwise queue behind each other on the event loop, each
paying the model call's fixed cost (the ``tf.function`` dispatch, tensor conversions)
while nothing else runs. Here each served version has a *lane*: requests join its queue,
and whenever the model is idle the queued requests (up to ``max_batch_size`` instances,
same instance shape) are concatenated and run as one call in a model thread, while the
event loop goes on parsing and answering other requests (TensorFlow releases the GIL
while it computes). Requests that arrive while a
call runs form the next batch, so batches grow with the load and shrink to one request
when it is light; ``batch_timeout_micros`` (TF Serving's parameter, default 0) lets an
idle model wait a little for a batch to fill instead.

A lone request waits one event-loop turn (the requests whose bytes arrived in the same
turn join it) and, alone and small, runs inline on the event loop as without batching: a
thread hop would cost more than a small model call. Light load pays about 20 µs.

A failing batched call (one instance the model refuses, e.g. a bad WAV) is retried one
request at a time, so only the faulty request gets the error. Only models whose inputs
and outputs have a fully defined per-instance shape are batched (a model that pads or
varies its output width by batch would answer differently); others run as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tasks.serving.runtime_options import BatchingParameters, RuntimeOptions

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """The model's batching queue is full (HTTP 503: the client may retry)."""


def batchable(sig: Any) -> bool:
    """Whether every per-instance input and output shape of a signature is fully defined."""
    inputs = getattr(sig, "inputs", None) or ((sig.input_name, sig.input_shape,
                                               sig.input_dtype),)
    outputs = sig.outputs or ((sig.output_name, sig.output_shape, sig.output_dtype),)
    return all(d is not None for _, shape, _ in (*inputs, *outputs) for d in shape)


def _size(batch: Any) -> int:
    if isinstance(batch, dict):
        return len(next(iter(batch.values())))
    return len(batch)


def _form(batch: Any) -> Any:
    """What must be equal for two batches to be concatenated (dtype, instance shape)."""
    if isinstance(batch, dict):
        return tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(batch.items()))
    return batch.dtype.str, batch.shape[1:]


def _values(batch: Any) -> int:
    if isinstance(batch, dict):
        return sum(v.size for v in batch.values())
    return batch.size


def concat(batches: list[Any]) -> Any:
    """One batch of several (arrays, or dicts of arrays with the same keys)."""
    if isinstance(batches[0], dict):
        return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    return np.concatenate(batches)


def split(out: Any, sizes: list[int]) -> list[Any]:
    """The answers of a batched call cut back into per-request answers."""
    bounds = np.cumsum([0, *sizes]).tolist()
    cuts = list(zip(bounds[:-1], bounds[1:], strict=True))
    if isinstance(out, dict):
        return [{k: v[a:b] for k, v in out.items()} for a, b in cuts]
    return [out[a:b] for a, b in cuts]


@dataclass
class _Item:
    batch: Any
    size: int
    form: Any
    future: asyncio.Future


@dataclass
class _Lane:
    served: Any
    params: BatchingParameters
    items: deque[_Item] = field(default_factory=deque)
    queued: int = 0
    running: bool = False
    forming: bool = False  # a lone request is letting one event-loop turn pass
    timer: asyncio.TimerHandle | None = None


def _call(served: Any, batches: list[Any]) -> list[Any]:
    """In a model thread: one call for all, else one call each (results or exceptions)."""
    if len(batches) > 1:
        try:
            return split(served(concat(batches)), [_size(b) for b in batches])
        except Exception:  # noqa: BLE001 - find the faulty request: each runs alone
            log.debug("batched call of %s v%s failed; retrying one request at a time",
                      served.name, served.version)
    out: list[Any] = []
    for b in batches:
        try:
            out.append(served(b))
        except Exception as exc:  # noqa: BLE001 - handed to that request's handler
            out.append(exc)
    return out


class Batcher:
    """The lanes of every served version, fed from the event loop.

    Args:
        options: The batching parameters (global and per model).
        metrics: Told the requests and instances of every model call (or None).
        threads: Model threads (one call per lane at a time, so busy lanes run in
            parallel up to this many).

    """

    def __init__(self, options: RuntimeOptions, metrics: Any = None, threads: int = 4,
                 inline_max_values: int = 64 * 784) -> None:
        self._options = options
        self._inline_max_values = inline_max_values
        self._metrics = metrics
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="model")
        self._batchable: dict[tuple[str, str], bool] = {}

    def accepts(self, served: Any) -> bool:
        """Whether requests for ``served`` may be batched (parameters and signature)."""
        key = (served.name, served.version)
        ok = self._batchable.get(key)
        if ok is None:
            ok = self._batchable[key] = (
                self._options.batching_for(served.name).enabled and batchable(served.signature))
        return ok

    def _lane(self, served: Any) -> _Lane:
        key = (served.name, served.version)
        lane = self._lanes.get(key)
        if lane is None:  # (a version's lane lives as long as the server)
            lane = self._lanes[key] = _Lane(served, self._options.batching_for(served.name))
        return lane

    async def run(self, served: Any, batch: Any) -> Any:
        """The model's answer to ``batch``, computed in a batch with concurrent requests.

        Raises:
            QueueFull: More than ``max_enqueued_batches`` batches wait for this model.
            Exception: What the model raised for this request.

        """
        lane = self._lane(served)
        size = _size(batch)
        params = lane.params
        if lane.queued + size > params.max_enqueued_instances and lane.queued:
            raise QueueFull(f"model {served.name!r} has {lane.queued} instances queued "
                            f"(max_enqueued_batches={params.max_enqueued_batches} of "
                            f"max_batch_size={params.max_batch_size}); retry later")
        loop = asyncio.get_running_loop()
        item = _Item(batch, size, _form(batch), loop.create_future())
        lane.items.append(item)
        lane.queued += size
        if lane.running:
            return await item.future  # it joins the batch after the running one
        if lane.queued >= params.max_batch_size:
            self._dispatch(lane)  # a full batch goes now
        elif lane.forming or lane.timer is not None:
            pass  # it joins the batch being formed
        elif params.batch_timeout_micros:
            lane.timer = loop.call_later(params.batch_timeout_micros / 1e6, self._dispatch,
                                         lane)
        else:
            # The requests whose bytes arrived in the same event-loop turn are parsed while
            # this one lets the turn pass: they form the batch. Alone, it runs at once, as
            # without batching (no future, no thread).
            lane.forming = True
            try:
                await asyncio.sleep(0)
            except BaseException:  # cancelled: the others must not wait for it
                lane.forming = False
                item.future.cancel()
                self._dispatch(lane)
                raise
            lane.forming = False
            if (not lane.running and len(lane.items) == 1 and lane.items[0] is item
                    and _values(batch) <= self._inline_max_values):
                lane.items.popleft()
                lane.queued -= size
                try:
                    return lane.served(batch)
                finally:
                    if self._metrics is not None:
                        self._metrics.batch(lane.served.name, lane.served.version, 1, size)
            self._dispatch(lane)
        return await item.future

    def _dispatch(self, lane: _Lane) -> None:
        """Start one model call with the head of the queue (same-form requests, in order)."""
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
        while lane.items and lane.items[0].future.done():  # the client went away
            lane.queued -= lane.items.popleft().size
        if not lane.items or lane.running:
            return
        taken = [lane.items.popleft()]
        total, form = taken[0].size, taken[0].form
        while (lane.items and lane.items[0].form == form
               and total + lane.items[0].size <= lane.params.max_batch_size):
            item = lane.items.popleft()
            if item.future.done():
                lane.queued -= item.size
                continue
            taken.append(item)
            total += item.size
        lane.queued -= total
        if len(taken) == 1 and _values(taken[0].batch) <= self._inline_max_values:
            # One small request: a thread hop costs more than the model call.
            self._settle(taken, _call(lane.served, [taken[0].batch]))
            if self._metrics is not None:
                self._metrics.batch(lane.served.name, lane.served.version, 1, total)
            if lane.items:
                self._dispatch(lane)
            return
        lane.running = True
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(self._executor, _call, lane.served,
                                    [i.batch for i in taken])
        call.add_done_callback(lambda done: self._finish(lane, taken, total, done))

    def _finish(self, lane: _Lane, taken: list[_Item], total: int,
                done: asyncio.Future) -> None:
        lane.running = False
        try:
            results = done.result()
        except BaseException as exc:  # noqa: BLE001 - the executor itself failed
            results = [exc] * len(taken)
        self._settle(taken, results)
        if self._metrics is not None:
            self._metrics.batch(lane.served.name, lane.served.version, len(taken), total)
        if lane.items:
            self._dispatch(lane)

    @staticmethod
    def _settle(taken: list[_Item], results: list[Any]) -> None:
        for item, result in zip(taken, results, strict=True):
            if item.future.done():  # the client went away
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)

    def close(self) -> None:
        """Stop the model threads (calls in progress finish)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
