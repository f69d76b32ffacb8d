"""Request-time faults: a servable that raises or hangs, a client that goes away mid-request.

The failing request gets an error (INTERNAL for a model bug, DEADLINE_EXCEEDED for a
hang past the client's deadline or ``--rest_api_timeout_in_ms``); every other model,
GetModelStatus and health keep answering, and a hung request's worker is returned once
the model lets go.
"""

from __future__ import annotations

import json
import socket
import time

import grpc
import pytest

from servable.rest.app import RestOptions
from servable.serving.server_core import CoreOptions
from tests.conftest import wait_until
from tests.faults import hooks
from tests.faults.conftest import GrpcClient, rest_call, rest_predict, write_python_version
from tests.serverutil import model, running_server

RUN_FAULTS = """
if x.size and x[0] < 0:
    raise RuntimeError("negative input crashed the model")
if x.size and x[0] == 999:
    hooks.hold("hang-request", 30)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("request_faults")
    steady, faulty = str(root / "steady"), str(root / "faulty")
    write_python_version(steady, 1)
    write_python_version(faulty, 1, factor=3.0, run=RUN_FAULTS)
    models = [model("steady", steady, platform="python"), model("faulty", faulty, platform="python")]
    core = CoreOptions(file_system_poll_wait_seconds=0.5, load_retry_interval_s=0.05, max_num_load_retries=0)
    with running_server(models, core=core, rest_options=RestOptions(timeout_ms=700), num_request_threads=4) as srv:
        yield srv


@pytest.fixture
def client(server):
    grpc_client = GrpcClient(server.grpc_port)
    yield grpc_client
    grpc_client.close()


def _healthy(server, client) -> None:
    assert client.predict("steady", [1.0]) == (1, [2.0])
    assert client.predict("faulty", [1.0]) == (1, [3.0])
    assert rest_predict(server.rest_port, "steady", [1.0]) == (200, {"predictions": [2.0]})
    assert client.version_state("faulty", 1).state == "AVAILABLE"


def test_servable_that_raises(server, client) -> None:
    with pytest.raises(grpc.RpcError) as info:
        client.predict("faulty", [-1.0])
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "negative input crashed the model" in info.value.details()
    status, body = rest_predict(server.rest_port, "faulty", [-1.0])
    assert status == 500 and "negative input crashed the model" in body["error"]
    _healthy(server, client)


def test_servable_that_hangs_hits_the_deadline(server, client) -> None:
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        client.predict("faulty", [999.0], timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - start < 5
    # While that worker is stuck, everything else answers.
    _healthy(server, client)
    status, body = rest_predict(server.rest_port, "faulty", [999.0])  # --rest_api_timeout_in_ms=700
    assert status == 504, (status, body)
    assert body["error"] == "Timed out waiting for notification"
    _healthy(server, client)
    hooks.event("hang-request").set()
    # The stuck workers come back: more requests than workers all succeed.
    for _ in range(12):
        assert client.predict("faulty", [2.0]) == (1, [6.0])


def test_client_disconnects_mid_request(server, client) -> None:
    # gRPC: cancel a call while the model is working on it.
    future = client.predict_stub.Predict.future(client.request("faulty", [999.0]), timeout=10)
    wait_until(hooks.entered("hang-request").is_set, message="model entered")
    future.cancel()
    assert future.cancelled() or future.exception() is not None
    # REST: a body cut short, then a full request whose connection closes before the answer.
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=5) as sock:
        sock.sendall(b"POST /v1/models/faulty:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"inst")
    body = json.dumps({"instances": [999.0]}).encode()
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=5) as sock:
        sock.sendall(b"POST /v1/models/faulty:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    _healthy(server, client)
    hooks.event("hang-request").set()
    wait_until(lambda: rest_call(server.rest_port, "GET", "/v1/models/faulty")[0] == 200, message="status")
    for _ in range(12):
        assert client.predict("faulty", [2.0]) == (1, [6.0])
