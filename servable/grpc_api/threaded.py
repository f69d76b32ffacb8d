"""The threaded gRPC front door: grpc's synchronous server, each RPC on one pool thread.

TF Serving's own design (a synchronous gRPC server, ``--grpc_max_threads`` threads):
a Predict is received, decoded, run and encoded on one thread. The grpc.aio front door
(``server.py``) instead receives on the event loop and hands the model call to a worker
and back: two thread wake-ups per request, which on a 2-vCPU VM cost more than a small
model (``benchmarks/grpc_modes.py``: MLP, 1 row, concurrency 1, p50 about half of the
aio door's). With batching, a request finding its queue idle runs at once on its thread
(``BatchQueue.try_run_here``) and others wait for their batch holding their thread, so a
batch gathers at most ``--grpc_max_threads`` requests; the aio door
(``--grpc_server_mode=asyncio``) waits without holding threads.

Threads: inference RPCs (Predict, Classify, Regress, MultiInference, GetModelMetadata)
run on the inference pool (``num_threads``, the ``--grpc_max_threads`` value). Health,
GetModelStatus and HandleReloadConfigRequest run on a separate control pool, so a
hung or slow model holding every inference thread never starves a health probe.
``start``/``mark_not_serving``/``stop`` are called on the server's event loop and
never block it.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import grpc
from grpc_health.v1 import health, health_pb2

from servable.core.status import ServingError
from servable.grpc_api.convert import error_details, grpc_code
from servable.grpc_api.server import HEALTH_NAMES, GrpcOptions, bind_ports, count_abandoned, message_limit, server_options
from servable.grpc_api.services import (
    MODEL_SERVICE,
    PREDICTION_SERVICE,
    ConfigReloader,
    ModelService,
    PredictionService,
    _Received,
    _Refused,
    method_handlers,
)
from servable.serving.service import ServingService

log = logging.getLogger(__name__)

CONTROL_THREADS = 4
HEALTH_SERVICE = "grpc.health.v1.Health"


def _abort(context: grpc.ServicerContext, error: ServingError) -> None:
    context.abort(grpc_code(error.code), error_details(error))


class ThreadedGrpcFrontDoor:
    """Owns a synchronous ``grpc.server``; same interface as ``GrpcFrontDoor``."""

    def __init__(
        self,
        service: ServingService,
        options: GrpcOptions,
        reload_config: ConfigReloader | None = None,
        *,
        num_threads: int = 8,
    ) -> None:
        self.options = options
        self.service = service
        self.num_threads = max(1, num_threads)
        self.prediction = PredictionService(
            service, tensor_content_outputs=options.tensor_content_outputs, limits=options.limits
        )
        self.model = ModelService(service, reload_config)
        self.health: health.HealthServicer | None = None
        self.server: grpc.Server | None = None
        self.port: int | None = None
        self._inference_pool: ThreadPoolExecutor | None = None
        self._control_pool: ThreadPoolExecutor | None = None

    # -- behaviors ---------------------------------------------------------------------

    def _inference(self, fn: Callable[[Any], Any], api: str) -> Callable[[Any, grpc.ServicerContext], Any]:
        """A behavior running ``fn(request)`` on this pool thread, as one service request.

        The client giving up (deadline, cancel) marks the call abandoned: the model call
        is skipped when not started yet, and the request is counted once, here, unless
        the service already counted it.
        """
        service = self.service

        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, _Refused):
                _abort(context, request.error)
            message = request.message if isinstance(request, _Received) else request
            failure: ServingError | None = None
            with service.request_scope() as call:
                if not context.add_callback(call.abandon):
                    call.abandon()  # already over: its deadline passed while it queued
                try:
                    return fn(message)
                except ServingError as error:
                    failure = error
                finally:
                    if call.abandoned and not call.counted:
                        count_abandoned(service, context.time_remaining(), message, api)
            _abort(context, failure)

        return behavior

    def _control(self, fn: Callable[[Any], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
        """A behavior for the control pool: ``fn(request)``, ServingError as the RPC status."""

        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, _Refused):
                _abort(context, request.error)
            try:
                return fn(request)
            except ServingError as error:
                failure = error
            _abort(context, failure)

        behavior.experimental_thread_pool = self._control_pool  # type: ignore[attr-defined]
        return behavior

    def _health_handler(self) -> grpc.GenericRpcHandler:
        servicer = health.HealthServicer(experimental_non_blocking=True, experimental_thread_pool=self._control_pool)
        for name in HEALTH_NAMES:
            servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

        def check(request: Any, context: grpc.ServicerContext) -> Any:
            return servicer.Check(request, context)

        check.experimental_thread_pool = self._control_pool  # type: ignore[attr-defined]
        self.health = servicer
        return grpc.method_handlers_generic_handler(HEALTH_SERVICE, {
            "Check": grpc.unary_unary_rpc_method_handler(
                check,
                request_deserializer=health_pb2.HealthCheckRequest.FromString,
                response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
            ),
            "Watch": grpc.unary_stream_rpc_method_handler(
                servicer.Watch,
                request_deserializer=health_pb2.HealthCheckRequest.FromString,
                response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
            ),
        })

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> int:
        """Bind and start; returns the bound TCP port (useful with ``port=0`` in tests)."""
        opts = self.options
        self._inference_pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="servable-grpc")
        self._control_pool = ThreadPoolExecutor(CONTROL_THREADS, thread_name_prefix="servable-grpc-control")
        prediction, model = self.prediction, self.model
        behaviors = {
            (PREDICTION_SERVICE, "Predict"): self._inference(prediction.predict_sync, "Predict"),
            (PREDICTION_SERVICE, "Classify"): self._inference(prediction.classify_sync, "Classify"),
            (PREDICTION_SERVICE, "Regress"): self._inference(prediction.regress_sync, "Regress"),
            (PREDICTION_SERVICE, "MultiInference"): self._inference(prediction.multi_inference_sync, "MultiInference"),
            (PREDICTION_SERVICE, "GetModelMetadata"): self._inference(prediction.metadata_sync, "GetModelMetadata"),
            (MODEL_SERVICE, "GetModelStatus"): self._control(model.status_sync),
            (MODEL_SERVICE, "HandleReloadConfigRequest"): self._control(model.reload_sync),
        }
        server = grpc.server(self._inference_pool, options=server_options(opts))
        server.add_generic_rpc_handlers(method_handlers(behaviors, max_message_bytes=message_limit(opts)))
        if opts.enable_health:
            server.add_generic_rpc_handlers([self._health_handler()])
        try:
            self.port = bind_ports(server, opts)
            server.start()
        except BaseException:
            self._shutdown_pools()
            raise
        self.server = server
        log.info("Running gRPC ModelServer at %s:%s ...", opts.address, self.port)
        return self.port

    async def mark_not_serving(self) -> None:
        """Flip health to NOT_SERVING (first step of a graceful shutdown)."""
        if self.health is not None:
            self.health.enter_graceful_shutdown()

    async def stop(self, grace: float) -> None:
        """Refuse new RPCs, let running ones finish for up to ``grace`` seconds."""
        if self.server is not None:
            stopped = self.server.stop(grace)
            await asyncio.to_thread(stopped.wait, grace + 5.0)
        self._shutdown_pools()

    def _shutdown_pools(self) -> None:
        for pool in (self._inference_pool, self._control_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

