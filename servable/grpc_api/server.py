"""Build and start the grpc.aio server (ports, TLS, channel arguments, health service)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from servable.core.status import Code, ServingError, invalid_argument
from servable.grpc_api.services import (
    MODEL_SERVICE,
    PREDICTION_SERVICE,
    ConfigReloader,
    ModelService,
    PredictionService,
    _Received,
    generic_handlers,
)
from servable.serving.service import ServingService

log = logging.getLogger(__name__)

INT32_MAX = 2**31 - 1
SERVICE_NAMES = (MODEL_SERVICE, PREDICTION_SERVICE)
# TF Serving's --enable_grpc_healthcheck_service marks the short names; the full names are
# what grpc health probes usually ask for.
HEALTH_NAMES = ("", *SERVICE_NAMES, *(full.rsplit(".", 1)[1] for full in SERVICE_NAMES))


@dataclass
class GrpcOptions:
    address: str = "0.0.0.0"
    port: int = 8500
    socket_path: str = ""
    max_message_bytes: int = 0  # 0: TF Serving's INT32_MAX
    limits: Any = None  # servable.limits.InputLimits for decoding requests (None: DEFAULT_LIMITS)
    channel_arguments: str = ""
    tensor_content_outputs: bool = False
    enable_health: bool = True
    ssl: Any = None  # servable.config.ssl.SslOptions-like: server_key, server_cert, custom_ca, client_verify
    extra_options: list[tuple[str, Any]] = field(default_factory=list)


def parse_channel_arguments(text: str) -> list[tuple[str, Any]]:
    """``--grpc_channel_arguments``: ``k=v,k2=v2``; int-parsable values are ints (TF Serving)."""
    options: list[tuple[str, Any]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise invalid_argument(f"Malformed --grpc_channel_arguments entry {item!r}: expected key=value")
        try:
            options.append((key, int(value)))
        except ValueError:
            options.append((key, value))
    return options


def message_limit(opts: GrpcOptions) -> int:
    """The request size the deserializers check (0: none beyond gRPC's INT32_MAX)."""
    return opts.max_message_bytes if opts.max_message_bytes > 0 else 0


def server_options(opts: GrpcOptions) -> list[tuple[str, Any]]:
    """Channel arguments of either gRPC server: defaults, then --grpc_channel_arguments.

    gRPC keeps the FIRST value of a repeated key: --grpc_channel_arguments (and
    ``extra_options``) must replace the defaults, not follow them.
    """
    merged: dict[str, Any] = {
        "grpc.max_receive_message_length": -1 if message_limit(opts) else INT32_MAX,
        "grpc.max_send_message_length": -1,
        "grpc.so_reuseport": 0,
    }
    for key, value in (*parse_channel_arguments(opts.channel_arguments), *opts.extra_options):
        merged[key] = value
    return list(merged.items())


def bind_ports(server: Any, opts: GrpcOptions) -> int:
    """Add the TCP port (TLS with ``opts.ssl``) and the optional unix socket; returns the TCP port."""
    address = f"{opts.address}:{opts.port}"
    if opts.ssl is not None:
        credentials = grpc.ssl_server_credentials(
            [(_pem(opts.ssl.server_key), _pem(opts.ssl.server_cert))],
            root_certificates=_pem(opts.ssl.custom_ca) if opts.ssl.custom_ca else None,
            require_client_auth=bool(opts.ssl.client_verify),
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if opts.socket_path:
        server.add_insecure_port(f"unix:{opts.socket_path}")
    return port


_API_BY_HANDLER = {
    "predict_sync": "Predict",
    "predict_async": "Predict",
    "classify_sync": "Classify",
    "regress_sync": "Regress",
    "multi_inference_sync": "MultiInference",
    "metadata_sync": "GetModelMetadata",
}


class _CountingPredictionService(PredictionService):
    """PredictionService that counts RPCs the client abandoned (deadline, cancel).

    grpc.aio cancels the handler when the deadline passes or the client goes away; the
    work is abandoned (see ``ServingService.run_blocking``) and, because the service
    leaves it uncounted, it is counted here once: DEADLINE_EXCEEDED when the deadline
    passed, CANCELLED otherwise.
    """

    async def _run(self, context: grpc.aio.ServicerContext, fn: Any, request: Any) -> Any:
        try:
            return await super()._run(context, fn, request)
        except asyncio.CancelledError:
            count_abandoned(self.service, context.time_remaining(), request, _API_BY_HANDLER.get(getattr(fn, "__name__", ""), ""))
            raise


def count_abandoned(service: ServingService, time_remaining: float | None, request: Any, api: str) -> None:
    """Count, once, an RPC the client abandoned: DEADLINE_EXCEEDED if its deadline passed, else CANCELLED.

    Called by either gRPC front door when the service left the request uncounted
    (it gave up on the request when the client did).
    """
    request = request.message if isinstance(request, _Received) else request
    expired = time_remaining is not None and time_remaining <= 0.001
    code = Code.DEADLINE_EXCEEDED if expired else Code.CANCELLED
    name = request.model_spec.name if hasattr(request, "model_spec") else ""
    if not name and getattr(request, "tasks", None):
        name = request.tasks[0].model_spec.name
    service.record_error("GRPC", api, name, ServingError(code, "Deadline Exceeded" if expired else "Cancelled"))
    log.info("gRPC %s on %s abandoned by the client: %s", api, name, code.name)


class GrpcFrontDoor:
    """Owns the grpc.aio server. ``start()`` and ``stop()`` run on the server's event loop.

    Each RPC handler runs on the loop; model calls go to the service's worker pool, or to
    batch threads when the version batches (requests then wait for their batch without
    holding a thread). ``--grpc_server_mode=asyncio``; ``threaded.py`` is the default.
    """

    def __init__(self, service: ServingService, options: GrpcOptions, reload_config: ConfigReloader | None = None) -> None:
        self.options = options
        self.prediction = _CountingPredictionService(
            service, tensor_content_outputs=options.tensor_content_outputs, limits=options.limits
        )
        self.model = ModelService(service, reload_config)
        self.health: health.aio.HealthServicer | None = None
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None

    async def start(self) -> int:
        """Bind and start; returns the bound TCP port (useful with ``port=0`` in tests)."""
        opts = self.options
        server = grpc.aio.server(options=server_options(opts))
        server.add_generic_rpc_handlers(generic_handlers(self.prediction, self.model, max_message_bytes=message_limit(opts)))
        if opts.enable_health:
            self.health = health.aio.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
            for name in HEALTH_NAMES:
                await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.port = bind_ports(server, opts)
        await server.start()
        self.server = server
        log.info("Running gRPC ModelServer at %s:%s ...", opts.address, self.port)
        return self.port

    async def mark_not_serving(self) -> None:
        """Flip health to NOT_SERVING (first step of a graceful shutdown)."""
        if self.health is not None:
            await self.health.enter_graceful_shutdown()

    async def stop(self, grace: float) -> None:
        """Refuse new RPCs, let running ones finish for up to ``grace`` seconds."""
        if self.server is not None:
            await self.server.stop(grace)


def _pem(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
