"""TF Serving's HTTP/REST API on aiohttp, translated onto ``ServingService``.

One catch-all route dispatches like ``http_rest_api_handler.cc``: case-insensitive
``/v1/...`` regexes, 400 ``{"error": "Malformed request: ..."}`` for anything else under
``/v1`` (wrong method included), a plain 404 outside it. Health (``/v1/healthz``),
readiness (``/v1/readyz``), model status and CORS preflights are answered on the event
loop; every request that decodes a body, runs a model or encodes a response runs whole
on the service's worker pool (``await service.run_blocking(...)``) under the
``--rest_api_timeout_in_ms`` deadline. Prometheus metrics, when enabled, are rendered on
a default-executor thread so a busy worker pool cannot starve a scrape.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import urllib.parse
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web
from google.protobuf import json_format

from servable._proto.tensorflow.core.protobuf import meta_graph_pb2
from servable.core.status import Code, ServingError, http_status, invalid_argument
from servable.rest import json_codec
from servable.rest.json_codec import JsonLimits
from servable.serving.service import INLINE_BYTES, ModelSpecRef, ServingService

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 256 * 1024 * 1024
JSON_CONTENT_TYPE = "application/json"
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"
TIMEOUT_MESSAGE = "Timed out waiting for notification"
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}
MAX_INT64 = 2**63 - 1

_POST_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.IGNORECASE
)
_GET_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.IGNORECASE
)
_ORIGIN_RE = re.compile(r"https?://", re.IGNORECASE)


@dataclass
class RestOptions:
    """REST front door settings (TF Serving's ``--rest_api_*`` and monitoring flags).

    ``metrics_path`` None turns the Prometheus endpoint off; ``limits`` is a
    ``servable.limits.InputLimits`` (None: its defaults).
    """

    timeout_ms: int = 30000
    enable_cors: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    metrics_path: str | None = None
    limits: Any = None
    json_limits: JsonLimits = field(init=False)

    def __post_init__(self) -> None:
        limits = self.limits
        if limits is None:
            try:
                from servable.limits import DEFAULT_LIMITS

                limits = DEFAULT_LIMITS
            except ImportError:  # pragma: no cover - limits module absent
                limits = None
        self.json_limits = JsonLimits.from_input_limits(limits)

    @classmethod
    def from_flags(cls, flags: Any, limits: Any = None) -> "RestOptions":
        """Read TF Serving's flag names (missing attributes take TF Serving's defaults)."""
        metrics_path = None
        monitoring_file = getattr(flags, "monitoring_config_file", "") or ""
        if monitoring_file:
            from servable.config.monitoring import load_monitoring_config

            config = load_monitoring_config(monitoring_file)
            if config.enable:
                metrics_path = config.path or "/monitoring/prometheus/metrics"
        max_body = getattr(flags, "rest_api_max_body_bytes", DEFAULT_MAX_BODY_BYTES)
        return cls(
            timeout_ms=int(getattr(flags, "rest_api_timeout_in_ms", 30000)),
            enable_cors=bool(getattr(flags, "rest_api_enable_cors_support", False)),
            max_body_bytes=int(max_body) if max_body and max_body > 0 else DEFAULT_MAX_BODY_BYTES,
            metrics_path=metrics_path,
            limits=limits,
        )


@dataclass(frozen=True)
class _Route:
    """A matched /v1/models URL."""

    name: str
    version: int | None
    label: str | None
    verb: str  # "predict" | "classify" | "regress" | "metadata" | "" (status)


def _json_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type=JSON_CONTENT_TYPE)


def _error_response(error: ServingError) -> web.Response:
    return _json_response(json_codec.encode_error(error.message), http_status(error.code))


def _malformed(method: str, path: str) -> ServingError:
    return invalid_argument(f"Malformed request: {method} {path}")


def _parse_version(text: str | None) -> int | None:
    if text is None:
        return None
    value = int(text)
    if value > MAX_INT64:
        raise invalid_argument(f"Failed to convert version: {text} to numeric.")
    return value


def _route(method: str, path: str) -> _Route:
    """Match ``path`` as TF Serving's handler does; raises its 400s."""
    if method == "POST":
        match = _POST_RE.fullmatch(path)
        if match is None or match.group(4) not in ("predict", "classify", "regress"):
            raise _malformed(method, path)
        name, version, label, verb = match.groups()
        return _Route(
            urllib.parse.unquote(name), _parse_version(version), urllib.parse.unquote(label) if label else None, verb
        )
    if method == "GET":
        match = _GET_RE.fullmatch(path)
        if match is None:
            raise _malformed(method, path)
        name, version, label, sub = match.groups()
        if not name:
            raise invalid_argument("Missing model name in request.")
        return _Route(
            urllib.parse.unquote(name),
            _parse_version(version),
            urllib.parse.unquote(label) if label else None,
            "metadata" if sub == "metadata" else "",
        )
    raise _malformed(method, path)


