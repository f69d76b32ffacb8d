"""The one internal request path shared by the gRPC and REST front doors.

Front doors translate wire formats into calls on ``ServingService`` and back; routing
(model name, version or label), signature lookup, error texts, metrics and the request
log line are written here once. Methods are synchronous and thread-safe: front doors run
each whole request (decode, call, encode) on a thread of their own inside
``service.request_scope()`` (the threaded gRPC server) or on the service's worker pool
through ``await service.run_blocking(fn, *args)`` (the asyncio front doors), so no model
call ever runs on an event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import threading
import time
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np

from servable.core.handles import ServableHandle
from servable.core.ids import ServableId, ServableRequest
from servable.core.status import Code, ServingError, failed_precondition, invalid_argument, not_found, unimplemented
from servable.serving import request_log as request_lines
from servable.serving.labels import VersionLabels
from servable.serving.metrics import ServingMetrics

T = TypeVar("T")

DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

# Front doors decode and encode requests (serialized) and outputs (array bytes) up to this
# size on the event loop (``predict_async``): at most about 100 us of work there, less than
# the two thread hand-offs it saves. Anything larger goes to the worker pool.
INLINE_BYTES = 256 * 1024

# Request ids: a random per-process prefix and a counter (unique, and cheaper than uuid4,
# which reads the OS random source on every request).
_ID_PREFIX = os.urandom(4).hex()
_request_ids = itertools.count(1)
log = logging.getLogger(__name__)


class _Call:
    """The link between one front-door request awaiting ``run_blocking`` and its worker.

    The event loop marks it abandoned when the awaiting coroutine is cancelled (gRPC
    deadline or client gone, REST timeout); the worker then skips the model call if it
    has not started it yet, and leaves counting the request to the front door that gave up.
    """

    __slots__ = ("abandoned", "counted")

    def __init__(self) -> None:
        self.abandoned = False
        self.counted = False  # the service recorded it in the metrics (front doors then don't)

    def abandon(self) -> None:
        self.abandoned = True


_current_call: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("servable_call", default=None)


def _abandoned() -> bool:
    call = _current_call.get()
    return call is not None and call.abandoned


def _deadline_error() -> ServingError:
    return ServingError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded: the client gave up before the model ran")


@dataclass(frozen=True)
class ModelSpecRef:
    """A front door's reading of ``tensorflow.serving.ModelSpec``."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""


@dataclass
class PredictResult:
    id: ServableId
    signature_name: str
    signature: Any
    outputs: dict[str, np.ndarray]


@dataclass
class ClassifyResult:
    id: ServableId
    signature_name: str
    classes: np.ndarray | None
    scores: np.ndarray | None


@dataclass
class RegressResult:
    id: ServableId
    signature_name: str
    values: np.ndarray


@dataclass
class MetadataResult:
    id: ServableId
    signature_defs: dict[str, bytes]


@dataclass
class InferenceTask:
    """One task of a MultiInference request."""

    spec: ModelSpecRef
    method_name: str


@dataclass
class _CallRecord:
    entrypoint: str
    api: str
    model_name: str
    request_id: str = field(default_factory=lambda: f"{_ID_PREFIX}{next(_request_ids):08x}")
    version: int | None = None
    signature: str = ""
    examples: int = 0


