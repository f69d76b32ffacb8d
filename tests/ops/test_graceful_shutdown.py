"""SIGTERM to a real ``python -m servable.server`` process: the in-flight request finishes,
then the process exits 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import grpc
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from tests.conftest import free_port, wait_until
from tests.ops.conftest import metric, predict_request, scrape
from tests.serverutil import copy_version

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/readyz", timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--enable_batching"]], ids=["plain", "batching"])
def test_sigterm_lets_in_flight_request_finish_then_exits_0(tmp_path, slow_export, extra):
    copy_version(slow_export, str(tmp_path / "slow"), 1)
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true }\n")
    grpc_port, rest_port = free_port(), free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "servable.server", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
             "--grpc_address=127.0.0.1", "--rest_api_address=127.0.0.1", "--model_name=slow",
             f"--model_base_path={tmp_path / 'slow'}", f"--monitoring_config_file={monitoring}",
             "--log_level=info", "--shutdown_grace_period_seconds=20", *extra],
            cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: _ready(rest_port) or process.poll() is not None, timeout=60, message="server ready")
        assert process.poll() is None, log_path.read_text()
        results: list = []
        errors: list = []

        def call() -> None:
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                try:
                    results.append(prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                        predict_request([4.0], name="slow"), timeout=20))
                except grpc.RpcError as error:
                    errors.append(error)

        worker = threading.Thread(target=call)
        worker.start()
        wait_until(lambda: metric(scrape(rest_port), "servable_requests_in_flight") == 1, timeout=10,
                   message="request in flight")
        process.send_signal(signal.SIGTERM)
        worker.join(20)
        assert not errors, errors
        assert results and results[0].outputs["y"].float_val[0] == 4.0
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log_path.read_text()
    # The request log line, as the server's stderr handler prints it (written directly in batches).
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO servable\.requests: request id=[0-9a-f]+ "
                     r"entrypoint=GRPC api=Predict model=slow version=1 signature=serving_default status=OK "
                     r"latency_ms=\d+\.\d{3}$", output, re.M), output
    assert "shutdown complete" in output
    assert "Traceback" not in output
