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


def test_unknown_flag_exits_2() -> None:
    result = _run("--bogus")
    assert result.returncode == 2
    assert "Unknown command line flag 'bogus'" in result.stderr


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_refused_flag_combinations_exit_1_with_tf_servings_texts() -> None:
    result = _run("--port=0")
    assert result.returncode == 1
    assert _last_line(result) == (
        "Failed to start server. Error: At least one of server_options.grpc_port or "
        "server_options.grpc_socket_path must be set."
    )
    result = _run("--port=18123", "--model_name=mine")  # a model name alone is not the demo
    assert result.returncode == 1
    assert _last_line(result) == (
        "Failed to start server. Error: Both server_options.model_base_path and "
        "server_options.model_config_file are empty!"
    )
    result = _run("--port=18124", "--rest_api_port=18124")
    assert result.returncode == 1
    assert "the HTTP/REST API needs a port of its own" in _last_line(result)


def test_taken_ports_exit_1_naming_the_port_without_a_traceback(half_plus_two_export, tmp_path) -> None:
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
            assert child.returncode == 1, err
            assert err.strip().splitlines()[-1].startswith(f"Failed to start server. Error: cannot serve {door}: ")
            assert "Traceback" not in err


def test_version_prints_tf_servings_two_lines() -> None:
    result = _run("--version")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("TensorFlow ModelServer: servable-")
    assert lines[1] == "TensorFlow Library: 2.21.0"
