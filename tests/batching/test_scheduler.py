"""BatchScheduler: readiness, fairness, capacity, splitting and stop() on plain tasks."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest

from servable.batching import BatchingParameters, BatchScheduler, Task
from servable.core.status import Code, ServingError
from tests.conftest import wait_until


@pytest.fixture
def scheduler():
    sched = BatchScheduler(1)
    yield sched
    sched.stop(timeout=5)


def _echo(order: list, gate: threading.Event | None = None, name: str = ""):
    def process(tasks: list[Task]) -> list:
        order.append((name, [t.payload for t in tasks]))
        if gate is not None:
            gate.wait(10)
        return [t.payload for t in tasks]

    return process


def test_results_go_back_to_their_futures(scheduler: BatchScheduler) -> None:
    order: list = []
    queue = scheduler.register_queue("q", BatchingParameters(max_batch_size=4, batch_timeout_micros=1000), _echo(order))
    futures = [queue.submit(i, 1) for i in range(10)]
    assert [f.result(5) for f in futures] == list(range(10))
    assert all(len(payloads) <= 4 for _, payloads in order)


def test_round_robin_between_queues(scheduler: BatchScheduler) -> None:
    order: list = []
    gate = threading.Event()
    params = BatchingParameters(max_batch_size=1, max_enqueued_batches=100)
    qa = scheduler.register_queue("a", params, _echo(order, gate, "a"))
    qb = scheduler.register_queue("b", params, _echo(order, gate, "b"))
    first = qa.submit(0, 1)
    wait_until(lambda: order, 5)
    futures = [qa.submit(i, 1) for i in range(1, 6)] + [qb.submit(i, 1) for i in range(1, 6)]
    gate.set()
    for f in [first, *futures]:
        f.result(5)
    names = [name for name, _ in order]
    assert names == ["a", "b", "a", "b", "a", "b", "a", "b", "a", "b", "a"]


def test_queue_full_is_unavailable(scheduler: BatchScheduler) -> None:
    order: list = []
    gate = threading.Event()
    params = BatchingParameters(max_batch_size=2, max_enqueued_batches=1, batch_timeout_micros=10_000_000)
    queue = scheduler.register_queue("q", params, _echo(order, gate))
    running = queue.submit("running", 1)
    wait_until(lambda: order, 5)
    waiting = [queue.submit("w1", 1), queue.submit("w2", 1)]
    with pytest.raises(ServingError) as info:
        queue.submit("rejected", 1)
    assert info.value.code == Code.UNAVAILABLE
    assert info.value.message.startswith("The batch scheduling queue to which this task was submitted is full")
    gate.set()
    assert running.result(5) == "running"
    assert [f.result(5) for f in waiting] == ["w1", "w2"]


def test_oversized_task_is_invalid_argument(scheduler: BatchScheduler) -> None:
    queue = scheduler.register_queue("q", BatchingParameters(max_batch_size=4), _echo([]))
    with pytest.raises(ServingError) as info:
        queue.submit("big", 5)
    assert info.value == ServingError(Code.INVALID_ARGUMENT, "Task size 5 is larger than maximum input batch size 4")


def test_split_pieces_fill_the_open_batch_then_full_batches(scheduler: BatchScheduler) -> None:
    order: list = []
    gate = threading.Event()
    params = BatchingParameters(
        max_batch_size=10,
        max_execution_batch_size=4,
        enable_large_batch_splitting=True,
        batch_timeout_micros=10_000_000,
        max_enqueued_batches=10,
    )
    queue = scheduler.register_queue(
        "q",
        params,
        _echo(order, gate),
        split=lambda payload, sizes: [(payload, s) for s in sizes],
        join=lambda results: results,
    )
    blocker = queue.submit(("blocker", 1), 1)
    wait_until(lambda: order, 5)
    small = queue.submit(("small", 1), 1)
    big = queue.submit(("big", 9), 9)
    gate.set()
    assert blocker.result(5) == ("blocker", 1)
    assert small.result(5) == ("small", 1)
    # 9 rows after 1 queued row: 3 fill the open batch, then 4, then 2.
    assert big.result(5) == [(("big", 9), 3), (("big", 9), 4), (("big", 9), 2)]
    assert [[p for p in payloads] for _, payloads in order[1:]] == [
        [("small", 1), (("big", 9), 3)],
        [(("big", 9), 4)],
        [(("big", 9), 2)],
    ]


def test_splitting_needs_split_and_join(scheduler: BatchScheduler) -> None:
    params = BatchingParameters(max_batch_size=8, enable_large_batch_splitting=True)
    with pytest.raises(ServingError):
        scheduler.register_queue("q", params, _echo([]))


def test_tasks_with_different_keys_never_share_a_batch(scheduler: BatchScheduler) -> None:
    order: list = []
    gate = threading.Event()
    params = BatchingParameters(max_batch_size=8, batch_timeout_micros=10_000_000)
    queue = scheduler.register_queue("q", params, _echo(order, gate))
    blocker = queue.submit("blocker", 1, key="k1")
    wait_until(lambda: order, 5)
    futures = [queue.submit(f"{key}-{i}", 1, key=key) for i in range(3) for key in ("k1", "k2")]
    gate.set()
    for f in [blocker, *futures]:
        f.result(5)
    batches = [payloads for _, payloads in order[1:]]
    assert batches == [["k1-0", "k1-1", "k1-2"], ["k2-0", "k2-1", "k2-2"]]


def test_batch_error_fails_every_task(scheduler: BatchScheduler) -> None:
    def boom(tasks: list[Task]) -> list:
        raise ServingError(Code.INTERNAL, "model exploded")

    queue = scheduler.register_queue("q", BatchingParameters(max_batch_size=4), boom)
    futures = [queue.submit(i, 1) for i in range(3)]
    for f in futures:
        with pytest.raises(ServingError, match="model exploded"):
            f.result(5)


def test_per_task_errors(scheduler: BatchScheduler) -> None:
    def half(tasks: list[Task]) -> list:
        return [ValueError("odd") if t.payload % 2 else t.payload for t in tasks]

    queue = scheduler.register_queue("q", BatchingParameters(max_batch_size=4), half)
    assert queue.submit(2, 1).result(5) == 2
    with pytest.raises(ValueError):
        queue.submit(3, 1).result(5)


def test_lone_task_does_not_wait_out_the_window(scheduler: BatchScheduler) -> None:
    queue = scheduler.register_queue("q", BatchingParameters(max_batch_size=8, batch_timeout_micros=500_000), _echo([]))
    for _ in range(3):
        start = time.monotonic()
        queue.submit("lone", 1).result(5)
        assert time.monotonic() - start < 0.25


def test_the_wait_for_a_running_batch_is_not_an_arrival_gap(scheduler: BatchScheduler) -> None:
    """A closed-loop client's next task follows the batch it waited for; that gap must not
    lengthen the quiet spell every later batch waits out."""
    order: list = []
    gates = [threading.Event(), threading.Event()]

    def process(tasks: list[Task]) -> list:
        order.append([t.payload for t in tasks])
        gates[min(len(order), 2) - 1].wait(10)
        return [t.payload for t in tasks]

    queue = scheduler.register_queue("q", BatchingParameters(max_batch_size=8, batch_timeout_micros=2_000_000), process)
    first = queue.submit("first", 1)  # idle queue: runs at once
    wait_until(lambda: order, 5)
    forming = [queue.submit("a", 1), queue.submit("b", 1)]  # back to back: a tiny gap
    time.sleep(0.1)  # the running batch takes a while
    gates[0].set()
    wait_until(lambda: len(order) == 2, 5)  # ["a", "b"] runs once quiet
    late = queue.submit("after the wait", 1)  # lands on an empty queue, 100 ms after "b"
    gates[1].set()
    assert [f.result(5) for f in [first, *forming, late]] == ["first", "a", "b", "after the wait"]
    assert queue._gap_ewma is not None and queue._gap_ewma < 0.01  # counted, it would be >= 20 ms


def test_without_eager_dispatch_the_window_is_waited() -> None:
    sched = BatchScheduler(1, eager_when_idle=False)
    try:
        queue = sched.register_queue("q", BatchingParameters(max_batch_size=8, batch_timeout_micros=100_000), _echo([]))
        start = time.monotonic()
        queue.submit("lone", 1).result(5)
        assert time.monotonic() - start >= 0.09
    finally:
        sched.stop(5)


def test_full_batch_runs_before_timeout() -> None:
    sched = BatchScheduler(1, eager_when_idle=False)
    try:
        order: list = []
        params = BatchingParameters(max_batch_size=3, batch_timeout_micros=10_000_000)
        queue = sched.register_queue("q", params, _echo(order))
        start = time.monotonic()
        futures = [queue.submit(i, 1) for i in range(3)]
        assert [f.result(5) for f in futures] == [0, 1, 2]
        assert time.monotonic() - start < 5
        assert order == [("", [0, 1, 2])]
    finally:
        sched.stop(5)


def test_stop_drains_queued_tasks() -> None:
    sched = BatchScheduler(2, eager_when_idle=False)
    queue = sched.register_queue("q", BatchingParameters(max_batch_size=8, batch_timeout_micros=60_000_000), _echo([]))
    futures = [queue.submit(i, 1) for i in range(5)]
    start = time.monotonic()
    sched.stop(timeout=5)
    assert time.monotonic() - start < 5
    assert [f.result(0) for f in futures] == list(range(5))
    with pytest.raises(ServingError) as info:
        queue.submit(9, 1)
    assert info.value.code == Code.UNAVAILABLE


def test_stop_never_hangs_on_a_stuck_batch() -> None:
    sched = BatchScheduler(1)
    gate = threading.Event()
    order: list = []
    queue = sched.register_queue("q", BatchingParameters(max_batch_size=1, max_enqueued_batches=10), _echo(order, gate))
    futures = [queue.submit(i, 1) for i in range(4)]
    wait_until(lambda: order, 5)
    start = time.monotonic()
    sched.stop(timeout=0.3)
    assert time.monotonic() - start < 3
    for f in futures:
        assert f.done()
        with pytest.raises(ServingError) as info:
            f.result(0)
        assert info.value.code == Code.UNAVAILABLE
    gate.set()


def test_unregister_flushes_and_removes_queue(scheduler: BatchScheduler) -> None:
    order: list = []
    gate = threading.Event()
    params = BatchingParameters(max_batch_size=8, batch_timeout_micros=60_000_000)
    queue = scheduler.register_queue("q", params, _echo(order, gate))
    first = queue.submit("first", 1)
    wait_until(lambda: order, 5)
    pending = queue.submit("pending", 1)
    closer: Future = Future()
    threading.Thread(target=lambda: closer.set_result(queue.close(timeout=5))).start()
    gate.set()
    assert closer.result(5) is True
    assert first.result(5) == "first" and pending.result(5) == "pending"
    with pytest.raises(ServingError) as info:
        queue.submit("late", 1)
    assert info.value.code == Code.UNAVAILABLE
