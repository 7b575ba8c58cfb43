"""The micro-batcher on a real event loop and real model threads.

The "model" is a plain NumPy function with a per-instance answer (so a wrong split shows),
which records every call it gets; the server-level test (test_observability.py) runs the
same code in front of a real Keras model.
"""

import asyncio
import threading
from dataclasses import dataclass, field

import numpy as np
import pytest

from tasks.serving.batching import Batcher, QueueFull, batchable, concat, split
from tasks.serving.runtime_options import BatchingParameters, RuntimeOptions
from tasks.serving.signature import Signature

SIG = Signature("x", (3,), "float32", "y", (1,), "float32")


@dataclass
class Model:
    """Sums each instance; refuses instances holding a negative value (as a model may)."""

    name: str = "m"
    version: str = "1"
    signature: Signature = SIG
    calls: list = field(default_factory=list)
    threads: set = field(default_factory=set)
    delay: float = 0.0

    def __call__(self, batch):
        self.calls.append(len(batch))
        self.threads.add(threading.current_thread().name)
        if self.delay:
            import time

            time.sleep(self.delay)
        if (batch < 0).any():
            raise ValueError("negative input")
        return batch.sum(axis=1, keepdims=True)


def options(**kw):
    return RuntimeOptions(batching=BatchingParameters(**kw))


def rows(i, n=1):
    return np.full((n, 3), float(i), dtype=np.float32)


def test_concurrent_requests_share_one_call_and_get_their_own_answers():
    model = Model()

    async def main():
        batcher = Batcher(options(max_batch_size=64))
        try:
            return await asyncio.gather(*(batcher.run(model, rows(i, 1 + i % 3))
                                          for i in range(20)))
        finally:
            batcher.close()

    answers = asyncio.run(main())
    for i, out in enumerate(answers):
        np.testing.assert_array_equal(out, np.full((1 + i % 3, 1), 3.0 * i))
    assert model.calls == [sum(1 + i % 3 for i in range(20))]  # one call for all 40
    assert all(t.startswith("model") for t in model.threads)  # off the event loop


def test_max_batch_size_splits_the_queue_into_calls():
    model = Model(delay=0.01)

    async def main():
        batcher = Batcher(options(max_batch_size=8))
        try:
            return await asyncio.gather(*(batcher.run(model, rows(i, 3)) for i in range(6)))
        finally:
            batcher.close()

    answers = asyncio.run(main())
    assert [len(a) for a in answers] == [3] * 6
    assert model.calls == [6, 6, 6]  # two requests of 3 per call, never more than 8


def test_a_lone_request_runs_inline_without_a_thread_hop():
    model = Model()

    async def main():
        batcher = Batcher(options())
        try:
            return await batcher.run(model, rows(2, 2))
        finally:
            batcher.close()

    np.testing.assert_array_equal(asyncio.run(main()), [[6.0], [6.0]])
    assert model.calls == [2] and model.threads == {"MainThread"}


def test_a_faulty_instance_fails_only_its_own_request():
    model = Model()

    async def main():
        batcher = Batcher(options())
        try:
            return await asyncio.gather(batcher.run(model, rows(1)), batcher.run(model, rows(-1)),
                                        batcher.run(model, rows(2)), return_exceptions=True)
        finally:
            batcher.close()

    good1, bad, good2 = asyncio.run(main())
    assert isinstance(bad, ValueError) and "negative" in str(bad)
    np.testing.assert_array_equal(good1, [[3.0]])
    np.testing.assert_array_equal(good2, [[6.0]])
    assert model.calls == [3, 1, 1, 1]  # the batch, then each request alone


def test_different_instance_shapes_are_not_merged():
    model = Model(signature=Signature("x", (None,), "float32", "y", (1,), "float32"))

    async def main():
        batcher = Batcher(options())
        try:
            return await asyncio.gather(batcher.run(model, np.ones((1, 3), np.float32)),
                                        batcher.run(model, np.ones((1, 5), np.float32)),
                                        batcher.run(model, np.ones((1, 5), np.float32)))
        finally:
            batcher.close()

    a, b, c = asyncio.run(main())
    assert (a[0, 0], b[0, 0], c[0, 0]) == (3.0, 5.0, 5.0)
    assert model.calls == [1, 2]


def test_a_full_queue_answers_at_once_instead_of_waiting():
    model = Model(delay=0.05)

    async def main():
        batcher = Batcher(options(max_batch_size=2, max_enqueued_batches=1))
        try:
            return await asyncio.gather(*(batcher.run(model, rows(i)) for i in range(6)),
                                        return_exceptions=True)
        finally:
            batcher.close()

    out = asyncio.run(main())
    # 0 and 1 fill a batch and run; 2 and 3 fill the queue; 4 and 5 are refused at once.
    assert [type(o).__name__ for o in out] == ["ndarray"] * 4 + ["QueueFull"] * 2
    assert isinstance(out[4], QueueFull) and "max_enqueued_batches=1" in str(out[4])
    assert model.calls == [2, 2]


def test_batch_timeout_waits_for_requests_arriving_later():
    model = Model()

    async def main():
        batcher = Batcher(options(batch_timeout_micros=200_000))
        try:
            first = asyncio.ensure_future(batcher.run(model, rows(1)))
            await asyncio.sleep(0.05)  # arrives later, within the timeout
            second = await batcher.run(model, rows(2))
            return await first, second
        finally:
            batcher.close()

    asyncio.run(main())
    assert model.calls == [2]


def test_only_models_with_defined_instance_shapes_are_batched():
    assert batchable(SIG)
    assert not batchable(Signature("x", (None,), "int32", "y", (1,), "float32"))
    assert not batchable(Signature("t", (), "string", "next", (5,), "string",
                                   outputs=(("next", (5,), "string"), ("ids", (None,), "int32"))))
    batcher = Batcher(RuntimeOptions(batching_per_model={"m": BatchingParameters(enabled=False)}))
    assert not batcher.accepts(Model()) and batcher.accepts(Model(name="other"))
    batcher.close()


def test_concat_and_split_keep_named_outputs_per_request():
    joined = concat([{"a": np.ones((2, 2))}, {"a": np.zeros((1, 2))}])
    assert joined["a"].shape == (3, 2)
    parts = split({"p": np.arange(3), "t": ["x", "y", "z"]}, [2, 1])
    assert parts[1]["t"] == ["z"] and parts[0]["p"].tolist() == [0, 1]


@pytest.mark.parametrize("value", ["0", "-1", "x"])
def test_bad_batching_variables_are_named(monkeypatch, value):
    from tasks.serving.options import OptionError

    monkeypatch.setenv("MLP_SERVE_MAX_BATCH_SIZE", value)
    with pytest.raises(OptionError, match="MLP_SERVE_MAX_BATCH_SIZE"):
        RuntimeOptions.from_env()
