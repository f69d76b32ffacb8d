"""``BatchingServable``: a ``ModelServable`` wrapper that merges concurrent predicts.

TF Serving's ``BatchingSession`` for any servable: ``predict`` calls from many worker
threads are queued per signature on the shared ``BatchScheduler``, merged by
concatenating every input along dimension 0, padded up to the next allowed batch size,
run once on the wrapped servable from a batch thread, and split back so each caller gets
exactly its own rows. The core never knows: server wiring wraps a loaded servable with
``wrap_servable`` and calls ``close()`` before the version is unloaded.

Merging rules: tasks share a batch only when they have the same signature, the same
output filter, the same input names and dtypes and (unless
``pad_variable_length_inputs``) the same non-batch dimensions; otherwise they simply run
in separate batches. ``classify`` and ``regress`` pass through unbatched.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Mapping, NamedTuple, Sequence

import numpy as np

from servable.batching.parameters import BatchingParameters
from servable.batching.scheduler import BatchQueue, BatchScheduler, Task
from servable.core.status import failed_precondition, internal, invalid_argument


class BatchQueueId(NamedTuple):
    """Which queue a batch came from (labels for metrics)."""

    model_name: str
    version: int | None
    signature: str


# on_batch(queue_id, batch_size, padded_size, queue_seconds): called on a batch thread
# after every successful model call; queue_seconds is how long the batch's oldest task
# waited in the queue. It must be cheap and must not raise.
OnBatch = Callable[[BatchQueueId, int, int, float], None]


@dataclass(frozen=True)
class BatchingStats:
    """Counters since the wrapper was created (a snapshot)."""

    batches: int = 0
    tasks: int = 0
    rows: int = 0
    padded_rows: int = 0


class _Request:
    __slots__ = ("inputs", "output_filter")

    def __init__(self, inputs: dict[str, np.ndarray], output_filter: tuple[str, ...]) -> None:
        self.inputs = inputs
        self.output_filter = output_filter


def task_size(inputs: Mapping[str, np.ndarray]) -> int:
    """The shared 0th dimension of all inputs (TF Serving's ComputeTensorBatchSize)."""
    size: int | None = None
    for array in inputs.values():
        if array.ndim == 0:
            raise invalid_argument("Batching Run() input tensors must have at least one dimension")
        if size is None:
            size = int(array.shape[0])
        elif array.shape[0] != size:
            raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
    return size or 0


class BatchingServable:
    """Implements ``servable.serving.model.ModelServable`` around ``inner``.

    ``predict`` is called from request worker threads and blocks until its batch ran;
    the wrapped servable's ``predict`` is called from batch threads only (and directly
    for requests that cannot be batched: unknown signatures, no inputs, zero rows).
    Attributes not defined here are read from ``inner``.
    """

    def __init__(
        self,
        inner: Any,
        scheduler: BatchScheduler,
        params: BatchingParameters,
        *,
        model_name: str = "",
        version: int | None = None,
        on_batch: OnBatch | None = None,
    ) -> None:
        self._inner = inner
        self._scheduler = scheduler
        self.params = params
        self.signatures = inner.signatures
        self._model_name = model_name
        self._version = version
        self._on_batch = on_batch
        self._stats_lock = threading.Lock()
        self._stats = BatchingStats()
        self._queues: dict[str, BatchQueue] = {}
        prefix = f"{model_name or type(inner).__name__}:{'' if version is None else version}"
        try:
            for key in inner.signatures:
                self._queues[key] = scheduler.register_queue(
                    f"{prefix}/{key}",
                    params,
                    self._make_processor(BatchQueueId(model_name, version, key)),
                    split=_split_request,
                    join=_join_outputs,
                )
        except BaseException:
            self.close(timeout=0)
            raise

    @property
    def inner(self) -> Any:
        return self._inner

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)

    # -- ModelServable -------------------------------------------------------------

    def signature_defs(self) -> dict[str, bytes]:
        return self._inner.signature_defs()

    def predict(
        self, signature_key: str, inputs: dict[str, np.ndarray], output_filter: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        """Queue, wait for the batch, return this request's rows of every output.

        A request finding its queue idle runs at once on this thread, as a batch of its
        own (``BatchQueue.try_run_here``).
        """
        queue = self._queues.get(signature_key)
        if queue is None or not inputs:
            return self._inner.predict(signature_key, inputs, output_filter)
        arrays = {name: np.asarray(value) for name, value in inputs.items()}
        size = task_size(arrays)
        if size == 0:
            return self._inner.predict(signature_key, arrays, output_filter)
        key = self._merge_key(arrays, output_filter)
        request = _Request(arrays, tuple(output_filter))
        ran, outputs = queue.try_run_here(request, size, key)  # a lone request runs here, at once
        if ran:
            return outputs
        return queue.submit(request, size, key).result()

    def predict_submit(
        self,
        signature_key: str,
        inputs: dict[str, np.ndarray],
        output_filter: Sequence[str] = (),
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Any:
        """Queue a predict without waiting: the future completes with this request's rows.

        Non-blocking (a short lock), so an event loop may call it (passing itself as
        ``loop`` to get an ``asyncio.Future`` to await; else a
        ``concurrent.futures.Future``). None when the request cannot be batched (unknown
        signature, no inputs, zero rows): call ``predict`` for those. Raises
        ``ServingError`` at once for an oversized task or a full queue.
        """
        queue = self._queues.get(signature_key)
        if queue is None or not inputs:
            return None
        arrays = {name: np.asarray(value) for name, value in inputs.items()}
        size = task_size(arrays)
        if size == 0:
            return None
        return queue.submit(_Request(arrays, tuple(output_filter)), size, self._merge_key(arrays, output_filter), loop=loop)

    def classify(self, signature_key: str, examples: list[bytes]) -> tuple[np.ndarray | None, np.ndarray | None]:
        return self._inner.classify(signature_key, examples)

    def regress(self, signature_key: str, examples: list[bytes]) -> np.ndarray:
        return self._inner.regress(signature_key, examples)

    # -- lifecycle and counters ------------------------------------------------------

    def close(self, timeout: float | None = 30.0) -> None:
        """Unregister this version's queues (their tasks run first). Idempotent.

        Called by whoever unloads the version, after its last request finished.
        """
        queues, self._queues = self._queues, {}
        for queue in queues.values():
            queue.close(timeout)

    def stats(self) -> BatchingStats:
        with self._stats_lock:
            return self._stats

    def warmup_batch_sizes(self) -> tuple[int, ...]:
        """Batch sizes the model will be called with that warmup should trace.

        ``allowed_batch_sizes`` when set (every padded batch has one of these sizes),
        else just 1 (any size may occur; tracing one is what TF Serving's no-file
        warmup would do at best).
        """
        return self.params.allowed_batch_sizes or (1,)

    # -- batch threads -----------------------------------------------------------------

    def _merge_key(self, arrays: dict[str, np.ndarray], output_filter: Sequence[str]) -> Hashable:
        pad = self.params.pad_variable_length_inputs
        return (
            tuple(sorted(output_filter)),
            tuple(
                (name, array.dtype.str, array.ndim if pad else array.shape[1:])
                for name, array in sorted(arrays.items())
            ),
        )

    def _make_processor(self, queue_id: BatchQueueId) -> Callable[[list[Task]], list[Any]]:
        def process(tasks: list[Task]) -> list[Any]:
            started = time.monotonic()
            requests: list[_Request] = [task.payload for task in tasks]
            sizes = [task.size for task in tasks]
            rows = sum(sizes)
            padded = self.params.padded_size(rows)
            merged = _merge_inputs(requests, padded - rows, self.params.pad_variable_length_inputs)
            outputs = self._inner.predict(queue_id.signature, merged, requests[0].output_filter)
            results = _split_outputs(outputs, sizes, padded)
            with self._stats_lock:
                s = self._stats
                self._stats = BatchingStats(s.batches + 1, s.tasks + len(tasks), s.rows + rows, s.padded_rows + padded)
            if self._on_batch is not None:
                waited = started - min(task.enqueue_time for task in tasks)
                self._on_batch(queue_id, rows, padded, waited)
            return results

        return process


def _pad_to(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Pad dims > 0 up to ``shape`` with the tensor's first element (TF Serving's rule)."""
    if array.shape == shape:
        return array
    fill = array.flat[0] if array.size else np.zeros((), dtype=array.dtype)[()]
    padded = np.full(shape, fill, dtype=array.dtype)
    padded[tuple(slice(0, n) for n in array.shape)] = array
    return padded


def _merge_inputs(requests: list[_Request], padding_rows: int, pad_variable: bool) -> dict[str, np.ndarray]:
    """Concatenate every input along dim 0; add ``padding_rows`` copies of the last task's first row."""
    merged: dict[str, np.ndarray] = {}
    for name in requests[0].inputs:
        parts = [request.inputs[name] for request in requests]
        if pad_variable:
            max_dims = tuple(max(part.shape[d] for part in parts) for d in range(1, parts[0].ndim))
            parts = [_pad_to(part, (part.shape[0],) + max_dims) for part in parts]
        if padding_rows:
            parts.append(np.repeat(parts[-1][:1], padding_rows, axis=0))
        merged[name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    return merged


def _split_outputs(outputs: Mapping[str, Any], sizes: list[int], padded: int) -> list[dict[str, np.ndarray]]:
    """Slice each batched output back into one dict per task (padding rows dropped)."""
    checked: dict[str, np.ndarray] = {}
    for name, value in outputs.items():
        array = np.asarray(value)
        if array.ndim == 0:
            raise failed_precondition("Batched output tensor has 0 dimensions")
        if array.shape[0] != padded:
            raise failed_precondition(
                "Batched output tensor's 0th dimension does not equal the sum of the 0th dimension "
                "sizes of the input tensors"
            )
        checked[name] = array
    results: list[dict[str, np.ndarray]] = []
    start = 0
    for size in sizes:
        results.append({name: array[start : start + size] for name, array in checked.items()})
        start += size
    return results


def _split_request(request: _Request, sizes: list[int]) -> list[_Request]:
    pieces: list[_Request] = []
    start = 0
    for size in sizes:
        pieces.append(
            _Request(
                {name: array[start : start + size] for name, array in request.inputs.items()},
                request.output_filter,
            )
        )
        start += size
    return pieces


def _join_outputs(results: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    joined: dict[str, np.ndarray] = {}
    for name in results[0]:
        parts = [result[name] for result in results]
        if len({part.shape[1:] for part in parts}) > 1 and len({part.ndim for part in parts}) == 1:
            # Pieces ran in batches padded to different lengths (pad_variable_length_inputs).
            max_dims = tuple(max(part.shape[d] for part in parts) for d in range(1, parts[0].ndim))
            parts = [_pad_to(part, (part.shape[0],) + max_dims) for part in parts]
        try:
            joined[name] = np.concatenate(parts, axis=0)
        except ValueError as err:
            raise internal(f"Could not reassemble output {name} of a split request: {err}") from None
    return joined


def wrap_servable(
    inner: Any,
    params: BatchingParameters,
    scheduler: BatchScheduler,
    *,
    model_name: str = "",
    version: int | None = None,
    on_batch: OnBatch | None = None,
) -> BatchingServable:
    """Wrap a loaded servable for batching on the shared ``scheduler``."""
    return BatchingServable(inner, scheduler, params, model_name=model_name, version=version, on_batch=on_batch)
