"""The per-request log line on ``servable.requests``: who writes it, and how cheaply.

``ServingService`` hands each finished request's fields to ``sink(fields)``. By default
(embedders, tests) that logs the line at once through ``logging``, with the fields as
``record.request``. The server's ``main`` calls ``defer_request_lines()``: from then on the
fields are queued and a background thread writes them in batches, because building a
``LogRecord`` and formatting it costs more than the rest of a small request's bookkeeping
(py-spy at 64 concurrent 1-row requests, 2 vCPUs: the writer held the GIL a fifth of the
time). When the line would go to nothing but the server's own stderr handler
(``mark_server_handler``), the writer formats the batch itself, text identical to what
that handler's ``logging.Formatter`` prints, and writes it with one ``write``; any other
setup (a handler or filter an operator added, a changed format) gets real records.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

request_log = logging.getLogger("servable.requests")

MESSAGE = "request id=%s entrypoint=%s api=%s model=%s version=%s signature=%s status=%s latency_ms=%.3f"
SERVER_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FLUSH_S = 0.02  # how long deferred request lines may wait to be written

Fields = tuple  # (request_id, entrypoint, api, model, version, signature, status_name, latency_s)


def write_request_line(fields: Fields) -> None:
    """Log one request line on ``servable.requests`` (INFO), with the fields as ``record.request``."""
    request_id, entrypoint, api, model_name, version, signature, status, latency = fields
    request_log.info(
        MESSAGE, request_id, entrypoint, api, model_name, version, signature, status, latency * 1e3,
        extra={"request": {
            "id": request_id, "entrypoint": entrypoint, "api": api, "model": model_name, "version": version,
            "signature": signature, "status": status, "latency_ms": round(latency * 1e3, 3),
        }},
    )


sink: Callable[[Fields], None] = write_request_line
_server_handler: logging.StreamHandler | None = None


def mark_server_handler(handler: logging.StreamHandler) -> None:
    """Declare the server's own stderr handler (format ``SERVER_FORMAT``); called by ``main``."""
    global _server_handler
    _server_handler = handler


def _direct_handler() -> logging.StreamHandler | None:
    """The server's handler if a request record would reach it and nothing else, else None.

    Walks the logger chain as ``Logger.callHandlers`` does. Checked once per batch, so an
    operator's change to logging at run time takes effect within one flush interval.
    """
    handler = _server_handler
    if handler is None or not request_log.isEnabledFor(logging.INFO):
        return None
    if type(handler) is not logging.StreamHandler or handler.filters or handler.level > logging.INFO:
        return None
    formatter = handler.formatter
    if (type(formatter) is not logging.Formatter or formatter._fmt != SERVER_FORMAT  # noqa: SLF001
            or formatter.datefmt is not None or formatter.converter is not time.localtime
            or formatter.default_time_format != logging.Formatter.default_time_format
            or formatter.default_msec_format != logging.Formatter.default_msec_format):
        return None
    logger: logging.Logger | None = request_log
    seen: list[logging.Handler] = []
    while logger is not None:
        if logger.filters and logger is request_log:
            return None
        seen.extend(logger.handlers)
        if not logger.propagate:
            break
        logger = logger.parent
    return handler if seen == [handler] else None


class _Clock:
    """``logging.Formatter.formatTime``'s default text, with the strftime part cached per second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def asctime(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        return "%s,%03d" % (self._text, int((now - second) * 1000))


def _write_direct(handler: logging.StreamHandler, batch: list[Fields], clock: _Clock) -> None:
    """Write a batch as the server handler would print it, in one write and one flush."""
    prefix = f"{clock.asctime(time.time())} INFO {request_log.name}: "
    text = "".join(
        prefix + MESSAGE % (f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7] * 1e3) + handler.terminator
        for f in batch
    )
    with handler.lock:
        stream = handler.stream
        stream.write(text)
        stream.flush()


def defer_request_lines() -> Callable[[], None]:
    """Write request lines from a background thread from now on; returns ``stop()``.

    Called once by the server's ``main`` (not by embedders or tests, which keep the
    synchronous default). Why: the request path runs on front-door threads and event
    loops, which must never wait on a slow stderr reader, and one write per batch is
    cheaper than one per request. ``stop()`` writes what is queued and restores the
    synchronous writer.
    """
    global sink
    lines: queue.SimpleQueue = queue.SimpleQueue()
    clock = _Clock()

    def drain() -> None:
        stopping = False
        while not stopping:
            batch = [lines.get()]
            # Let more lines gather: one wake-up of this thread per interval under load
            # rather than one per request (each wake-up competes with requests for a core
            # and the GIL).
            time.sleep(FLUSH_S)
            while True:
                try:
                    batch.append(lines.get_nowait())
                except queue.Empty:
                    break
            if None in batch:
                stopping = True
                batch = [fields for fields in batch if fields is not None]
            handler = _direct_handler()
            if handler is not None:
                try:
                    _write_direct(handler, batch, clock)
                except Exception:  # noqa: BLE001 - a closed stderr must not end the writer
                    pass
                continue
            for fields in batch:
                try:
                    write_request_line(fields)
                except Exception:  # noqa: BLE001 - a logging failure must not end the writer
                    pass

    writer = threading.Thread(target=drain, name="servable-request-log", daemon=True)
    writer.start()
    sink = lines.put

    def stop() -> None:
        global sink
        sink = write_request_line
        lines.put(None)
        writer.join(timeout=5)

    return stop
