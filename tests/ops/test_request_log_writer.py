"""The deferred request-log writer: text identical to ``logging``'s, records when anyone else listens."""

from __future__ import annotations

import io
import logging
import re
import time

import pytest

from servable.serving import request_log
from tests.conftest import wait_until

FIELDS = ("ab12cd3400000001", "GRPC", "Predict", "mnist", 3, "serving_default", "OK", 0.0012345)


@pytest.fixture
def server_logging():
    """The server's handler on a StringIO, the only one a request record reaches; restored after.

    (On ``servable.requests`` itself, not propagating; each test first calls ``_only``:
    pytest's log capture adds its own handlers when the test body starts.)
    """
    logger = request_log.request_log
    saved = (request_log._server_handler, logger.level)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(request_log.SERVER_FORMAT))
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    request_log.mark_server_handler(handler)
    stop = request_log.defer_request_lines()
    try:
        yield stream, handler, stop
    finally:
        stop()
        logger.handlers[:] = [h for h in logger.handlers if h is not handler]
        logger.propagate = True
        request_log._server_handler, level = saved
        logger.setLevel(level)


def _only(handler: logging.Handler) -> None:
    request_log.request_log.handlers[:] = [handler]


def _logging_text(handler: logging.Handler, fields: tuple) -> str:
    """What logging itself prints for the line (the reference the direct writer must match)."""
    captured = io.StringIO()
    reference = logging.StreamHandler(captured)
    reference.setFormatter(handler.formatter)
    logger = request_log.request_log
    saved = logger.handlers[:]
    logger.handlers[:] = [reference]
    try:
        request_log.write_request_line(fields)
    finally:
        logger.handlers[:] = saved
    return captured.getvalue()


def _strip_time(text: str) -> str:
    return re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", "TIME ", text, flags=re.M)


def test_direct_text_is_what_logging_prints(server_logging):
    stream, handler, stop = server_logging
    _only(handler)
    assert request_log._direct_handler() is handler
    request_log.sink(FIELDS)
    request_log.sink(FIELDS[:6] + ("NOT_FOUND", 0.5))
    stop()  # writes what is queued
    written = stream.getvalue()
    expected = _logging_text(handler, FIELDS) + _logging_text(handler, FIELDS[:6] + ("NOT_FOUND", 0.5))
    assert _strip_time(written) == _strip_time(expected)
    assert written.count("\n") == 2 and written.startswith(time.strftime("%Y-%m-%d"))


def test_clock_matches_formatter_time():
    formatter = logging.Formatter(request_log.SERVER_FORMAT)
    clock = request_log._Clock()
    for created in (1_700_000_000.0, 1_700_000_000.9996, 1_700_000_001.25, 1_700_000_001.999):
        record = logging.LogRecord("x", logging.INFO, "", 0, "", None, None)
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0
        assert clock.asctime(created) == formatter.formatTime(record)


def test_an_added_handler_gets_real_records(server_logging):
    stream, handler, stop = server_logging
    _only(handler)
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    extra = Collect()
    request_log.request_log.addHandler(extra)
    try:
        assert request_log._direct_handler() is None
        request_log.sink(FIELDS)
        wait_until(lambda: records, timeout=5, message="record delivered")
    finally:
        request_log.request_log.removeHandler(extra)
    assert records[0].request["model"] == "mnist" and records[0].request["latency_ms"] == 1.234
    assert "model=mnist version=3" in stream.getvalue()  # the server handler still prints it


def test_changed_format_or_level_is_honoured(server_logging):
    stream, handler, stop = server_logging
    _only(handler)
    handler.setFormatter(logging.Formatter("%(levelname)s|%(message)s"))
    assert request_log._direct_handler() is None
    request_log.sink(FIELDS)
    wait_until(lambda: "INFO|request id=" in stream.getvalue(), timeout=5, message="line via logging")
    request_log.request_log.setLevel(logging.WARNING)
    assert request_log._direct_handler() is None
