"""``predict_submit(..., loop=)``: requests queued from an event loop, completed by batch threads.

The gRPC and REST front doors queue small requests this way (``ServingService.predict_async``)
so no worker thread is parked per queued request; these tests pin the contract: exact rows
back, errors delivered, cancellation harmless, one loop wake-up per batch.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from servable.batching import BatchingParameters, BatchScheduler, wrap_servable
from servable.core.status import Code, ServingError
from tests.batching.helpers import AffineServable, request


@pytest.fixture
def scheduler():
    sched = BatchScheduler(1)
    yield sched
    sched.stop(timeout=5)


def test_64_requests_from_one_loop_get_their_rows_in_few_batches(scheduler: BatchScheduler) -> None:
    inner = AffineServable(delay=0.002)
    params = BatchingParameters(max_batch_size=64, batch_timeout_micros=2000, max_enqueued_batches=100)
    servable = wrap_servable(inner, params, scheduler)
    requests = [request(i, (1, 3, 5)[i % 3]) for i in range(64)]

    async def main() -> list:
        loop = asyncio.get_running_loop()
        futures = [servable.predict_submit("serving_default", r, loop=loop) for r in requests]
        assert all(isinstance(f, asyncio.Future) for f in futures)
        return await asyncio.gather(*futures)

    results = asyncio.run(main())
    for inputs, outputs in zip(requests, results):
        np.testing.assert_array_equal(outputs["y"], 2 * inputs["x"] + 1)
        np.testing.assert_array_equal(outputs["id"], inputs["id"])
    assert sum(inner.batch_sizes) == sum(len(r["id"]) for r in requests)
    # Nothing parks a thread per request, so one batch thread gathers many requests per call.
    assert len(inner.batch_sizes) < 20
    servable.close()


def test_model_error_reaches_every_awaiting_request(scheduler: BatchScheduler) -> None:
    class Failing(AffineServable):
        def predict(self, signature_key, inputs, output_filter=()):
            raise ServingError(Code.INVALID_ARGUMENT, "Expects arg[0] to be float but string is provided")

    servable = wrap_servable(Failing(), BatchingParameters(max_batch_size=8), scheduler)

    async def main() -> list:
        loop = asyncio.get_running_loop()
        futures = [servable.predict_submit("serving_default", request(i, 1), loop=loop) for i in range(3)]
        return await asyncio.gather(*futures, return_exceptions=True)

    errors = asyncio.run(main())
    assert all(isinstance(e, ServingError) and e.code == Code.INVALID_ARGUMENT for e in errors)
    servable.close()


def test_cancelled_request_stays_cancelled_and_others_complete(scheduler: BatchScheduler) -> None:
    gate = threading.Event()
    inner = AffineServable(gate=gate)
    servable = wrap_servable(inner, BatchingParameters(max_batch_size=8), scheduler)

    async def main() -> tuple:
        loop = asyncio.get_running_loop()
        first = servable.predict_submit("serving_default", request(1, 1), loop=loop)
        await asyncio.to_thread(inner.started.wait, 5)  # the batch thread is busy with `first`
        doomed = servable.predict_submit("serving_default", request(2, 1), loop=loop)
        kept = servable.predict_submit("serving_default", request(3, 2), loop=loop)
        doomed.cancel()  # a client deadline while queued
        gate.set()
        return await first, doomed, await kept

    first, doomed, kept = asyncio.run(main())
    assert doomed.cancelled()
    np.testing.assert_array_equal(first["id"], [1])
    np.testing.assert_array_equal(kept["id"], [3, 3])
    servable.close()


def test_full_queue_and_unbatchable_requests_are_decided_at_submission(scheduler: BatchScheduler) -> None:
    params = BatchingParameters(max_batch_size=2, max_enqueued_batches=1)
    servable = wrap_servable(AffineServable(), params, scheduler)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(ServingError) as oversized:
            servable.predict_submit("serving_default", request(1, 3), loop=loop)
        assert oversized.value.code == Code.INVALID_ARGUMENT
        assert servable.predict_submit("serving_default", {}, loop=loop) is None  # no inputs
        assert servable.predict_submit("serving_default", request(1, 0), loop=loop) is None  # zero rows
        assert servable.predict_submit("unknown", request(1, 1), loop=loop) is None

    asyncio.run(main())
    servable.close()
