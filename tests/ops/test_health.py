"""gRPC health (grpc.health.v1) and REST readiness through a model's life and a shutdown."""

from __future__ import annotations

import shutil
import threading
import urllib.error
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc

from servable.serving.server_core import CoreOptions
from tests.conftest import wait_until
from tests.ops.conftest import predict_request
from tests.serverutil import copy_version, model, running_server

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICES = ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code


def _health(channel, service: str = "") -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_readiness_follows_the_model_folder(tmp_path, half_plus_two_export):
    base = tmp_path / "default"
    base.mkdir()
    core = CoreOptions(file_system_poll_wait_seconds=0.1, file_system_settle_seconds=0.05,
                       load_retry_interval_s=0.05, max_num_load_retries=0)
    with running_server([model("default", base)], core=core) as server:
        port = server.rest_port
        assert _status(port, "/v1/readyz") == 503  # configured, nothing AVAILABLE yet
        assert _status(port, "/v1/healthz") == 200  # alive all along
        copy_version(half_plus_two_export, str(base), 1)
        wait_until(lambda: _status(port, "/v1/readyz") == 200, timeout=20, message="ready after the load")
        shutil.rmtree(base / "1")
        wait_until(lambda: _status(port, "/v1/readyz") == 503, timeout=20, message="not ready after removal")
        assert _status(port, "/v1/healthz") == 200


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_grpc_health_serving_then_not_serving_while_draining(tmp_path, slow_export, mode):
    copy_version(slow_export, str(tmp_path / "slow"), 1)
    with running_server([model("slow", tmp_path / "slow")], shutdown_grace_s=20, grpc_server_mode=mode) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        assert all(_health(channel, name) == SERVING for name in SERVICES)
        results: list = []
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        worker = threading.Thread(target=lambda: results.append(stub.Predict(predict_request([2.0], name="slow"), timeout=20)))
        worker.start()
        wait_until(lambda: server.service.in_flight == 1, timeout=5, message="slow request in flight")
        server.request_stop()
        # Shutdown began: probes see it while the in-flight request drains.
        wait_until(lambda: _health(channel) == NOT_SERVING, timeout=5, message="NOT_SERVING during drain")
        assert all(_health(channel, name) == NOT_SERVING for name in SERVICES)
        assert _status(server.rest_port, "/v1/readyz") == 503
        worker.join(20)
        assert results and results[0].outputs["y"].float_val[0] == 3.0, "in-flight request did not finish"
        channel.close()
