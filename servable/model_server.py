"""The model server process: core, service and both front doors on one event loop.

``ModelServer.run()`` is the blocking entry used by ``main()``; ``start_in_thread()`` /
``stop()`` run the same thing on a background thread (tests, notebooks, embedding).

Threads: gRPC is grpc's synchronous server (``grpc_api/threaded.py``): each RPC runs on
one of its pool threads, health and status on a separate control pool
(``--grpc_server_mode=asyncio`` puts it on the event loop instead). One asyncio event loop
runs the REST (aiohttp) server and answers health, status and metrics itself; REST model
calls go to the service's worker pool or to batch threads. Loads and unloads run on the
manager's pools; the filesystem source has its own thread.

Shutdown (SIGTERM/SIGINT, or ``stop()``): readiness (503) and gRPC health (NOT_SERVING)
flip first while both front doors still answer, so probes and load balancers see it; the
requests in flight then get up to the grace period to finish, the front doors stop, every
model is unloaded and the process exits 0.

TLS: with an ``SslConfig`` (``--ssl_config_file``) gRPC serves TLS as in TF Serving, and
REST serves HTTPS from the same key, certificate and client CA (TF Serving's REST is
plaintext only); ``client_verify`` makes both require a client certificate signed by
``custom_ca`` (mTLS).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from servable.core.loader import Loader
from servable.grpc_api.server import GrpcFrontDoor, GrpcOptions
from servable.serving.metrics import ServingMetrics
from servable.serving.server_core import CoreOptions, ServerCore
from servable.serving.service import ServingService

log = logging.getLogger(__name__)


@dataclass
class ServerSettings:
    """Everything the process needs, already validated (built from flags by server.py)."""

    models: Sequence[Any]  # ModelConfig-like: name, base_path, platform, version_policy, version_labels
    core: CoreOptions = field(default_factory=CoreOptions)
    grpc: GrpcOptions = field(default_factory=GrpcOptions)
    rest_port: int | None = None  # None: REST off (flag value 0, as in TF Serving); 0 here: any free port
    rest_address: str = "0.0.0.0"
    rest_options: Any = None  # passed to servable.rest.app.create_app
    num_request_threads: int = 8
    grpc_server_mode: str = "threads"  # or "asyncio" (grpc.aio); see make_grpc_front_door
    shutdown_grace_s: float = 15.0
    loader_factories: Mapping[str, Callable[[str, int, str], Loader]] = field(default_factory=dict)
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: float = 0
    on_ready: Callable[["ModelServer"], None] | None = None
    batch_scheduler: Any = None  # servable.batching.BatchScheduler shared by every model (--enable_batching)
    model_process: Any = None  # servable.tf.worker.ModelProcess (--tensorflow_worker_process), closed last
    batch_observers: Any = None  # settings.BatchObservers: batches reported to metrics
    rest_tls: bool = False  # --rest_api_enable_ssl: REST serves HTTPS with grpc.ssl (the --ssl_config_file)


def _check_transition(proto: Any) -> None:
    """ServerCore::ReloadConfig: only ModelConfigList -> ModelConfigList after the first config."""
    if proto.WhichOneof("config") != "model_config_list":
        from servable.core.status import failed_precondition

        raise failed_precondition(
            "Cannot transition to requested config. It is only legal to transition from one "
            "ModelConfigList to another."
        )


class ModelServer:
    """Wires ServerCore, ServingService and the front doors together."""

    def __init__(self, settings: ServerSettings, metrics: ServingMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or ServingMetrics()
        self.core = ServerCore(settings.core, settings.loader_factories)
        self.core.monitor.subscribe(self._on_state)
        self._batch_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        # TF Serving labels batching_session:queuing_latency by the shared scheduler's pool.
        self._thread_pool_name = str(getattr(settings.batch_scheduler, "thread_pool_name", "") or "batch_threads")
        if settings.batch_observers is not None:
            settings.batch_observers.callbacks.append(self._on_batch)
        self.service = ServingService(
            self.core.manager, labels=self.core.labels, metrics=self.metrics, num_threads=settings.num_request_threads
        )
        self.grpc = make_grpc_front_door(settings, self.service, self.reload_config)
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self.shutting_down = False
        self._rest_runner: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._startup_error: BaseException | None = None
        self._config_watcher: Any = None
        self._loading_since: dict[Any, tuple[float, str]] = {}  # id -> (LOADING time, version path)

    # -- state changes -------------------------------------------------------------------

    def _on_state(self, state: Any) -> None:
        """Every version state change (manager threads): state gauge, load time, event log."""
        self.metrics.model_state.labels(state.id.name, str(state.id.version)).set(int(state.state.value))
        name = state.state.name
        if name == "LOADING":
            self._loading_since[state.id] = (time.monotonic(), self._version_path(state.id))
        else:
            loading = self._loading_since.pop(state.id, None)
            if loading is not None:
                started, model_path = loading
                if name == "AVAILABLE":
                    seconds = time.monotonic() - started
                    self.metrics.model_load_seconds.labels(state.id.name).observe(seconds)
                    self.metrics.observe_model_load(model_path, True, seconds)
                    self._record_warmup(state.id, model_path)
                elif state.error is not None:
                    self.metrics.observe_model_load(model_path, False)
        if state.error is not None:
            log.warning("model %s version %s: %s (%s: %s)", state.id.name, state.id.version, state.state.name,
                        state.error.code.name, state.error.message)
        else:
            log.info("model %s version %s: %s (%s)", state.id.name, state.id.version, state.state.name, state.reason)

    def _version_path(self, servable_id: Any) -> str:
        """The version folder, ``<base_path>/<version>`` (TF's ``model_path`` label: the export dir)."""
        model = self.core.models.get(servable_id.name)
        base = getattr(model, "base_path", "") or ""
        return os.path.join(base, str(servable_id.version)) if base else str(servable_id.version)

    def _record_warmup(self, servable_id: Any, model_path: str) -> None:
        """Count the warmup records a version replayed (``servable_model_warmup_records`` and
        ``:tensorflow:serving:model_warmup_records_read``; ``model_warmup_latency`` when the
        servable reports ``warmup_seconds``).

        Called on the manager thread that published AVAILABLE; the version is already
        routable, so a handle is taken on it to read ``warmup_records`` (0 when absent).
        Only records read from a warmup file count (synthetic warmup reports 0), as in TF
        Serving; a failed warmup fails the load and is counted by load_attempt_count only.
        """
        from servable.core.ids import ServableRequest
        from servable.core.status import ServingError

        try:
            with self.core.manager.get_handle(ServableRequest.specific(servable_id.name, servable_id.version)) as handle:
                records = int(getattr(handle.servable, "warmup_records", 0) or 0)
                seconds = getattr(handle.servable, "warmup_seconds", None)
        except ServingError:  # unloaded again already
            return
        if records:
            self.metrics.warmup_records.labels(servable_id.name, "OK").inc(records)
        if records or seconds is not None:
            self.metrics.observe_warmup(model_path, records, float(seconds) if seconds is not None else None)

    def _on_batch(self, queue_id: Any, batch_size: int, padded_size: int, queue_seconds: float) -> None:
        """A batch ran (batch thread): record its padded size and queue time."""
        labels = (queue_id.model_name, queue_id.signature)
        children = self._batch_children.get(labels)
        if children is None:  # labels() costs a lock and a dict lookup: cache per label set
            children = (self.metrics.batch_size.labels(*labels), self.metrics.batch_queue_seconds.labels(*labels))
            self._batch_children[labels] = children
        children[0].observe(padded_size)
        children[1].observe(queue_seconds)
        self.metrics.observe_batch(self._thread_pool_name, queue_seconds)

    def is_ready(self) -> bool:
        return not self.shutting_down and self.core.is_ready()

    def reload_config(self, config_proto: Any) -> None:
        """HandleReloadConfigRequest: apply a ModelServerConfig proto (worker thread)."""
        from servable.config.model_config import models_from_proto

        _check_transition(config_proto)
        self.core.apply_config(models_from_proto(config_proto, base_dir=None), require_available=True)

    def apply_config_file(self, path: str) -> None:
        """Parse and apply a ModelServerConfig text file (config watcher thread).

        An empty file (an unset config) is refused as TF Serving refuses it on reload;
        the current config keeps serving.
        """
        from servable._proto.tensorflow_serving.config import model_server_config_pb2
        from servable.config.errors import load_text_proto
        from servable.config.model_config import models_from_proto

        proto = load_text_proto(path, model_server_config_pb2.ModelServerConfig(), "model config file")
        _check_transition(proto)
        self.core.apply_config(models_from_proto(proto, base_dir=os.path.dirname(os.path.abspath(path))))

    # -- running ---------------------------------------------------------------------------

    async def serve(self) -> None:
        """Start everything, wait for a stop request, shut down gracefully."""
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        settings = self.settings
        self.core.start()
        await asyncio.to_thread(self.core.apply_config, list(settings.models))
        self.grpc_port = await self.grpc.start()
        if settings.rest_port is not None:
            await self._start_rest()
        if settings.model_config_file and settings.model_config_file_poll_wait_seconds > 0:
            from servable.serving.config_watcher import ConfigFileWatcher

            self._config_watcher = ConfigFileWatcher(
                settings.model_config_file,
                settings.model_config_file_poll_wait_seconds,
                self.apply_config_file,
                use_file_events=settings.core.use_file_events,
            )
            self._config_watcher.start()
        self._started.set()
        if settings.on_ready is not None:
            settings.on_ready(self)
        await self._stop_event.wait()
        await self._shutdown()

    async def _start_rest(self) -> None:
        from aiohttp import web

        from servable.rest.app import create_app

        app = create_app(self.service, self.settings.rest_options, server=self)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=max(self.settings.shutdown_grace_s, 0.1),
            auto_decompress=False,  # the REST handler decodes gzip itself (TF Serving's rules)
            # aiohttp pauses reading a connection once 2 x read_bufsize bytes wait (64 KiB by
            # default): a 483 KB :predict body then arrives in pause/resume steps. With 1 MiB it
            # streams in one go: body read p50 0.48-0.51 -> 0.41-0.42 ms, two interleaved pairs of
            # benchmarks/rest_phases.py (docs/performance.md).
            read_bufsize=1 << 20,
        )
        await runner.setup()
        tls = self.settings.grpc.ssl if self.settings.rest_tls else None
        ssl_context = rest_ssl_context(tls) if tls is not None else None
        site = web.TCPSite(
            runner, self.settings.rest_address, self.settings.rest_port, reuse_address=True, ssl_context=ssl_context
        )
        await site.start()
        self._rest_runner = runner
        sockets = site._server.sockets if site._server is not None else []  # noqa: SLF001 (port 0 in tests)
        self.rest_port = sockets[0].getsockname()[1] if sockets else self.settings.rest_port
        # TF Serving's line, which test harnesses wait for: "localhost" when bound to every address.
        shown = "localhost" if self.settings.rest_address in ("0.0.0.0", "::", "") else self.settings.rest_address
        log.info("Exporting HTTP/REST API at:%s:%s%s ...", shown, self.rest_port, " (HTTPS)" if ssl_context is not None else "")

    async def _shutdown(self) -> None:
        grace = self.settings.shutdown_grace_s
        deadline = time.monotonic() + grace
        self.shutting_down = True
        log.info("shutting down: %d request(s) in flight, draining for up to %.1fs", self.service.in_flight, grace)
        if self._config_watcher is not None:
            self._config_watcher.stop()
        await self.grpc.mark_not_serving()
        # Front doors stay open while the work in flight drains: probes see NOT_SERVING/503.
        if not await asyncio.to_thread(self.service.wait_idle, grace):
            log.warning("shutdown: %d request(s) still running after %.1fs", self.service.in_flight, grace)
        remaining = max(deadline - time.monotonic(), 0.0)
        stops = [self.grpc.stop(remaining)]
        if self._rest_runner is not None:
            stops.append(self._rest_runner.cleanup())
        await asyncio.gather(*stops, return_exceptions=True)
        await asyncio.to_thread(self.core.stop, grace)
        if self.settings.batch_scheduler is not None:
            await asyncio.to_thread(self.settings.batch_scheduler.stop, 5.0)
        if self.settings.model_process is not None:
            await asyncio.to_thread(self.settings.model_process.close)
        self.service.shutdown(wait=False)
        log.info("shutdown complete")

    def request_stop(self) -> None:
        """Ask the server to shut down; safe from any thread and from signal handlers."""
        if self._loop is not None and self._stop_event is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the exit code (main thread only)."""

        async def runner() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
            await self.serve()

        asyncio.run(runner())
        return 0

    # -- background thread (tests, embedding) ---------------------------------------------

    def start_in_thread(self, timeout: float = 120.0) -> "ModelServer":
        def target() -> None:
            try:
                asyncio.run(self.serve())
            except BaseException as error:  # surfaced to the caller of start_in_thread
                self._startup_error = error
                self._started.set()

        self._thread = threading.Thread(target=target, name="servable-loop", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("server did not start in time")
        if self._startup_error is not None:
            raise self._startup_error
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)


def make_grpc_front_door(settings: ServerSettings, service: ServingService, reload_config: Any) -> Any:
    """The gRPC front door ``settings.grpc_server_mode`` names (``--grpc_server_mode``).

    "threads" (default): grpc's synchronous server runs each RPC start to end on one
    thread, as TF Serving does. On 2 vCPUs that halves the p50 of a small request at low
    load against "asyncio" (grpc.aio receiving on the loop, the model on a worker and
    back: two more thread wake-ups), serves more 1-row requests/s without batching, and,
    with batching, more 32-row rows/s and lone requests at no-batching latency (a request
    finding its queue idle runs on its own thread). "asyncio" batched 1-row requests at
    c=64 5-25% faster in the same runs (one loop wake-up per batch instead of one thread
    per request). Measured with ``benchmarks/grpc_modes.py``; see docs/performance.md.
    """
    mode = settings.grpc_server_mode
    if mode == "threads":
        from servable.grpc_api.threaded import ThreadedGrpcFrontDoor

        return ThreadedGrpcFrontDoor(
            service, settings.grpc, reload_config=reload_config, num_threads=settings.num_request_threads
        )
    if mode == "asyncio":
        return GrpcFrontDoor(service, settings.grpc, reload_config=reload_config)
    raise ValueError(f"Unknown gRPC server mode {mode!r}: expected threads or asyncio")


def rest_ssl_context(config: Any) -> ssl.SSLContext:
    """A server ``SSLContext`` from an ``SslConfig`` (PEM bytes, as ``--ssl_config_file`` holds).

    ``client_verify`` requires a client certificate signed by ``custom_ca``; ``custom_ca``
    alone asks for one but accepts clients without (gRPC's behaviour with the same config).
    The key and certificate pass through a private temporary directory that is removed
    at once (``load_cert_chain`` reads files only).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="servable-tls-") as directory:
        os.chmod(directory, 0o700)
        cert_path = os.path.join(directory, "cert.pem")
        key_path = os.path.join(directory, "key.pem")
        for path, data in ((cert_path, config.server_cert), (key_path, config.server_key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data if isinstance(data, bytes) else data.encode())
        context.load_cert_chain(cert_path, key_path)
    if config.custom_ca:
        ca = config.custom_ca.decode() if isinstance(config.custom_ca, bytes) else config.custom_ca
        context.load_verify_locations(cadata=ca)
        context.verify_mode = ssl.CERT_REQUIRED if config.client_verify else ssl.CERT_OPTIONAL
    return context