def _status_json(states: list[Any]) -> bytes:
    """GetModelStatusResponse as TF Serving prints it (versions as strings, enum names)."""
    entries = []
    for state in states:
        error = state.error
        entries.append(
            {
                "version": str(state.id.version),
                "state": state.state.name,
                "status": {
                    "error_code": Code(error.code).name if error is not None else "OK",
                    "error_message": error.message if error is not None else "",
                },
            }
        )
    return json_codec.dumps({"model_version_status": entries})


def _metadata_json(name: str, version: int, signature_defs: dict[str, bytes]) -> bytes:
    """GetModelMetadataResponse as TF Serving's REST handler prints it."""
    signatures = {}
    for key, serialized in signature_defs.items():
        signature = meta_graph_pb2.SignatureDef()
        signature.ParseFromString(serialized)
        signatures[key] = json_format.MessageToDict(
            signature, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
        )
    document = {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": {"signature_def": signatures}},
    }
    return json_codec.dumps(document)


class RestHandler:
    """Request handlers; one instance per application. Coroutines run on the event loop."""

    def __init__(self, service: ServingService, options: RestOptions, server: Any = None) -> None:
        self.service = service
        self.options = options
        self.server = server
        self.limits = options.json_limits

    # -- entry ----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.rel_url.raw_path
        lowered = path.lower()
        if lowered.startswith("/v1/"):  # TF Serving dispatches (?i)/v1/.* only: "/v1" alone is a plain 404
            response = await self._handle_v1(request, path, lowered)
            if self.options.enable_cors:
                response.headers.update(CORS_HEADERS)
            return response
        if self.options.metrics_path is not None and path == self.options.metrics_path and request.method == "GET":
            return await self._metrics()
        return web.Response(status=404, text="<html><body><h1>404 Not Found</h1></body></html>", content_type="text/html")

    async def _handle_v1(self, request: web.Request, path: str, lowered: str) -> web.Response:
        method = request.method
        if method == "OPTIONS":
            return self._preflight(request)
        if lowered == "/v1/healthz" and method == "GET":
            return _json_response(json_codec.dumps({"status": "alive"}))
        if lowered == "/v1/readyz" and method == "GET":
            return self._readiness()
        try:
            route = _route(method, path)
        except ServingError as error:
            self.service.record_error("REST", "", "", error)
            return _error_response(error)
        if route.verb in ("predict", "classify", "regress"):
            return await self._inference(request, route)
        if route.verb == "metadata":
            return await self._metadata(route)
        return self._status(route)

    def _preflight(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin", "")
        if _ORIGIN_RE.match(origin):
            return web.Response(status=200)
        return _error_response(ServingError(Code.FAILED_PRECONDITION, "Origin header is missing in CORS preflight"))

    def _readiness(self) -> web.Response:
        server = self.server
        ready = server is None or bool(server.is_ready())
        if ready:
            return _json_response(json_codec.dumps({"status": "ready"}))
        reason = "server is shutting down" if server is not None and getattr(server, "shutting_down", False) else (
            "server is not ready: models are still loading"
        )
        return _json_response(json_codec.encode_error(reason), 503)

    async def _metrics(self) -> web.Response:
        metrics = getattr(self.server, "metrics", None) or self.service.metrics
        text = await asyncio.to_thread(metrics.render)
        return web.Response(body=text, status=200, headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})

    # -- status and metadata --------------------------------------------------------------------

    def _status(self, route: _Route) -> web.Response:
        """GetModelStatus on the loop (a dictionary read); labels are ignored, as in TF Serving."""
        start = time.perf_counter()
        try:
            states = self.service.model_status(route.name, route.version)
        except ServingError as error:
            self.service.record_error("REST", "", route.name, error)
            return _error_response(error)
        self._record_ok(route.name, start)
        return _json_response(_status_json(states))

    async def _metadata(self, route: _Route) -> web.Response:
        start = time.perf_counter()
        spec = ModelSpecRef(route.name, route.version, route.label)

        def work() -> bytes:
            result = self.service.model_metadata(spec, ["signature_def"], entrypoint="REST")
            return _metadata_json(route.name, result.id.version, result.signature_defs)

        try:
            body = await self.service.run_blocking(work)
        except ServingError as error:
            self.service.record_error("REST", "", route.name, error)
            return _error_response(error)
        self._record_ok(route.name, start)
        return _json_response(body)

    def _record_ok(self, model_name: str, start: float) -> None:
        observe = getattr(self.service.metrics, "observe_request", None)
        if observe is not None:
            observe("REST", "", model_name, None, "", Code.OK, time.perf_counter() - start, 0)

    # -- predict / classify / regress -----------------------------------------------------------

    async def _read_body(self, request: web.Request) -> bytes:
        """The body, gzip-decoded when ``Content-Encoding: gzip``; 413 beyond ``max_body_bytes``.

        Decoding happens here, not in aiohttp (the runner is created with
        ``auto_decompress=False``), to answer as TF Serving does: only gzip is decoded,
        any other ``Content-Encoding`` is ignored and the body parsed as sent; a corrupt
        gzip stream is a 400 with a JSON error; and the limit counts decoded bytes, read
        in bounded steps so a small "gzip bomb" never inflates past it.
        """
        limit = self.options.max_body_bytes
        gzipped = _is_gzip(request.headers.get("Content-Encoding", ""))
        declared = request.content_length
        if declared is not None and declared > limit:
            raise _too_large(declared, limit)
        chunks = []
        size = 0
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
        try:
            async for chunk in request.content.iter_any():  # received buffers as they are: no re-joining
                if decoder is None:
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(size, limit)
                    chunks.append(chunk)
                    continue
                data = chunk
                while data:
                    piece = decoder.decompress(data, limit + 1 - size)
                    size += len(piece)
                    if size > limit:
                        raise _too_large(size, limit)
                    chunks.append(piece)
                    data = decoder.unconsumed_tail
                    if decoder.eof:
                        break
        except ServingError:
            raise
        except zlib.error as error:
            raise invalid_argument(f"Failed to decompress the gzip request body: {error}") from None
        except Exception as error:  # client gone mid-body
            raise invalid_argument(f"Failed to read request body: {error}") from None
        if decoder is not None and not decoder.eof:
            raise invalid_argument("Failed to decompress the gzip request body: the stream is truncated")
        return b"".join(chunks)

    async def _inference(self, request: web.Request, route: _Route) -> web.Response:
        try:
            body = await self._read_body(request)
        except ServingError as error:
            self.service.record_error("REST", route.verb, route.name, error)
            if error.code == Code.RESOURCE_EXHAUSTED:
                return _json_response(json_codec.encode_error(error.message), 413)
            return _error_response(error)
        work: Callable[[], bytes] = {
            "predict": self._predict_work,
            "classify": self._classify_work,
            "regress": self._regress_work,
        }[route.verb](route, body)
        timeout = self.options.timeout_ms / 1000 if self.options.timeout_ms > 0 else None
        if route.verb == "predict" and len(body) <= INLINE_BYTES:
            answer: Any = self._predict_inline(route, body)
        else:
            answer = self.service.run_blocking(work)
        try:
            payload = await asyncio.wait_for(answer, timeout)
        except ServingError as error:
            return _error_response(error)
        except asyncio.TimeoutError:
            error = ServingError(Code.DEADLINE_EXCEEDED, TIMEOUT_MESSAGE)
            self.service.record_error("REST", route.verb, route.name, error)
            return _error_response(error)
        except Exception as error:  # a bug of ours: answer 500 rather than drop the connection
            log.exception("REST %s on %s failed", route.verb, route.name)
            return _error_response(ServingError(Code.INTERNAL, f"{type(error).__name__}: {error}"))
        return _json_response(payload)

    def _pre_service(self, route: _Route, fn: Callable[[], Any]) -> Any:
        """Run a body check that precedes the service call, counting its failures."""
        try:
            return fn()
        except ServingError as error:
            self.service.record_error("REST", route.verb, route.name, error)
            raise

    async def _predict_inline(self, route: _Route, body: bytes) -> bytes:
        """``:predict`` for a small body: parsed, decoded and encoded on the event loop.

        Why: with batching on, the request then waits for its batch without holding a
        worker thread (``ServingService.predict_async``); a body of at most
        ``INLINE_BYTES`` parses in well under a millisecond. Large outputs are encoded on
        the worker pool. Same errors and counting as ``_predict_work``.
        """
        parsed = self._pre_service(route, lambda: json_codec.parse_predict_request(body))
        spec = ModelSpecRef(route.name, route.version, route.label, parsed.signature_name)
        limits = self.limits
        result = await self.service.predict_async(
            spec, lambda signature: json_codec.decode_predict_inputs(parsed, signature, limits), entrypoint="REST"
        )
        row_format = json_codec.request_format(parsed) == "row"
        if sum(getattr(array, "nbytes", 0) for array in result.outputs.values()) > INLINE_BYTES:
            return await self.service.run_blocking(json_codec.encode_predict_response, result.outputs, row_format)
        return json_codec.encode_predict_response(result.outputs, row_format)

    def _predict_work(self, route: _Route, body: bytes) -> Callable[[], bytes]:
        def work() -> bytes:
            parsed = self._pre_service(route, lambda: json_codec.parse_predict_request(body))
            spec = ModelSpecRef(route.name, route.version, route.label, parsed.signature_name)
            limits = self.limits
            result = self.service.predict(
                spec, lambda signature: json_codec.decode_predict_inputs(parsed, signature, limits), entrypoint="REST"
            )
            return json_codec.encode_predict_response(result.outputs, json_codec.request_format(parsed) == "row")

        return work

    def _classify_work(self, route: _Route, body: bytes) -> Callable[[], bytes]:
        def work() -> bytes:
            parsed = self._pre_service(route, lambda: json_codec.parse_examples_request(body, self.limits))
            spec = ModelSpecRef(route.name, route.version, route.label, parsed.signature_name)
            result = self.service.classify(spec, parsed.examples, entrypoint="REST")
            return json_codec.encode_classify_results(result.classes, result.scores)

        return work

    def _regress_work(self, route: _Route, body: bytes) -> Callable[[], bytes]:
        def work() -> bytes:
            parsed = self._pre_service(route, lambda: json_codec.parse_examples_request(body, self.limits))
            spec = ModelSpecRef(route.name, route.version, route.label, parsed.signature_name)
            result = self.service.regress(spec, parsed.examples, entrypoint="REST")
            return json_codec.encode_regress_results(result.values)

        return work


def _is_gzip(content_encoding: str) -> bool:
    """Whether the request's ``Content-Encoding`` is gzip (case-insensitive, x-gzip too)."""
    codings = [part.strip().lower() for part in content_encoding.split(",") if part.strip()]
    return codings in (["gzip"], ["x-gzip"])


def _too_large(size: int, limit: int) -> ServingError:
    return ServingError(
        Code.RESOURCE_EXHAUSTED,
        f"Request body of {size} bytes is larger than the server's limit of {limit} bytes; "
        "raise it with --rest_api_max_body_bytes.",
    )


def create_app(service: ServingService, options: RestOptions | None = None, server: Any = None) -> web.Application:
    """The REST application (called by ``ModelServer._start_rest`` on the event loop)."""
    options = options or RestOptions()
    handler = RestHandler(service, options, server)
    # Bodies are read in chunks against max_body_bytes by the handler itself.
    app = web.Application(client_max_size=max(options.max_body_bytes, 1) + 1)
    app.router.add_route("*", "/{tail:.*}", handler.handle)
    return app
