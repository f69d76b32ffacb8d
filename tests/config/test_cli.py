"""``python -m servable.server`` answers --help and bad flags before loading anything."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servable.server", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )


def test_help_prints_usage() -> None:
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")
    assert "--model_config_file=" in result.stdout
    assert "[accepted, no effect]" in result.stdout


def test_unknown_arguments_are_printed_and_ignored_as_tf_serving_does() -> None:
    result = _run("--bogus_flag=1", "--model-base-path=/m", "stray", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("TensorFlow ModelServer: ")
    assert result.stderr.splitlines() == [
        "unknown argument: --bogus_flag=1; ignored, as TF Serving does",
        "unknown argument: --model-base-path=/m (did you mean --model_base_path?); ignored, as TF Serving does",
        "unknown argument: stray; ignored, as TF Serving does",
    ]


def test_refused_flag_values_exit_255_as_tf_serving() -> None:
    result = _run("--port=abc")
    assert result.returncode == 255
    assert "Illegal value 'abc' for flag 'port': expected an integer" in result.stderr


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_refused_flag_combinations_exit_255_with_tf_servings_texts() -> None:
    result = _run("--port=0")
    assert result.returncode == 255
    assert _last_line(result) == (
        "Failed to start server. Error: At least one of server_options.grpc_port or "
        "server_options.grpc_socket_path must be set."
    )
    result = _run("--port=18123", "--model_name=mine")  # a model name alone is not the demo
    assert result.returncode == 255
    assert _last_line(result) == (
        "Failed to start server. Error: Both server_options.model_base_path and "
        "server_options.model_config_file are empty!"
    )


def test_bad_monitoring_config_is_a_failed_start_without_a_traceback(tmp_path) -> None:
    config = tmp_path / "monitoring.config"
    config.write_text("prometheus_config { enabled: true }\n")  # the field is "enable"
    result = _run("--port=18125", "--model_name=m", f"--model_base_path={tmp_path}", f"--monitoring_config_file={config}")
    assert result.returncode == 255, result.stderr
    assert _last_line(result).startswith("Failed to start server. Error: ")
    assert "Invalid protobuf file" in _last_line(result)
    assert "Traceback" not in result.stderr


def test_rest_port_equal_to_grpc_port_serves_grpc_only_and_ignores_unknown_flags(half_plus_two_export, tmp_path) -> None:
    """TF Serving logs an error, skips REST and keeps serving gRPC; unknown flags are only printed."""
    import shutil

    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    from tests.conftest import free_port, wait_until

    base = tmp_path / "m"
    shutil.copytree(half_plus_two_export, base / "1")
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "w") as err:
        child = subprocess.Popen(
            [sys.executable, "-m", "servable.server", f"--port={port}", f"--rest_api_port={port}",
             "--grpc_address=127.0.0.1", "--model_name=m", f"--model_base_path={base}", "--bogus_flag=1"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, text=True,
        )
    try:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "m"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)

            def available() -> bool:
                try:
                    states = stub.GetModelStatus(request, timeout=2).model_version_status
                except grpc.RpcError:
                    return False
                return [s.state for s in states] == [get_model_status_pb2.ModelVersionStatus.AVAILABLE]

            wait_until(lambda: child.poll() is not None or available(), timeout=90)
            assert child.poll() is None, log.read_text()
        # The image's HEALTHCHECK finds REST off in the server's flags and asks gRPC health.
        check = subprocess.run([sys.executable, "-m", "servable.healthcheck", f"--pid={child.pid}"],
                               cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stderr
    finally:
        child.terminate()
        assert child.wait(timeout=60) == 0
    text = log.read_text()
    assert "unknown argument: --bogus_flag=1; ignored, as TF Serving does" in text
    assert (
        "server_options.http_port cannot be same as grpc_port. Please use a different port for HTTP/REST API. "
        "Skipped exporting HTTP/REST API." in text
    )


def test_taken_ports_exit_255_naming_the_port_without_a_traceback(half_plus_two_export, tmp_path) -> None:
    import shutil
    import socket

    base = tmp_path / "m"
    shutil.copytree(half_plus_two_export, base / "1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = (
            ([f"--port={port}", "--grpc_address=127.0.0.1"], f"gRPC on 127.0.0.1:{port}"),
            (["--port=0", "--grpc_socket_path=" + str(tmp_path / "s.sock"), f"--rest_api_port={port}",
              "--rest_api_address=127.0.0.1"], f"HTTP/REST on 127.0.0.1:{port}"),
        )
        children = [  # both at once: each pays for importing TensorFlow
            subprocess.Popen([sys.executable, "-m", "servable.server", *args, "--model_name=m", f"--model_base_path={base}"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for args, _door in cases
        ]
        for child, (_args, door) in zip(children, cases):
            _out, err = child.communicate(timeout=60)
            assert child.returncode == 255, err
            assert err.strip().splitlines()[-1].startswith(f"Failed to start server. Error: cannot serve {door}: ")
            assert "Traceback" not in err


def test_version_prints_tf_servings_two_lines() -> None:
    result = _run("--version")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("TensorFlow ModelServer: servable-")
    assert lines[1] == "TensorFlow Library: 2.21.0"


def test_demo_answers_the_readme_example_byte_for_byte(tmp_path) -> None:
    """No model flags: the demo is exported into the cache and answers the README's curl as shown."""
    import re
    import urllib.request

    from tests.conftest import free_port, wait_until

    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    match = re.search(r"curl -d '([^']+)' http://localhost:8501(/v1/models/\w+:predict)\n# (.+)\n", readme)
    assert match, "README.md no longer shows the demo's curl command and its answer"
    body, path, shown = match.groups()
    grpc_port, rest_port = free_port(), free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    with open(log, "w") as err:
        child = subprocess.Popen(
            [sys.executable, "-m", "servable.server", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
             "--grpc_address=127.0.0.1"],  # REST on every address, as TF Serving binds it
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err,
        )
    url = f"http://127.0.0.1:{rest_port}{path}"

    def answer() -> bytes | None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body.encode()), timeout=5) as reply:
                return reply.read()
        except OSError:
            return None

    try:
        got = wait_until(lambda: child.poll() is not None or answer(), timeout=120)
        assert child.poll() is None, log.read_text()
        assert got == shown.encode()
    finally:
        child.terminate()
        assert child.wait(timeout=60) == 0
    assert f"-> {shown}" in log.read_text()  # the start-up banner shows the same answer
    assert f"Exporting HTTP/REST API at:localhost:{rest_port} ..." in log.read_text()  # TF Serving's line
    assert (tmp_path / "cache" / "servable" / "demo" / "half_plus_two" / "1" / "saved_model.pb").exists()
