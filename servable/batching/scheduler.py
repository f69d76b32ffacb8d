"""One shared batch scheduler: a pool of batch threads serving many queues fairly.

This is TF Serving's ``SharedBatchScheduler`` in Python. Every batching wrapper (one per
loaded model version) registers one queue per signature; the ``num_batch_threads`` batch
threads take ready batches from the non-empty queues round-robin, so one busy model
cannot starve another.

Contracts:
- ``BatchQueue.submit`` is called from request worker threads or an event loop (it
  never blocks: one short lock); it validates and enqueues at once, raising
  ``ServingError`` synchronously for an oversized task (INVALID_ARGUMENT) or a
  full/closed queue (UNAVAILABLE), and returns a ``concurrent.futures.Future`` the
  caller blocks on, or, given ``loop=``, an ``asyncio.Future`` of that loop: the batch
  thread then completes every loop future of a batch with one wake-up of the loop.
- The queue's ``process`` callback runs on a batch thread with the tasks of one batch
  (all sharing one merge ``key``, at most ``execution_batch_size`` rows together) and
  returns one result per task; an entry that is an exception fails that task only, a
  raised exception fails the whole batch.
- A task with a different ``key`` never shares a batch; tasks of one key are batched in
  arrival order.

When a batch is ready (TF Serving's rules first):
- the queue is closing or the scheduler is stopping (drain), or ``batch_timeout_micros``
  is 0, or the queue holds ``execution_batch_size`` rows, or its oldest task has waited
  ``batch_timeout_micros``;
- "eager when idle" (servable's addition, on by default): a free batch thread does not
  sit out the window when waiting cannot help: (a) the queue holds one lone task and no
  batch of this queue is running (an idle model: dispatch at once); (b) no task arrived
  for a quiet period of twice the queue's smoothed inter-arrival gap (clamped to
  [100 us, timeout]), i.e. the queue has stopped growing. Only gaps between tasks that
  joined a non-empty queue are smoothed: the gap before the first task of a batch spans
  the previous batch's run, not the arrival rate. Under load the threads are
  busy, tasks accumulate, and batches fill as in TF Serving.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from concurrent.futures import Future, InvalidStateError
from typing import Any, Callable, Hashable, Sequence

from servable.batching.parameters import DEFAULT_THREAD_POOL_NAME, BatchingParameters
from servable.core.status import ServingError, internal, invalid_argument, unavailable

_QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"
_EWMA_WEIGHT = 0.2
_MIN_QUIET_S = 100e-6


class Task:
    """One request (or one piece of a split request) waiting in a queue."""

    __slots__ = ("payload", "size", "key", "future", "enqueue_time")

    def __init__(self, payload: Any, size: int, key: Hashable, future: Future, enqueue_time: float) -> None:
        self.payload = payload
        self.size = size
        self.key = key
        self.future = future
        self.enqueue_time = enqueue_time  # time.monotonic()


ProcessBatch = Callable[[list[Task]], Sequence[Any]]
SplitPayload = Callable[[Any, list[int]], list[Any]]
JoinResults = Callable[[list[Any]], Any]


class LoopCompletion:
    """Completes an ``asyncio.Future`` from a batch thread (duck-types the Future API used here).

    Why: a ``concurrent.futures.Future`` costs a Condition per request and
    ``asyncio.wrap_future`` one self-pipe write per request; the batch thread instead
    completes all of a batch's loop futures in one ``call_soon_threadsafe`` (see
    ``_complete_on_loops``).
    """

    __slots__ = ("loop", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future = loop.create_future()

    def set_result(self, result: Any) -> None:
        self.loop.call_soon_threadsafe(_settle_all, [(self.future, result, None)])

    def set_exception(self, error: BaseException) -> None:
        self.loop.call_soon_threadsafe(_settle_all, [(self.future, None, error)])

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:  # pragma: no cover - not used on pieces
        raise TypeError("LoopCompletion is only used for whole tasks")


def _settle_all(items: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
    """On the loop: complete futures that are still pending (a cancelled one stays cancelled)."""
    for future, result, error in items:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _complete_on_loops(outcomes: list[tuple[Any, Any, BaseException | None]]) -> None:
    """Complete each task's future; loop futures are grouped into one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any, BaseException | None]]] = {}
    for future, result, error in outcomes:
        if isinstance(future, LoopCompletion):
            by_loop.setdefault(future.loop, []).append((future.future, result, error))
        else:
            _resolve(future, result, error)
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_all, items)
        except RuntimeError:  # loop closed (server gone): nobody waits any more
            pass


