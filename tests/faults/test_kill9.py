"""``kill -9`` of a server process under load, then a restart on the same ports.

Nothing on disk may stop the restart (no stale lock, the ports are free at once), and
the restarted server serves the newest complete version, ignoring a half-copied staging
folder left by an interrupted deploy.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading

import grpc
import pytest

from tests.conftest import free_port, wait_until
from tests.faults.conftest import GrpcClient, write_python_version
from tests.serverutil import copy_version

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _start(config: str, grpc_port: int, rest_port: int, log_path: str) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "servable.server", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
             f"--model_config_file={config}", "--file_system_poll_wait_seconds=1", "--grpc_address=127.0.0.1",
             "--rest_api_address=127.0.0.1"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )


def _port_open(port: int, process: subprocess.Popen) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"server exited with {process.returncode}")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _serving(client: GrpcClient, name: str, version: int, process: subprocess.Popen | None = None) -> bool:
    if process is not None and process.poll() is not None:
        raise AssertionError(f"server exited with {process.returncode}")
    try:
        return client.predict(name, [2.0], timeout=2)[0] == version
    except grpc.RpcError:
        return False


def test_kill9_under_load_then_restart(tmp_path, half_plus_two_export, half_plus_three_export) -> None:
    hp, steady = str(tmp_path / "hp"), str(tmp_path / "steady")
    copy_version(half_plus_two_export, hp, 1)
    copy_version(half_plus_three_export, hp, 2)
    write_python_version(steady, 1)
    config = str(tmp_path / "models.config")
    with open(config, "w") as handle:
        handle.write(
            'model_config_list {\n'
            f'  config {{ name: "hp" base_path: "{hp}" model_platform: "tensorflow" }}\n'
            f'  config {{ name: "steady" base_path: "{steady}" model_platform: "python" }}\n'
            '}\n'
        )
    grpc_port, rest_port = free_port(), free_port()
    log_path = str(tmp_path / "server.log")
    process = _start(config, grpc_port, rest_port, log_path)
    wait_until(lambda: _port_open(grpc_port, process), timeout=90, message="first server listening")
    client = GrpcClient(grpc_port)  # a channel made before the port opens would wait out its backoff
    try:
        wait_until(lambda: _serving(client, "hp", 2, process) and _serving(client, "steady", 1), timeout=60,
                   message="first server serving")
        assert client.predict("hp", [2.0]) == (2, [4.0])  # half_plus_three
        stop = threading.Event()
        errors: list[str] = []

        def hammer() -> None:
            local = GrpcClient(grpc_port)
            while not stop.is_set():
                try:
                    local.predict("hp", [2.0], timeout=2)
                except grpc.RpcError as error:
                    errors.append(error.code().name)
            local.close()

        threads = [threading.Thread(target=hammer, daemon=True) for _ in range(4)]
        for thread in threads:
            thread.start()
        hammered = client.predict("hp", [2.0])  # the hammer threads are running by now
        assert hammered[0] == 2
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(10) == -signal.SIGKILL
        stop.set()
        for thread in threads:
            thread.join(5)
        assert errors, "clients saw the server die"  # UNAVAILABLE while it was gone

        # While it was down: a complete v3, and a half-copied staging folder of a v4.
        copy_version(half_plus_two_export, hp, 3)
        partial = os.path.join(hp, ".incoming-4")
        shutil.copytree(half_plus_two_export, partial)
        os.remove(os.path.join(partial, "saved_model.pb"))

        process = _start(config, grpc_port, rest_port, log_path)
        wait_until(lambda: _port_open(grpc_port, process), timeout=90, message="restarted server listening")
        client.close()
        client = GrpcClient(grpc_port)
        wait_until(lambda: _serving(client, "hp", 3, process) and _serving(client, "steady", 1), timeout=60,
                   message="restarted server serving v3")
        assert client.predict("hp", [2.0]) == (3, [3.0])  # half_plus_two
        states = {s.version: s.state for s in client.status("hp")}
        assert states[3] == "AVAILABLE" and 4 not in states
    finally:
        client.close()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
