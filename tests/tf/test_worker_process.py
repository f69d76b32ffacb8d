"""SavedModels in the model worker process (``--tensorflow_worker_process``).

The full gRPC API through the worker is covered by ``tests/grpc_api`` (its server
fixture has a worker-process variant); these tests cover what only the worker has: the
wire format, the process's lifecycle (started at the first load, versions loaded and
freed in it, stopped with the server, gone when the server is killed) and a dead worker
(UNAVAILABLE, then a new worker with the same versions).
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import threading

import grpc
import numpy as np
import pytest

from servable.tf.testing_models import mlp_reference
from servable.tf.worker.wire import Channel, ChannelClosed
from tests.batching_e2e.conftest import flag_server, place_version, predict_request, stub_for, write_params
from tests.conftest import free_port, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _scores(response) -> np.ndarray:
    import tensorflow as tf

    return tf.make_ndarray(response.outputs["scores"])


def _model_process(server):
    process = server.settings.model_process
    assert process is not None and process.pid is not None
    return process


# -- wire ------------------------------------------------------------------------------

def test_channel_round_trips_arrays_of_every_kind_both_ways() -> None:
    ours, theirs = socket.socketpair()
    left, right = Channel(ours), Channel(theirs)

    def echo() -> None:
        try:
            while True:
                right.send(right.recv())
        except ChannelClosed:
            right.close()

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    rng = np.random.default_rng(0)
    messages = [
        ("ping", ()),
        {"images": rng.random((1, 784), dtype=np.float32)},
        {"big": rng.random((512, 784)).astype(np.float32), "ints": np.arange(10, dtype=np.int64)},
        {"strings": np.array([b"a", b"\x00\xff", b""], dtype=object)},
        {"transposed": rng.random((30, 7))[:, ::2].T},  # not contiguous: pickled in-band
        ("err", 3, "x" * 300_000),
    ]
    for message in messages:
        left.send(message)
        back = left.recv()
        if isinstance(message, dict):
            assert back.keys() == message.keys()
            for key, array in message.items():
                assert back[key].dtype == array.dtype and back[key].shape == array.shape
                np.testing.assert_array_equal(back[key], array)
        else:
            assert back == message
    left.close()
    thread.join(10)
    assert not thread.is_alive()


def test_a_closed_channel_raises_channel_closed() -> None:
    ours, theirs = socket.socketpair()
    left = Channel(ours)
    theirs.close()
    with pytest.raises(ChannelClosed):
        left.recv()


# -- through the server ------------------------------------------------------------------

@pytest.fixture
def mlp_base(tmp_path, mlp_export):
    base = str(tmp_path / "mlp")
    place_version(mlp_export, base, 1)
    return base


def test_versions_load_batch_and_unload_in_the_worker_process(tmp_path, mlp_base, mlp_export) -> None:
    params = write_params(tmp_path, """
        max_batch_size { value: 32 }
        batch_timeout_micros { value: 5000 }
        max_enqueued_batches { value: 100 }
        num_batch_threads { value: 2 }
    """)
    argv = ["--model_name=mlp", f"--model_base_path={mlp_base}", "--enable_batching",
            f"--batching_parameters_file={params}", "--grpc_server_mode=asyncio", "--tensorflow_worker_process"]
    with flag_server(argv, wait_for={"mlp": 1}) as server:
        process = _model_process(server)
        worker_pid = process.pid
        assert worker_pid != os.getpid()
        assert process.call("ping") == {"pid": worker_pid, "models": 1}
        channel, stub = stub_for(server)

        # 64 concurrent requests of 1, 3 and 5 rows, batched in front of the worker
        sizes = [(1, 3, 5)[i % 3] for i in range(64)]
        inputs = [np.random.default_rng(i).random((rows, 784), dtype=np.float32) for i, rows in enumerate(sizes)]
        barrier = threading.Barrier(64)

        def call(i: int) -> np.ndarray:
            request = predict_request("mlp", {"images": inputs[i]})
            barrier.wait(10)
            return _scores(stub.Predict(request, timeout=30))

        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            results = list(pool.map(call, range(64)))
        for i, scores in enumerate(results):
            np.testing.assert_allclose(scores, mlp_reference(inputs[i]), rtol=1e-4, atol=1e-6)

        place_version(mlp_export, mlp_base, 2)  # hot swap: v2 loads in the same worker, v1 is freed there
        wait_until(lambda: server.core.manager.available_versions("mlp") == [2], timeout=60, message="v2 only")
        wait_until(lambda: process.call("ping")["models"] == 1, timeout=30, message="v1 unloaded in the worker")
        response = stub.Predict(predict_request("mlp", {"images": inputs[1]}), timeout=30)
        assert response.model_spec.version.value == 2
        np.testing.assert_allclose(_scores(response), mlp_reference(inputs[1]), rtol=1e-4, atol=1e-6)
        assert process.pid == worker_pid
        channel.close()
    wait_until(lambda: not _alive(worker_pid), timeout=30, message="worker stopped with the server")


def test_a_dead_worker_answers_unavailable_then_is_restarted_with_its_versions(mlp_base) -> None:
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    argv = ["--model_name=mlp", f"--model_base_path={mlp_base}", "--tensorflow_worker_process=true"]
    with flag_server(argv, wait_for={"mlp": 1}) as server:
        process = _model_process(server)
        first_pid = process.pid
        os.kill(first_pid, signal.SIGKILL)
        wait_until(lambda: not _alive(first_pid), timeout=30, message="worker killed")
        channel, stub = stub_for(server)
        images = np.random.default_rng(2).random((2, 784), dtype=np.float32)
        request = predict_request("mlp", {"images": images})
        with pytest.raises(grpc.RpcError) as info:  # the call that finds it dead
            stub.Predict(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "model worker process" in info.value.details()
        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = "mlp"
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request, timeout=10)
        assert [s.version for s in status.model_version_status] == [1]

        def answered() -> list[np.ndarray] | None:
            try:
                return [_scores(stub.Predict(request, timeout=30))]
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
                return None

        [scores] = wait_until(answered, timeout=90, interval=0.1, message="served again by a new worker")
        np.testing.assert_allclose(scores, mlp_reference(images), rtol=1e-4, atol=1e-6)
        assert process.pid not in (None, first_pid) and process.restarts == 1
        assert process.call("ping")["models"] == 1
        channel.close()


def test_the_worker_exits_when_the_server_is_killed(tmp_path, mlp_base) -> None:
    """SIGKILL leaves no cleanup to the server: the worker sees its stdin close and exits."""
    rest = free_port()
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "servable.server", f"--port={free_port()}", f"--rest_api_port={rest}",
         "--grpc_address=127.0.0.1", "--rest_api_address=127.0.0.1", "--model_name=mlp",
         f"--model_base_path={mlp_base}", "--tensorflow_worker_process=true"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        def worker_pid() -> int | None:
            marker = "model worker process "
            for line in (tmp_path / "server.log").read_text(errors="replace").splitlines():
                if marker in line and line.endswith(" started"):
                    return int(line.split(marker)[1].split()[0])
            return None

        pid = wait_until(worker_pid, timeout=120, message="worker started")
        assert _alive(pid)
        server.kill()
        server.wait(30)
        wait_until(lambda: not _alive(pid), timeout=30, message="worker gone after the server's SIGKILL")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(30)
        log.close()
