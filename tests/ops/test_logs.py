"""Request log lines on ``servable.requests``, load/unload events, no stack trace for user errors."""

from __future__ import annotations

import logging
import shutil

import grpc
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from servable.serving.server_core import CoreOptions
from tests.conftest import wait_until
from tests.ops.conftest import predict_request
from tests.serverutil import copy_version, model, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory, half_plus_two_export):
    root = tmp_path_factory.mktemp("logs")
    copy_version(half_plus_two_export, str(root / "default"), 1)
    core = CoreOptions(file_system_poll_wait_seconds=0.1, file_system_settle_seconds=0.05,
                       load_retry_interval_s=0.05, max_num_load_retries=0)
    with running_server([model("default", root / "default")], rest=False, core=core) as srv:
        with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as channel:
            yield srv, prediction_service_pb2_grpc.PredictionServiceStub(channel), root


def _request_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "servable.requests"]


def test_one_structured_line_per_request(server, caplog):
    _srv, stub, _root = server
    caplog.set_level(logging.INFO, logger="servable.requests")
    stub.Predict(predict_request([1.0]), timeout=10)
    with pytest.raises(grpc.RpcError):
        stub.Predict(predict_request([1.0], name="missing"), timeout=10)
    records = wait_until(lambda: len(_request_records(caplog)) >= 2 and _request_records(caplog), timeout=5)
    assert len(records) == 2
    ok, missing = (r.request for r in records)
    assert ok["model"] == "default" and ok["version"] == 1 and ok["signature"] == "serving_default"
    assert ok["status"] == "OK" and ok["api"] == "Predict" and ok["entrypoint"] == "GRPC" and ok["latency_ms"] >= 0
    assert missing["model"] == "missing" and missing["status"] == "NOT_FOUND"
    assert ok["id"] and missing["id"] and ok["id"] != missing["id"]
    line = records[0].getMessage()
    for part in ("id=", "model=default", "version=1", "signature=serving_default", "status=OK", "latency_ms="):
        assert part in line
    # A user error never comes with a stack trace, anywhere.
    assert not [r for r in caplog.records if r.exc_info]


def test_request_lines_can_be_turned_down(server, caplog):
    _srv, stub, _root = server
    caplog.set_level(logging.WARNING, logger="servable.requests")
    stub.Predict(predict_request([1.0]), timeout=10)
    assert _request_records(caplog) == []


def test_load_and_unload_events_with_reasons(server, half_plus_two_export, caplog):
    srv, _stub, root = server
    caplog.set_level(logging.INFO, logger="servable.model_server")
    copy_version(half_plus_two_export, str(root / "default"), 2)
    wait_until(lambda: srv.core.manager.available_versions("default") == [2], timeout=20)

    def events() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "servable.model_server"]

    wait_until(lambda: any("version 1: END" in m for m in events()), timeout=20, message="version 1 unloaded")
    messages = events()
    assert any("version 2: LOADING (load approved)" in m for m in messages), messages
    assert any("version 2: AVAILABLE" in m for m in messages), messages
    assert any("version 1: UNLOADING (no longer aspired)" in m for m in messages), messages
    shutil.rmtree(root / "default" / "2")  # back to version 1 for the other tests' sake
    wait_until(lambda: srv.core.manager.available_versions("default") == [1], timeout=20)