def _resolve(future: Any, result: Any = None, error: BaseException | None = None) -> None:
    """Complete ``future`` unless it already is (cancelled, or failed by stop())."""
    if isinstance(future, LoopCompletion):
        try:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
        except RuntimeError:  # loop closed
            pass
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


class BatchQueue:
    """A registered queue (one per model version and signature). Thread-safe.

    Created by ``BatchScheduler.register_queue``; closed by ``close()`` (the wrapper's
    ``close()``), which flushes what is queued and removes the queue.
    """

    def __init__(
        self,
        scheduler: "BatchScheduler",
        name: str,
        params: BatchingParameters,
        process: ProcessBatch,
        split: SplitPayload | None,
        join: JoinResults | None,
    ) -> None:
        self.name = name
        self.params = params
        self._scheduler = scheduler
        self._process = process
        self._split = split
        self._join = join
        self._timeout = params.batch_timeout_micros / 1e6
        self._max_rows = params.execution_batch_size
        self._tasks: collections.deque[Task] = collections.deque()
        self._rows = 0
        self._last_arrival: float | None = None
        self._gap_ewma: float | None = None
        self._in_flight = 0
        self._closed = False

    def submit(
        self, payload: Any, size: int, key: Hashable = None, *, loop: asyncio.AbstractEventLoop | None = None
    ) -> Any:
        """Enqueue a task of ``size`` rows; see the module contract.

        Returns a ``concurrent.futures.Future``, or an ``asyncio.Future`` of ``loop``
        (to be awaited on that loop) when ``loop`` is given.
        """
        completion = LoopCompletion(loop) if loop is not None else Future()
        self._scheduler._submit(self, payload, size, key, completion)
        return completion.future if loop is not None else completion

    def try_run_here(self, payload: Any, size: int, key: Hashable = None) -> tuple[bool, Any]:
        """Process a task at once on the calling thread when this queue is idle.

        Called by a request thread, never an event loop (the model runs here). When the
        scheduler is eager when idle, nothing is queued and no batch of this queue runs,
        the task is processed as a batch of its own in an idle batch thread's slot (so
        ``num_batch_threads`` still bounds the batches running at once), as a batch
        thread would process it,
        and ``(True, result)`` is returned (the processor's exception propagates); tasks
        arriving meanwhile queue up and form the next batch. Otherwise ``(False, None)``:
        ``submit()`` it. Why: a lone request then costs what it costs without batching,
        without the hand-off to a batch thread and back (two thread wake-ups, about 1 ms
        on 2 vCPUs: ``benchmarks/grpc_modes.py``).
        """
        return self._scheduler._run_here(self, payload, size, key)

    def close(self, timeout: float | None = None) -> bool:
        """Reject new tasks, run what is queued, unregister. True if fully drained."""
        return self._scheduler.unregister_queue(self, timeout)

    @property
    def num_enqueued_tasks(self) -> int:
        with self._scheduler._lock:
            return len(self._tasks)

    # -- called with the scheduler lock held ---------------------------------------

    def _record_arrival(self, now: float) -> None:
        """Note an arrival; the gap since the previous one counts only while a batch forms.

        Why: the quiet rule asks whether the batch being formed has stopped growing, so it
        needs the gaps between the tasks that make up one batch. A task finding the queue
        empty follows a gap that spans the previous batch's run (its closed-loop client
        was waiting for that very batch); counted, such gaps grow the smoothed gap, every
        batch then waits out a longer quiet spell, the next gap grows again, and with a
        long window four closed-loop clients got up to 60 % fewer answers per second than
        with a 1 ms one (docs/performance.md, "Long windows and a few closed-loop clients").
        """
        if self._last_arrival is not None and self._tasks:
            gap = min(now - self._last_arrival, self._timeout)
            self._gap_ewma = gap if self._gap_ewma is None else (
                (1 - _EWMA_WEIGHT) * self._gap_ewma + _EWMA_WEIGHT * gap
            )
        self._last_arrival = now

    def _readiness(self, now: float, draining: bool, eager: bool) -> tuple[bool, float | None]:
        """(ready now, else the monotonic time it becomes ready or None)."""
        if not self._tasks:
            return False, None
        if draining or self._closed or self._timeout <= 0 or self._rows >= self._max_rows:
            return True, None
        head_deadline = self._tasks[0].enqueue_time + self._timeout
        if now >= head_deadline:
            return True, None
        if not eager:
            return False, head_deadline
        if len(self._tasks) == 1 and self._in_flight == 0:
            return True, None
        gap = self._gap_ewma if self._gap_ewma is not None else self._timeout
        quiet = min(self._timeout, max(2.0 * gap, _MIN_QUIET_S))
        last_arrival = self._last_arrival if self._last_arrival is not None else now
        quiet_deadline = last_arrival + quiet
        if now >= quiet_deadline:
            return True, None
        return False, min(head_deadline, quiet_deadline)

    def _take_batch(self) -> list[Task]:
        """Remove the oldest task and the following same-key tasks that fit."""
        head = self._tasks[0]
        batch: list[Task] = []
        kept: list[Task] = []
        rows = 0
        full = False
        for task in self._tasks:
            if not full and task.key == head.key:
                if rows + task.size <= self._max_rows or task is head:
                    batch.append(task)
                    rows += task.size
                    continue
                full = True
            kept.append(task)
        self._tasks = collections.deque(kept)
        self._rows -= rows
        return batch

    def _pending_rows_for(self, key: Hashable) -> int:
        return sum(task.size for task in self._tasks if task.key == key)


