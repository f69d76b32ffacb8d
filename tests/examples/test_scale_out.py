"""Scale-out on one machine: three server processes share one model folder behind a client
that spreads requests over them; a new version folder makes all three switch with zero
failed requests (what the Kubernetes sidecar sync relies on)."""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
import threading
import urllib.request
from typing import Iterator

import grpc
import pytest

from examples import grpc_client
from examples.mnist import data
from servable._proto.tensorflow_serving.apis import predict_pb2
from tests.conftest import free_port, wait_until
from tests.examples.conftest import REPO
from tests.serverutil import copy_version


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def servers(base_path: str, count: int, log_dir) -> Iterator[list[int]]:
    """``count`` ``python -m servable.server`` processes on one base path; yields their gRPC ports."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    ports = [(free_port(), free_port()) for _ in range(count)]
    processes = []
    try:
        for index, (grpc_port, rest_port) in enumerate(ports):
            log = open(log_dir / f"server{index}.log", "w")
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "servable.server", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                 "--model_name=mnist", f"--model_base_path={base_path}", "--file_system_poll_wait_seconds=1"],
                env=env, stdout=log, stderr=log))
            log.close()
        wait_until(lambda: all(_ready(rest) for _, rest in ports) or any(p.poll() is not None for p in processes),
                   timeout=90, interval=0.2, message="three servers ready")
        assert all(p.poll() is None for p in processes), [(log_dir / f"server{i}.log").read_text() for i in range(count)]
        yield [grpc_port for grpc_port, _ in ports]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.mark.slow  # three TensorFlow processes start: about 20 s on 2 cores
def test_three_servers_switch_to_a_new_version_without_failures(mnist_base_path: str, tmp_path) -> None:
    base = str(tmp_path / "mnist")
    copy_version(os.path.join(mnist_base_path, "1"), base, 1)
    images = data.load("digits").test_images[:8]
    with servers(base, 3, tmp_path) as ports:
        channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for port in ports]
        stubs = [grpc_client.prediction_stub(channel) for channel in channels]
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mnist"
        request.model_spec.signature_name = "predict_images"
        request.inputs["images"].CopyFrom(grpc_client.make_tensor_proto(images))
        seen: dict[int, set[int]] = {i: set() for i in range(len(stubs))}
        latest: dict[int, int] = {}
        failures: list[str] = []
        stop = threading.Event()

        def spread_requests() -> None:
            for index in itertools.cycle(range(len(stubs))):
                if stop.is_set():
                    return
                try:
                    response = stubs[index].Predict(request, timeout=10)
                    version = response.model_spec.version.value
                    seen[index].add(version)
                    latest[index] = version
                    assert grpc_client.make_ndarray(response.outputs["scores"]).shape == (8, 10)
                except Exception as error:  # every failure counts, whatever it is
                    failures.append(f"server {index}: {error!r}")

        client = threading.Thread(target=spread_requests)
        client.start()
        try:
            wait_until(lambda: len(latest) == 3 and set(latest.values()) == {1}, timeout=30, message="v1 everywhere")
            copy_version(os.path.join(mnist_base_path, "2"), base, 2)
            wait_until(lambda: set(latest.values()) == {2} and len(latest) == 3, timeout=60, interval=0.05,
                       message="all three servers answer with version 2")
        finally:
            stop.set()
            client.join(timeout=30)
            for channel in channels:
                channel.close()
    assert failures == []
    assert all(versions == {1, 2} for versions in seen.values()), seen
    assert [latest[i] for i in range(3)] == [2, 2, 2]