class ServingService:
    """Routes requests to loaded servables and runs them.

    ``manager`` is a ``servable.core.manager.AspiredVersionsManager`` (anything with
    ``get_handle(ServableRequest)`` and a ``monitor``). ``labels`` maps version labels
    to versions per model and is replaced as configs change.
    """

    def __init__(
        self,
        manager: Any,
        *,
        labels: VersionLabels | None = None,
        metrics: ServingMetrics | None = None,
        num_threads: int = 8,
    ) -> None:
        self.manager = manager
        self.labels = labels or VersionLabels()
        self.metrics = metrics or ServingMetrics()
        self._executor = ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix="servable-request")
        self._in_flight = 0
        self._idle = threading.Condition()
        in_flight_gauge = getattr(self.metrics, "in_flight", None)
        if in_flight_gauge is not None:
            in_flight_gauge.set_function(lambda: self._in_flight)

    # ------------------------------------------------------------------ plumbing

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the request worker pool; called from an event loop.

        Cancelling the awaiting coroutine (a deadline, a client gone) abandons the work:
        if no worker picked it up yet it never runs; if it runs, the model call is
        skipped when not started yet. The front door that gave up counts such a request
        in the metrics; the service only writes its log line (status DEADLINE_EXCEEDED).
        """
        call = _Call()
        context = contextvars.copy_context()
        context.run(_current_call.set, call)
        self._enter()
        try:
            future = self._executor.submit(context.run, fn, *args)
        except BaseException:
            self._leave()
            raise
        future.add_done_callback(lambda _f: self._leave())  # ran to the end, or cancelled before starting
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            call.abandoned = True
            raise

    @contextlib.contextmanager
    def request_scope(self) -> Iterator[_Call]:
        """Run one request on the calling thread; for front doors that own their threads.

        Called by the threaded gRPC front door around each RPC, on its pool thread, before
        any service method. The request counts as in flight (graceful shutdown waits for
        it). The front door calls ``abandon()`` on the yielded call when the client gives
        up (deadline, cancel): as with ``run_blocking``, a model call not started yet is
        then skipped, and the front door counts the request unless ``counted`` is set.
        """
        call = _Call()
        token = _current_call.set(call)
        self._enter()
        try:
            yield call
        finally:
            self._leave()
            _current_call.reset(token)

    def _enter(self) -> None:
        with self._idle:
            self._in_flight += 1

    def _leave(self) -> None:
        with self._idle:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    @property
    def in_flight(self) -> int:
        """Requests handed to the worker pool and not finished (queued or running)."""
        return self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        """Block until no request is in flight or ``timeout`` passes; True when idle."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._in_flight > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
            return True

    def shutdown(self, wait: bool = True) -> None:
        """Stop the worker pool (after the front doors stopped taking requests)."""
        self._executor.shutdown(wait=wait, cancel_futures=not wait)

    def resolve(self, spec: ModelSpecRef) -> ServableHandle:
        """Borrow a handle on the version ``spec`` names; the caller releases it (``with``)."""
        if not spec.name:
            raise invalid_argument("ModelSpec has no name specified.")
        version = spec.version
        if spec.label:
            version = self.labels.resolve(spec.name, spec.label)
        request = ServableRequest.latest(spec.name) if version is None else ServableRequest.specific(spec.name, version)
        return self.manager.get_handle(request)

    @contextlib.contextmanager
    def _observe(self, entrypoint: str, api: str, model_name: str) -> Iterator[_CallRecord]:
        """Time one call, count it by status and write its request log line."""
        record = _CallRecord(entrypoint, api, model_name)
        start = time.perf_counter()
        code = Code.OK
        try:
            if _abandoned():
                raise _deadline_error()
            yield record
        except ServingError as error:  # the client's or the model's documented error: no stack trace
            code = error.code
            raise
        except Exception as error:  # a model bug: fail this request only
            code = Code.INTERNAL
            log.exception("%s %s on %s failed (request id=%s)", entrypoint, api, model_name, record.request_id)
            raise ServingError(Code.INTERNAL, f"{type(error).__name__}: {error}") from error
        finally:
            abandoned = _abandoned()
            if abandoned:  # the front door already answered (and counts) DEADLINE_EXCEEDED / CANCELLED
                code = Code.DEADLINE_EXCEEDED
            latency = time.perf_counter() - start
            if not abandoned:
                self.metrics.observe_request(
                    entrypoint, api, model_name, record.version, record.signature, code, latency, record.examples
                )
                call = _current_call.get()
                if call is not None:
                    call.counted = True
            if request_lines.request_log.isEnabledFor(logging.INFO):
                request_lines.sink(
                    (record.request_id, entrypoint, api, model_name, record.version, record.signature, code.name, latency)
                )

    def record_error(self, entrypoint: str, api: str, model_name: str, error: ServingError) -> None:
        """Count a request that failed before reaching the service (e.g. malformed JSON)."""
        self.metrics.observe_request(entrypoint, api, model_name, None, "", error.code, 0.0, 0)

    # ------------------------------------------------------------------ inference

    def predict(
        self,
        spec: ModelSpecRef,
        decode_inputs: Callable[[Any], dict[str, np.ndarray]],
        output_filter: Sequence[str] = (),
        *,
        entrypoint: str,
    ) -> PredictResult:
        """Predict. ``decode_inputs(signature)`` turns the request body into arrays once
        the signature is known (REST needs its dtypes; gRPC ignores the argument)."""
        with self._observe(entrypoint, "Predict" if entrypoint == "GRPC" else "predict", spec.name) as record:
            with self.resolve(spec) as handle:
                record.version = handle.id.version
                servable = handle.servable
                key = spec.signature_name or DEFAULT_SIGNATURE
                record.signature = key
                signature = servable.signatures.get(key)
                if signature is None:
                    if entrypoint == "REST":
                        raise invalid_argument(f'Serving signature name: "{key}" not found in signature def')
                    raise failed_precondition(f'Serving signature key "{key}" not found.')
                inputs = decode_inputs(signature)
                outputs = self._timed_run(spec.name, "Predict", servable.predict, key, inputs, output_filter)
                return PredictResult(handle.id, key, signature, outputs)

    async def predict_async(
        self,
        spec: ModelSpecRef,
        decode_inputs: Callable[[Any], dict[str, np.ndarray]],
        output_filter: Sequence[str] = (),
        *,
        entrypoint: str,
    ) -> PredictResult:
        """Predict from an event loop without holding a worker thread while a batch forms.

        Called on the event loop by a front door for a request small enough to decode
        there (the front door checks its size: ``decode_inputs`` runs on the loop). When
        the routed version batches (its servable has ``predict_submit``, see
        ``servable.batching``), routing, decoding and enqueueing happen here, the model
        runs on a batch thread, and the loop is woken with the rows: no worker thread
        is parked per queued request, so a batch can gather as many requests as are in
        flight. Any other version runs the whole call on the worker pool
        (``run_blocking(self.predict, ...)``), with the same errors, metrics and log line.
        Cancelling the awaiting coroutine abandons the request like ``run_blocking``.
        """
        try:
            probe = self.resolve(spec)
        except ServingError:
            probe = None  # the worker path raises (and counts) the same error
        if probe is None or getattr(probe.servable, "predict_submit", None) is None:
            if probe is not None:
                probe.release()
            return await self.run_blocking(functools.partial(self.predict, entrypoint=entrypoint), spec, decode_inputs, output_filter)
        call = _Call()
        token = _current_call.set(call)
        self._enter()  # counted in flight like run_blocking's work (graceful shutdown waits for it)
        try:
            with self._observe(entrypoint, "Predict" if entrypoint == "GRPC" else "predict", spec.name) as record:
                with probe as handle:
                    record.version = handle.id.version
                    servable = handle.servable
                    key = spec.signature_name or DEFAULT_SIGNATURE
                    record.signature = key
                    signature = servable.signatures.get(key)
                    if signature is None:
                        if entrypoint == "REST":
                            raise invalid_argument(f'Serving signature name: "{key}" not found in signature def')
                        raise failed_precondition(f'Serving signature key "{key}" not found.')
                    inputs = decode_inputs(signature)
                    start = time.perf_counter()
                    future = servable.predict_submit(key, inputs, output_filter, loop=asyncio.get_running_loop())
                    try:
                        if future is None:  # not batchable (e.g. zero rows): run it on a worker
                            outputs = await self.run_blocking(servable.predict, key, inputs, output_filter)
                        else:
                            outputs = await future  # completed by the batch thread
                    except asyncio.CancelledError:
                        call.abandoned = True
                        raise
                    self.metrics.observe_runtime(spec.name, "Predict", time.perf_counter() - start)
                    return PredictResult(handle.id, key, signature, outputs)
        finally:
            self._leave()
            _current_call.reset(token)

    def classify(self, spec: ModelSpecRef, examples: list[bytes], *, entrypoint: str) -> ClassifyResult:
        """Classify serialized ``tf.Example``s (context already merged)."""
        with self._observe(entrypoint, "Classify" if entrypoint == "GRPC" else "classify", spec.name) as record:
            record.examples = len(examples)
            with self.resolve(spec) as handle:
                record.version = handle.id.version
                key = self._lookup_inference_signature(handle, spec, record)
                if not examples:
                    raise invalid_argument("Input is empty.")
                classes, scores = self._timed_run(spec.name, "Classify", handle.servable.classify, key, examples)
                return ClassifyResult(handle.id, key, classes, scores)

    def regress(self, spec: ModelSpecRef, examples: list[bytes], *, entrypoint: str) -> RegressResult:
        """Regress serialized ``tf.Example``s (context already merged)."""
        with self._observe(entrypoint, "Regress" if entrypoint == "GRPC" else "regress", spec.name) as record:
            record.examples = len(examples)
            with self.resolve(spec) as handle:
                record.version = handle.id.version
                key = self._lookup_inference_signature(handle, spec, record)
                if not examples:
                    raise invalid_argument("Input is empty.")
                values = self._timed_run(spec.name, "Regress", handle.servable.regress, key, examples)
                return RegressResult(handle.id, key, values)

    def multi_inference(
        self, tasks: Sequence[InferenceTask], examples: list[bytes], *, entrypoint: str
    ) -> list[ClassifyResult | RegressResult]:
        """Run several classify/regress signatures of one model on the same examples."""
        model_name = tasks[0].spec.name if tasks else ""
        with self._observe(entrypoint, "MultiInference", model_name) as record:
            record.examples = len(examples)
            if not tasks:
                raise invalid_argument("MultiInferenceRequest must specify at least one task.")
            names = {task.spec.name for task in tasks}
            if len(names) != 1:
                raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
            seen: set[str] = set()
            for task in tasks:
                key = task.spec.signature_name or DEFAULT_SIGNATURE
                if key in seen:
                    raise invalid_argument(f"Duplicate evaluation of signature: {key}")
                seen.add(key)
                if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
                    raise unimplemented(f"Unsupported signature method_name: {task.method_name}")
            if not examples:
                raise invalid_argument("Input is empty.")
            first = tasks[0].spec
            with self.resolve(ModelSpecRef(first.name, first.version, first.label)) as handle:
                record.version = handle.id.version
                keys = [task.spec.signature_name or DEFAULT_SIGNATURE for task in tasks]
                input_tensors = set()
                for key in keys:
                    signature = handle.servable.signatures.get(key)
                    if signature is None:
                        raise invalid_argument(f"Requested signature not found in model graph: {key}")
                    input_tensors.add(getattr(getattr(signature, "inputs", {}).get("inputs"), "name", None))
                if len(input_tensors) > 1:  # TF Serving runs one graph feed for all tasks
                    raise invalid_argument("Input tensor must be the same for all Signatures.")
                results: list[ClassifyResult | RegressResult] = []
                for task, key in zip(tasks, keys):
                    if task.method_name == CLASSIFY_METHOD:
                        classes, scores = self._timed_run(first.name, "Classify", handle.servable.classify, key, examples)
                        results.append(ClassifyResult(handle.id, key, classes, scores))
                    else:
                        values = self._timed_run(first.name, "Regress", handle.servable.regress, key, examples)
                        results.append(RegressResult(handle.id, key, values))
                return results

    def _lookup_inference_signature(self, handle: ServableHandle, spec: ModelSpecRef, record: _CallRecord) -> str:
        key = spec.signature_name or DEFAULT_SIGNATURE
        record.signature = key
        if key not in handle.servable.signatures:
            raise invalid_argument(f"No signature was found with the name: {key}")
        return key

    def _timed_run(self, model_name: str, api: str, fn: Callable[..., T], *args: Any) -> T:
        if _abandoned():
            raise _deadline_error()
        start = time.perf_counter()
        result = fn(*args)
        self.metrics.observe_runtime(model_name, api, time.perf_counter() - start)
        return result

    # ------------------------------------------------------------------ status and metadata

    def model_status(self, name: str, version: int | None = None) -> list[Any]:
        """States of ``name``'s versions, newest first (GetModelStatus semantics)."""
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        states = self.manager.monitor.get_version_states(name)
        if not states:
            raise not_found(f"Could not find any versions of model {name}")
        if version is not None:
            state = states.get(version)
            if state is None:
                raise not_found(f"Could not find version {version} of model {name}")
            return [state]
        return [states[v] for v in sorted(states, reverse=True)]

    def model_metadata(self, spec: ModelSpecRef, fields: Sequence[str], *, entrypoint: str = "GRPC") -> MetadataResult:
        """GetModelMetadata: only the ``signature_def`` field exists."""
        if not spec.name:
            raise invalid_argument("ModelSpec has no name specified.")
        if not fields:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        for name in fields:
            if name != "signature_def":
                raise invalid_argument(f"Metadata field {name} is not supported")
        with self.resolve(spec) as handle:
            return MetadataResult(handle.id, handle.servable.signature_defs())