class BatchScheduler:
    """A pool of ``num_batch_threads`` daemon threads shared by all batching queues.

    Created once per process (``server.py``); ``stop()`` at shutdown runs what is queued,
    then fails whatever could not run, and never blocks longer than its timeout.
    """

    def __init__(
        self,
        num_batch_threads: int,
        *,
        thread_pool_name: str = DEFAULT_THREAD_POOL_NAME,
        eager_when_idle: bool = True,
    ) -> None:
        if num_batch_threads <= 0:
            raise invalid_argument(f"num_batch_threads must be positive; was {num_batch_threads}")
        self.num_batch_threads = num_batch_threads
        self.thread_pool_name = thread_pool_name
        self.eager_when_idle = eager_when_idle
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._drained = threading.Condition(self._lock)
        self._queues: list[BatchQueue] = []
        self._next_queue = 0
        self._running: dict[int, tuple[BatchQueue, list[Task]]] = {}
        self._inline_running = 0  # batches run on request threads (BatchQueue.try_run_here)
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._thread_loop, name=f"{thread_pool_name}_{i}", daemon=True)
            for i in range(num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def register_queue(
        self,
        name: str,
        params: BatchingParameters,
        process: ProcessBatch,
        *,
        split: SplitPayload | None = None,
        join: JoinResults | None = None,
    ) -> BatchQueue:
        """Add a queue; ``split``/``join`` are required with large batch splitting."""
        if params.enable_large_batch_splitting and (split is None or join is None):
            raise invalid_argument("split and join must be given when enable_large_batch_splitting is true")
        queue = BatchQueue(self, name, params, process, split, join)
        with self._lock:
            if self._stopping:
                raise unavailable("The batch scheduler is stopped")
            self._queues.append(queue)
        return queue

    def unregister_queue(self, queue: BatchQueue, timeout: float | None = None) -> bool:
        """Close ``queue``: flush its tasks, wait (up to ``timeout``) until none is left.

        Must not be called from a batch thread. Tasks still queued at the deadline fail
        with UNAVAILABLE; returns whether the queue drained.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            queue._closed = True
            self._work.notify_all()
            drained = True
            while queue._tasks or queue._in_flight:
                if self._stopping and not any(t.is_alive() for t in self._threads):
                    drained = False
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    drained = False
                    break
                self._drained.wait(remaining if remaining is not None else 0.5)
            leftovers = list(queue._tasks)
            queue._tasks.clear()
            queue._rows = 0
            if queue in self._queues:
                index = self._queues.index(queue)
                self._queues.pop(index)
                if self._next_queue > index:
                    self._next_queue -= 1
                if self._next_queue >= len(self._queues):
                    self._next_queue = 0
        error = unavailable(f"The batch scheduling queue {queue.name} was closed before the task ran")
        for task in leftovers:
            _resolve(task.future, error=error)
        return drained

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new tasks, run the queued ones, then join the threads.

        Tasks still queued or running when ``timeout`` expires fail with UNAVAILABLE,
        so no caller blocks forever. Idempotent.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            self._stopping = True
            self._work.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            stranded = [task for queue in self._queues for task in queue._tasks]
            for queue in self._queues:
                queue._tasks.clear()
                queue._rows = 0
            stranded += [task for _, tasks in self._running.values() for task in tasks]
            self._drained.notify_all()
        error = unavailable("The batch scheduler stopped before the task completed")
        for task in stranded:
            _resolve(task.future, error=error)

    @property
    def stopped(self) -> bool:
        return self._stopping

    # -- submission (request worker threads) -----------------------------------------

    def _submit(self, queue: BatchQueue, payload: Any, size: int, key: Hashable, future: Any) -> Any:
        params = queue.params
        if size > params.max_batch_size:
            raise invalid_argument(
                f"Task size {size} is larger than maximum input batch size {params.max_batch_size}"
            )
        if size < 0:
            raise invalid_argument(f"Task size {size} is negative")
        max_rows = queue._max_rows
        with self._lock:
            if self._stopping:
                raise unavailable("The batch scheduler is stopped")
            if queue._closed:
                raise unavailable(f"The batch scheduling queue {queue.name} is closed")
            capacity = params.max_enqueued_batches * max_rows
            if queue._rows + size > capacity:
                if params.enable_large_batch_splitting:
                    raise unavailable(
                        f"{_QUEUE_FULL}; task size is {size} but scheduling capacity is only "
                        f"{capacity - queue._rows} (max_enqueued_batches={params.max_enqueued_batches}, "
                        f"max_execution_batch_size={max_rows})"
                    )
                raise unavailable(
                    f"{_QUEUE_FULL}; currently {-(-queue._rows // max_rows)} batches enqueued and "
                    f"max_enqueued_batches is {params.max_enqueued_batches}"
                )
            now = time.monotonic()
            was_empty = not queue._tasks
            queue._record_arrival(now)
            sizes = self._split_sizes(queue, size, key)
            if len(sizes) == 1:
                queue._tasks.append(Task(payload, size, key, future, now))
            else:
                split, join = queue._split, queue._join
                if split is None or join is None:  # register_queue checks this
                    raise internal("Batch queue without split/join functions cannot split tasks")
                pieces = split(payload, sizes)
                futures = [Future() for _ in sizes]
                for piece, piece_size, piece_future in zip(pieces, sizes, futures):
                    queue._tasks.append(Task(piece, piece_size, key, piece_future, now))
                _gather(futures, future, join)
            queue._rows += size
            # Wake a batch thread only when this task can change what it waits for: a
            # first task (it may run at once, or starts the window), a full batch, or no
            # window at all. Otherwise a waiting thread already sleeps until the head
            # task's deadline (arrivals only push the quiet deadline later), and a busy
            # one looks again when its batch ends: waking it per task would only make it
            # fight the submitting thread for the GIL.
            if was_empty or queue._rows >= max_rows or queue._timeout <= 0:
                self._work.notify()
        return future

    def _run_here(self, queue: BatchQueue, payload: Any, size: int, key: Hashable) -> tuple[bool, Any]:
        if not self.eager_when_idle or size > queue._max_rows or size > queue.params.max_batch_size:
            return False, None
        with self._lock:
            if self._stopping or queue._closed or queue._tasks or queue._in_flight:
                return False, None
            if self._slots_taken_locked():
                return False, None  # num_batch_threads bounds the batches run at once
            now = time.monotonic()
            queue._record_arrival(now)
            queue._in_flight += 1  # arrivals now wait to form a batch, as behind a running batch
            self._inline_running += 1  # takes an idle batch thread's slot
        try:
            results = queue._process([Task(payload, size, key, None, now)])
            if len(results) != 1:
                raise internal(f"Batch processing returned {len(results)} results for 1 task")
        finally:
            with self._lock:
                queue._in_flight -= 1
                self._inline_running -= 1
                self._drained.notify_all()
                if any(q._tasks for q in self._queues):
                    self._work.notify()
        if isinstance(results[0], BaseException):
            raise results[0]
        return True, results[0]

    def _slots_taken_locked(self) -> bool:
        """Whether ``num_batch_threads`` batches run now (on batch threads or request threads)."""
        return len(self._running) + self._inline_running >= self.num_batch_threads

    @staticmethod
    def _split_sizes(queue: BatchQueue, size: int, key: Hashable) -> list[int]:
        """TF Serving's eager split: fill the open batch, then full batches."""
        max_rows = queue._max_rows
        if not queue.params.enable_large_batch_splitting or size <= 1:
            return [size]
        open_rows = queue._pending_rows_for(key) % max_rows
        remaining = max_rows - open_rows if open_rows else 0
        if size <= (remaining or max_rows):
            return [size]
        sizes = [remaining] if remaining else []
        left = size - remaining
        while left > 0:
            sizes.append(min(left, max_rows))
            left -= sizes[-1]
        return sizes

    # -- batch threads ---------------------------------------------------------------

    def _thread_loop(self) -> None:
        ident = threading.get_ident()
        while True:
            with self._lock:
                while True:
                    now = time.monotonic()
                    if self._slots_taken_locked():
                        found, wake_at = None, None  # a batch runs on a request thread in this thread's slot
                    else:
                        found, wake_at = self._next_batch_locked(now)
                    if found is not None:
                        break
                    if self._stopping:
                        return
                    self._work.wait(None if wake_at is None else max(0.0, wake_at - now))
                queue, tasks = found
                queue._in_flight += 1
                self._running[ident] = (queue, tasks)
                if any(q._tasks for q in self._queues):
                    self._work.notify()  # another thread keeps watch over the rest
            try:
                self._execute(queue, tasks)
            finally:
                with self._lock:
                    queue._in_flight -= 1
                    del self._running[ident]
                    self._drained.notify_all()

    def _next_batch_locked(self, now: float) -> tuple[tuple[BatchQueue, list[Task]] | None, float | None]:
        """Round-robin over queues for a ready batch; else the earliest wake-up time."""
        wake_at: float | None = None
        count = len(self._queues)
        for offset in range(count):
            index = (self._next_queue + offset) % count
            queue = self._queues[index]
            ready, at = queue._readiness(now, self._stopping, self.eager_when_idle)
            if ready:
                self._next_queue = (index + 1) % count
                return (queue, queue._take_batch()), None
            if at is not None and (wake_at is None or at < wake_at):
                wake_at = at
        return None, wake_at

    @staticmethod
    def _execute(queue: BatchQueue, tasks: list[Task]) -> None:
        try:
            results = queue._process(tasks)
            if len(results) != len(tasks):
                raise internal(f"Batch processing returned {len(results)} results for {len(tasks)} tasks")
        except Exception as err:  # noqa: BLE001 - every caller must learn the outcome
            _complete_on_loops([(task.future, None, err) for task in tasks])
            return
        _complete_on_loops([
            (task.future, None, result) if isinstance(result, BaseException) else (task.future, result, None)
            for task, result in zip(tasks, results)
        ])


def _gather(pieces: list[Future], parent: Future, join: JoinResults) -> None:
    """Complete ``parent`` with ``join(results)`` once every piece is done (first error wins)."""
    lock = threading.Lock()
    pending = [len(pieces)]

    def on_done(_: Future) -> None:
        with lock:
            pending[0] -= 1
            if pending[0]:
                return
        for piece in pieces:
            error = piece.exception()
            if error is not None:
                _resolve(parent, error=error)
                return
        try:
            _resolve(parent, join([piece.result() for piece in pieces]))
        except ServingError as err:
            _resolve(parent, error=err)
        except Exception as err:  # noqa: BLE001
            _resolve(parent, error=internal(f"Joining split task results failed: {err}"))

    for piece in pieces:
        piece.add_done_callback(on_done)


def create_scheduler(params: BatchingParameters, *, eager_when_idle: bool = True) -> BatchScheduler:
    """The process-wide scheduler sized by ``params`` (num_batch_threads, thread_pool_name)."""
    return BatchScheduler(
        params.num_batch_threads, thread_pool_name=params.thread_pool_name, eager_when_idle=eager_when_idle
    )
