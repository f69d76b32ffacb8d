"""BatchingServable over plain numpy servables: merge, pad, split, errors, lifecycle."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from servable.batching import BatchingParameters, BatchScheduler, wrap_servable
from servable.core.status import Code, ServingError
from servable.serving.model import ModelServable
from tests.batching.helpers import AffineServable, request
from tests.conftest import wait_until


@pytest.fixture
def scheduler():
    sched = BatchScheduler(2)
    yield sched
    sched.stop(timeout=5)


def _check(outputs: dict[str, np.ndarray], inputs: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(outputs["y"], 2 * inputs["x"] + 1)
    np.testing.assert_array_equal(outputs["id"], inputs["id"])


def test_protocol_and_delegation(scheduler: BatchScheduler) -> None:
    inner = AffineServable()
    servable = wrap_servable(inner, BatchingParameters(max_batch_size=8), scheduler)
    assert isinstance(servable, ModelServable)
    assert servable.signatures is inner.signatures
    assert servable.signature_defs() == {"serving_default": b"", "other": b""}
    assert servable.regress("serving_default", [b"a", b"b"]).tolist() == [7.0, 7.0]
    assert servable.classify("serving_default", [b"a"])[1].shape == (1, 1)
    assert servable.batch_sizes is inner.batch_sizes  # other attributes read through
    servable.close()


def test_64_concurrent_requests_get_exactly_their_rows(scheduler: BatchScheduler) -> None:
    inner = AffineServable(delay=0.002)
    params = BatchingParameters(max_batch_size=16, batch_timeout_micros=2000, max_enqueued_batches=100)
    servable = wrap_servable(inner, params, scheduler)
    requests = [request(i, (1, 3, 5)[i % 3]) for i in range(64)]
    barrier = threading.Barrier(64)

    def call(inputs):
        barrier.wait(10)
        return servable.predict("serving_default", inputs)

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(call, requests))
    for inputs, outputs in zip(requests, results):
        _check(outputs, inputs)
    assert sum(inner.batch_sizes) == sum(len(r["id"]) for r in requests)
    assert max(inner.batch_sizes) <= 16
    assert max(inner.batch_sizes) > 5  # requests were merged
    stats = servable.stats()
    assert stats.tasks == 64 and stats.rows == sum(inner.batch_sizes) and stats.batches == len(inner.batch_sizes)
    servable.close()


def test_padding_to_allowed_batch_size(scheduler: BatchScheduler) -> None:
    inner = AffineServable()
    calls: list = []
    params = BatchingParameters(max_batch_size=8, allowed_batch_sizes=(2, 4, 8))
    servable = wrap_servable(
        inner, params, scheduler, model_name="m", version=3, on_batch=lambda *args: calls.append(args)
    )
    inputs = request(7, 3)
    outputs = servable.predict("serving_default", inputs)
    _check(outputs, inputs)
    assert outputs["y"].shape == (3, 2)
    assert inner.batch_sizes == [4]
    np.testing.assert_array_equal(inner.seen_inputs[0]["x"][3], inputs["x"][0])  # padding repeats a real row
    (queue_id, batch_size, padded_size, queue_seconds), = calls
    assert (queue_id.model_name, queue_id.version, queue_id.signature) == ("m", 3, "serving_default")
    assert (batch_size, padded_size) == (3, 4)
    assert 0 <= queue_seconds < 5
    assert servable.stats().padded_rows == 4
    servable.close()


def test_large_request_split_and_reassembled(scheduler: BatchScheduler) -> None:
    inner = AffineServable()
    params = BatchingParameters(
        max_batch_size=10, max_execution_batch_size=4, enable_large_batch_splitting=True, max_enqueued_batches=10
    )
    servable = wrap_servable(inner, params, scheduler)
    inputs = request(1, 10)
    outputs = servable.predict("serving_default", inputs)
    _check(outputs, inputs)
    assert sorted(inner.batch_sizes) == [2, 4, 4]
    with pytest.raises(ServingError) as info:
        servable.predict("serving_default", request(2, 11))
    assert info.value == ServingError(Code.INVALID_ARGUMENT, "Task size 11 is larger than maximum input batch size 10")
    servable.close()


def test_oversized_request_without_splitting(scheduler: BatchScheduler) -> None:
    servable = wrap_servable(AffineServable(), BatchingParameters(max_batch_size=4), scheduler)
    with pytest.raises(ServingError) as info:
        servable.predict("serving_default", request(1, 5))
    assert info.value == ServingError(Code.INVALID_ARGUMENT, "Task size 5 is larger than maximum input batch size 4")
    servable.close()


def test_queue_full_is_unavailable() -> None:
    sched = BatchScheduler(1)
    gate = threading.Event()
    inner = AffineServable(gate=gate)
    params = BatchingParameters(max_batch_size=2, max_enqueued_batches=1, batch_timeout_micros=10_000_000)
    servable = wrap_servable(inner, params, sched)
    try:
        with ThreadPoolExecutor(3) as pool:
            # Through submit: a lone predict() would run on its own thread, not the batch thread.
            running = servable.predict_submit("serving_default", request(0, 1))
            wait_until(inner.started.is_set, 5)
            waiting = [pool.submit(servable.predict, "serving_default", request(i, 1)) for i in (1, 2)]
            queue = servable._queues["serving_default"]
            wait_until(lambda: queue.num_enqueued_tasks == 2, 5)
            with pytest.raises(ServingError) as info:
                servable.predict("serving_default", request(3, 1))
            assert info.value.code == Code.UNAVAILABLE
            assert info.value.message.startswith(
                "The batch scheduling queue to which this task was submitted is full"
            )
            gate.set()
            _check(running.result(5), request(0, 1))
            for i, future in zip((1, 2), waiting):
                _check(future.result(5), request(i, 1))
    finally:
        gate.set()
        servable.close()
        sched.stop(5)


def test_inputs_must_share_dim0_and_have_one(scheduler: BatchScheduler) -> None:
    servable = wrap_servable(AffineServable(), BatchingParameters(max_batch_size=8), scheduler)
    bad = {"x": np.zeros((2, 2), np.float32), "id": np.zeros(3, np.int64)}
    with pytest.raises(ServingError) as info:
        servable.predict("serving_default", bad)
    assert info.value == ServingError(
        Code.INVALID_ARGUMENT, "Batching Run() input tensors must have equal 0th-dimension size"
    )
    with pytest.raises(ServingError) as info:
        servable.predict("serving_default", {"x": np.float32(1.0)})
    assert info.value == ServingError(
        Code.INVALID_ARGUMENT, "Batching Run() input tensors must have at least one dimension"
    )
    servable.close()


class _FixedOutput(AffineServable):
    def predict(self, signature_key, inputs, output_filter=()):
        return {"y": np.zeros((1, 2), np.float32)}


class _ScalarOutput(AffineServable):
    def predict(self, signature_key, inputs, output_filter=()):
        return {"y": np.float32(0.0)}


def test_outputs_without_the_batch_dimension_fail(scheduler: BatchScheduler) -> None:
    servable = wrap_servable(_FixedOutput(), BatchingParameters(max_batch_size=8), scheduler)
    with pytest.raises(ServingError) as info:
        servable.predict("serving_default", request(1, 3))
    assert info.value.code == Code.FAILED_PRECONDITION
    assert "0th dimension does not equal the sum" in info.value.message
    scalar = wrap_servable(_ScalarOutput(), BatchingParameters(max_batch_size=8), scheduler)
    with pytest.raises(ServingError) as info:
        scalar.predict("serving_default", request(1, 3))
    assert info.value == ServingError(Code.FAILED_PRECONDITION, "Batched output tensor has 0 dimensions")
    servable.close()
    scalar.close()


def test_model_errors_reach_every_caller(scheduler: BatchScheduler) -> None:
    class Failing(AffineServable):
        def predict(self, signature_key, inputs, output_filter=()):
            raise ServingError(Code.INVALID_ARGUMENT, "Expects arg[0] to be float but string is provided")

    servable = wrap_servable(Failing(), BatchingParameters(max_batch_size=8), scheduler)
    with pytest.raises(ServingError, match="Expects arg"):
        servable.predict("serving_default", request(1, 2))
    servable.close()


def _blocked_then(servable, inner, gate, late_requests):
    """Occupy the only batch thread, queue ``late_requests``, release; return their results."""
    with ThreadPoolExecutor(1 + len(late_requests)) as pool:
        # Through submit: a lone predict() would run on its own thread, not the batch thread.
        first = servable.predict_submit("serving_default", request(99, 1))
        wait_until(inner.started.is_set, 5)
        futures = [pool.submit(servable.predict, "serving_default", *args) for args in late_requests]
        queue = servable._queues["serving_default"]
        wait_until(lambda: queue.num_enqueued_tasks == len(late_requests), 5)
        gate.set()
        first.result(5)
        return [f.result(5) for f in futures]


def test_different_widths_run_in_separate_batches() -> None:
    sched = BatchScheduler(1)
    gate = threading.Event()
    inner = AffineServable(gate=gate)
    servable = wrap_servable(inner, BatchingParameters(max_batch_size=8, batch_timeout_micros=50_000), sched)
    try:
        a, b = request(1, 2, width=2), request(2, 1, width=3)
        out_a, out_b = _blocked_then(servable, inner, gate, [(a,), (b,)])
        _check(out_a, a)
        _check(out_b, b)
        assert sorted(inner.batch_sizes[1:]) == [1, 2]
    finally:
        gate.set()
        servable.close()
        sched.stop(5)


def test_pad_variable_length_inputs_merges_widths() -> None:
    sched = BatchScheduler(1)
    gate = threading.Event()
    inner = AffineServable(gate=gate)
    params = BatchingParameters(max_batch_size=8, batch_timeout_micros=50_000, pad_variable_length_inputs=True)
    servable = wrap_servable(inner, params, sched)
    try:
        a, b = request(1, 2, width=2), request(2, 1, width=3)
        out_a, out_b = _blocked_then(servable, inner, gate, [(a,), (b,)])
        assert inner.batch_sizes[1:] == [3]
        assert inner.seen_inputs[1]["x"].shape == (3, 3)
        assert out_a["y"].shape == (2, 3) and out_b["y"].shape == (1, 3)
        np.testing.assert_array_equal(out_a["y"][:, :2], 2 * a["x"] + 1)
        np.testing.assert_array_equal(out_a["y"][:, 2], 2 * a["x"][0, 0] + 1)  # padded with the first element
        _check(out_b, b)
    finally:
        gate.set()
        servable.close()
        sched.stop(5)


def test_output_filter_is_part_of_the_merge_key() -> None:
    sched = BatchScheduler(1)
    gate = threading.Event()
    inner = AffineServable(gate=gate)
    servable = wrap_servable(inner, BatchingParameters(max_batch_size=8, batch_timeout_micros=50_000), sched)
    try:
        a, b, c = request(1, 1), request(2, 1), request(3, 1)
        out_a, out_b, out_c = _blocked_then(servable, inner, gate, [(a, ("y",)), (b,), (c, ("y",))])
        assert set(out_a) == {"y"} and set(out_c) == {"y"} and set(out_b) == {"y", "id"}
        _check(out_b, b)
        np.testing.assert_array_equal(out_c["y"], 2 * c["x"] + 1)
        assert sorted(inner.batch_sizes[1:]) == [1, 2]
    finally:
        gate.set()
        servable.close()
        sched.stop(5)


def test_lone_request_runs_on_its_own_thread_and_others_batch_behind_it() -> None:
    """An idle queue runs a predict() at once on the caller's thread; arrivals meanwhile
    form the next batch on the batch thread."""
    sched = BatchScheduler(1)
    gate = threading.Event()
    inner = AffineServable(gate=gate)
    # A window far longer than the test: the late pair runs only once the first is done.
    servable = wrap_servable(inner, BatchingParameters(max_batch_size=8, batch_timeout_micros=10_000_000), sched)
    threads: list[str] = []
    original = inner.predict

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return original(*args, **kwargs)

    inner.predict = recording
    try:
        with ThreadPoolExecutor(3, thread_name_prefix="caller") as pool:
            first = pool.submit(servable.predict, "serving_default", request(0, 1))
            wait_until(inner.started.is_set, 5)
            late = [pool.submit(servable.predict, "serving_default", request(i, 1)) for i in (1, 2)]
            queue = servable._queues["serving_default"]
            wait_until(lambda: queue.num_enqueued_tasks == 2, 5)
            gate.set()
            _check(first.result(5), request(0, 1))
            for i, future in zip((1, 2), late):
                _check(future.result(5), request(i, 1))
        assert threads[0].startswith("caller")
        assert inner.batch_sizes == [1, 2] and not threads[1].startswith("caller")
        assert servable.stats().batches == 2 and servable.stats().tasks == 3
    finally:
        gate.set()
        servable.close()
        sched.stop(5)


def test_lone_request_does_not_wait_out_the_window(scheduler: BatchScheduler) -> None:
    params = BatchingParameters(max_batch_size=32, batch_timeout_micros=500_000)
    servable = wrap_servable(AffineServable(), params, scheduler)
    for i in range(3):
        start = time.monotonic()
        _check(servable.predict("serving_default", request(i, 2)), request(i, 2))
        assert time.monotonic() - start < 0.25
    servable.close()


def test_unbatchable_calls_go_straight_through(scheduler: BatchScheduler) -> None:
    inner = AffineServable()
    servable = wrap_servable(inner, BatchingParameters(max_batch_size=2), scheduler)
    empty = {"x": np.zeros((0, 2), np.float32), "id": np.zeros(0, np.int64)}
    assert servable.predict("serving_default", empty)["y"].shape == (0, 2)
    servable.close()
    # After close the queues are gone: calls run unbatched on the wrapped servable.
    _check(servable.predict("serving_default", request(1, 3)), request(1, 3))
    assert inner.batch_sizes == [0, 3]


def test_two_signatures_use_two_queues(scheduler: BatchScheduler) -> None:
    inner = AffineServable()
    servable = wrap_servable(inner, BatchingParameters(max_batch_size=8), scheduler)
    for key in ("serving_default", "other"):
        _check(servable.predict(key, request(1, 2)), request(1, 2))
    assert set(servable._queues) == {"serving_default", "other"}
    servable.close()
