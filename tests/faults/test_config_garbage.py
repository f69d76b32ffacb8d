"""A ``--model_config_file`` replaced by garbage: the watcher keeps the old config serving.

Also an empty file, a truncated file and a valid-but-contradictory one (a duplicate
model name); afterwards a good file is still picked up, so the watcher survived.
"""

from __future__ import annotations

import os

import grpc
import pytest

from servable.config.model_config import load_model_config_file
from servable.serving.server_core import CoreOptions
from tests.conftest import wait_until
from tests.faults.conftest import GrpcClient, write_python_version
from tests.serverutil import running_server

GOOD = """model_config_list {{
{entries}
}}
"""
ENTRY = '  config {{ name: "{name}" base_path: "{path}" model_platform: "python" }}'


def _config(models: dict[str, str]) -> str:
    return GOOD.format(entries="\n".join(ENTRY.format(name=n, path=p) for n, p in models.items()))


def _replace(path: str, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    staging = path + ".tmp"
    with open(staging, "wb") as handle:
        handle.write(data)
    os.replace(staging, path)


def test_garbage_config_keeps_the_old_config(tmp_path) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    write_python_version(a, 1)
    write_python_version(b, 1, factor=4.0)
    config_path = str(tmp_path / "models.config")
    _replace(config_path, _config({"a": a}))
    core = CoreOptions(file_system_poll_wait_seconds=0.2, load_retry_interval_s=0.05, max_num_load_retries=0)
    with running_server(load_model_config_file(config_path), core=core, model_config_file=config_path,
                        model_config_file_poll_wait_seconds=0.1) as server:
        client = GrpcClient(server.grpc_port)
        watcher = server._config_watcher  # noqa: SLF001 - to know when each bad file was seen
        try:
            assert client.predict("a", [1.0]) == (1, [2.0])
            bad_files = [
                b"\x00\xff\xfe binary garbage \x89PNG",
                "model_config_list { config { name: \"a\" base_path: ",  # truncated
                _config({"a": a}).replace("}\n}", "}\n  config { name: \"a\" base_path: \"%s\" model_platform: \"python\" }\n}" % a),
                'model_config_list { config { name: "a" base_path: "relative/../x" model_platform: "pytorch" } }',
            ]
            for bad in bad_files:
                before = watcher._last  # noqa: SLF001
                _replace(config_path, bad)
                wait_until(lambda: watcher._last != before, message="watcher saw the file")  # noqa: SLF001
                assert client.predict("a", [1.0]) == (1, [2.0])
                assert client.version_state("a", 1).state == "AVAILABLE"
            # A good file still applies: the watcher is alive and the config moves on.
            _replace(config_path, _config({"a": a, "b": b}))
            wait_until(lambda: _serves(client, "b"), message="b served after a good config")
            assert client.predict("a", [1.0]) == (1, [2.0])
        finally:
            client.close()


EMPTY_REASON = (
    "an empty config file parses as an unset ModelServerConfig and unloads every model; TF Serving refuses "
    "that reload with FAILED_PRECONDITION (only ModelConfigList -> ModelConfigList); fix proposed for "
    "servable/model_server.py in the issue-9 report"
)


def test_empty_config_file_keeps_the_old_config(tmp_path) -> None:
    a = str(tmp_path / "a")
    write_python_version(a, 1)
    config_path = str(tmp_path / "models.config")
    _replace(config_path, _config({"a": a}))
    core = CoreOptions(file_system_poll_wait_seconds=0.2, load_retry_interval_s=0.05, max_num_load_retries=0)
    with running_server(load_model_config_file(config_path), core=core, model_config_file=config_path,
                        model_config_file_poll_wait_seconds=0.1) as server:
        client = GrpcClient(server.grpc_port)
        watcher = server._config_watcher  # noqa: SLF001
        try:
            before = watcher._last  # noqa: SLF001
            _replace(config_path, b"")  # an editor truncated the file while saving
            wait_until(lambda: watcher._last != before, message="watcher saw the file")  # noqa: SLF001
            assert client.predict("a", [1.0]) == (1, [2.0])
        finally:
            client.close()


def _serves(client: GrpcClient, name: str) -> bool:
    try:
        return client.predict(name, [1.0])[0] == 1
    except grpc.RpcError:
        return False
