"""gRPC request size limit, client deadlines against a slow model, ``--grpc_channel_arguments``."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc

from servable.core.status import ServingError
from servable.grpc_api.server import GrpcOptions, parse_channel_arguments
from tests.conftest import wait_until
from tests.ops.conftest import SLOW_DELAY_S, predict_request
from tests.serverutil import copy_version, model, running_server

MAX_MESSAGE = 4096


@pytest.fixture(scope="module", params=["threads", "asyncio"])
def server(request, tmp_path_factory, slow_export, half_plus_two_export):
    root = tmp_path_factory.mktemp("limits")
    copy_version(slow_export, str(root / "slow"), 1)
    copy_version(half_plus_two_export, str(root / "default"), 1)
    options = GrpcOptions(address="127.0.0.1", port=0, max_message_bytes=MAX_MESSAGE)
    with running_server([model("slow", root / "slow"), model("default", root / "default")], rest=False,
                        grpc_options=options, num_request_threads=1, grpc_server_mode=request.param) as srv:
        with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as channel:
            yield srv, channel


def _healthy(channel) -> bool:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def test_oversized_request_is_resource_exhausted_then_next_succeeds(server):
    srv, channel = server
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(predict_request([1.0] * 4 * MAX_MESSAGE), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--grpc_max_message_bytes" in info.value.details() and str(MAX_MESSAGE) in info.value.details()
    reply = stub.Predict(predict_request([1.0, 2.0]), timeout=10)
    assert list(reply.outputs["y"].float_val) == [2.5, 3.0]


def test_deadline_shorter_than_model_is_deadline_exceeded_and_server_stays_healthy(server):
    srv, channel = server
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    before = srv.metrics.request_count("slow", "DEADLINE_EXCEEDED"), srv.metrics.request_count("slow", "OK")
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(predict_request([1.0], name="slow"), timeout=0.2)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - start < SLOW_DELAY_S
    assert _healthy(channel)
    wait_until(lambda: srv.service.in_flight == 0, timeout=10, message="abandoned work finished")
    # Counted once, as DEADLINE_EXCEEDED (not also as OK when the model finished later).
    assert srv.metrics.request_count("slow", "DEADLINE_EXCEEDED") == before[0] + 1
    assert srv.metrics.request_count("slow", "OK") == before[1]
    reply = stub.Predict(predict_request([2.0]), timeout=10)
    assert reply.outputs["y"].float_val[0] == 3.0


def test_expired_request_is_never_run(server):
    """One worker: B queues behind A and its deadline passes before a worker is free."""
    srv, channel = server
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    runs_before = _runtime_count(srv, "slow")
    results: list = []
    first = threading.Thread(target=lambda: results.append(stub.Predict(predict_request([1.0], name="slow"), timeout=10)))
    first.start()
    wait_until(lambda: srv.service.in_flight == 1, timeout=5)
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(predict_request([4.0], name="slow"), timeout=0.2)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    first.join(10)
    assert results and results[0].outputs["y"].float_val[0] == 2.5
    wait_until(lambda: srv.service.in_flight == 0, timeout=10)
    assert _runtime_count(srv, "slow") == runs_before + 1, "the expired request ran the model"


def _runtime_count(srv, name: str) -> int:
    hists = srv.metrics._runtime_latency  # noqa: SLF001 - exact model-run count
    return sum(h.count for (model_name, _api), h in hists.items() if model_name == name)


def test_channel_arguments_reach_the_server(tmp_path, half_plus_two_export):
    copy_version(half_plus_two_export, str(tmp_path / "default"), 1)
    # A server-side send limit below the reply size makes every Predict fail: proof it applied.
    options = GrpcOptions(address="127.0.0.1", port=0, channel_arguments="grpc.max_send_message_length=8")
    with running_server([model("default", tmp_path / "default")], rest=False, grpc_options=options) as srv:
        with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as channel:
            with pytest.raises(grpc.RpcError) as info:
                prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(predict_request([1.0]), timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_parse_channel_arguments():
    assert parse_channel_arguments("grpc.max_connection_age_ms=2000, grpc.primary_user_agent=x") == [
        ("grpc.max_connection_age_ms", 2000), ("grpc.primary_user_agent", "x")]
    assert parse_channel_arguments("") == []
    with pytest.raises(ServingError) as info:
        parse_channel_arguments("novalue")
    assert "--grpc_channel_arguments" in info.value.message
