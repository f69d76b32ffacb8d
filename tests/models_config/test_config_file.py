"""--model_config_file: polling and file events, bad edits, malformed/contradictory files at startup."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import grpc
import pytest

from servable.config.model_config import load_model_config_file
from servable.serving.config_watcher import ConfigFileWatcher
from servable.serving.server_core import CoreOptions
from tests.conftest import free_port, wait_until
from tests.models_config.helpers import ClientLoop, Clients, config_text, model_entry, write_config
from tests.serverutil import running_server

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def serves(clients: Clients, name: str) -> bool:
    try:
        clients.predict(name)
        return True
    except grpc.RpcError:
        return False


def start_from_file(path: str, poll_s: float):
    models = load_model_config_file(path)
    core = CoreOptions(file_system_poll_wait_seconds=0.5, load_retry_interval_s=0.05, max_num_load_retries=0)
    return running_server(models, core=core, rest=False, model_config_file=path, model_config_file_poll_wait_seconds=poll_s)


def test_edited_config_file_is_picked_up_by_polling(model_tree, tmp_path):
    path = write_config(str(tmp_path / "models.config"), config_text(model_entry("hp2", model_tree["hp2"])))
    with start_from_file(path, 0.2) as server, Clients(server) as clients:
        with ClientLoop(server.grpc_port, "hp2", threads=1) as loop:
            assert not serves(clients, "hp3")
            write_config(path, config_text(model_entry("hp2", model_tree["hp2"]), model_entry("hp3", model_tree["hp3"])))
            wait_until(lambda: serves(clients, "hp3"), timeout=20, message="hp3 added by the edited file")
            watcher = server._config_watcher  # noqa: SLF001 - to see when a bad edit was refused
            # A malformed edit is logged and ignored: the current config keeps serving.
            failed = watcher.failed_count
            write_config(path, "model_config_list { config { name: \"hp2\" ")
            wait_until(lambda: watcher.failed_count > failed, timeout=20, message="malformed edit read")
            assert "Error parsing text-format" in watcher.last_error.message
            assert serves(clients, "hp3")
            # A contradictory edit (duplicate names) is refused the same way.
            failed = watcher.failed_count
            write_config(path, config_text(model_entry("hp2", model_tree["hp2"]), model_entry("hp2", model_tree["hp3"])))
            wait_until(lambda: watcher.failed_count > failed, timeout=20, message="duplicate edit read")
            assert watcher.last_error.message == "Illegal to list model hp2 multiple times in config list"
            assert serves(clients, "hp3")
            # Fixed again: hp3 removed.
            write_config(path, config_text(model_entry("hp2", model_tree["hp2"])))
            wait_until(lambda: not serves(clients, "hp3"), timeout=20, message="hp3 removed by the edited file")
            loop.wait_for_more()
        assert loop.failures == []


def test_config_file_change_is_seen_through_file_events(model_tree, tmp_path):
    """Poll every 10 minutes: only a file event can bring the change in quickly."""
    path = write_config(str(tmp_path / "models.config"), config_text(model_entry("hp2", model_tree["hp2"])))
    with start_from_file(path, 600) as server, Clients(server) as clients:
        write_config(path, config_text(model_entry("hp2", model_tree["hp2"]), model_entry("py", model_tree["py"], platform="python")))
        wait_until(lambda: serves(clients, "py"), timeout=20, message="py added through a file event")


def test_config_watcher_polls_without_file_events(tmp_path):
    path = write_config(str(tmp_path / "m.config"), "a")
    applied: list[str] = []
    done = threading.Event()

    def apply(p: str) -> None:
        with open(p) as handle:
            applied.append(handle.read())
        done.set()

    watcher = ConfigFileWatcher(path, 0.05, apply, use_file_events=False)
    watcher.start()
    try:
        write_config(path, "b")
        assert done.wait(10)
        assert applied == ["b"]
    finally:
        watcher.stop()


def run_server(config: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-m", "servable.server", f"--model_config_file={config}", f"--port={free_port()}", *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


def test_malformed_config_file_at_startup_exits_with_line_and_column(tmp_path):
    path = tmp_path / "bad.config"
    path.write_text('model_config_list {\n  config { name: "a" base_path: "/x" model_platform: "tensorflow" }\n  config { name "b" }\n}\n')
    result = run_server(str(path))
    assert result.returncode != 0
    assert "Failed to start server. Error: INVALID_ARGUMENT: " in result.stderr  # TF Serving's status text
    assert f"{path}:3:17" in result.stderr
    assert "Expected \":\"" in result.stderr


@pytest.mark.parametrize(
    "entries, message",
    [
        (lambda t: [model_entry("a", t["hp3"]), model_entry("a", t["hp2"])],
         "Illegal to list model a multiple times in config list"),
        (lambda t: [model_entry("a", t["hp3"], platform="onnx")], "Model a requests unsupported platform onnx"),
        (lambda t: [model_entry("a", t["hp3"], labels={"stable": 5})],
         "Request to assign label to version 5 of model a, which is not currently available for inference"),
    ],
    ids=["duplicate-name", "unknown-platform", "label-to-missing-version"],
)
def test_contradictory_config_file_at_startup_exits_non_zero(model_tree, tmp_path, entries, message):
    path = write_config(str(tmp_path / "models.config"), config_text(*entries(model_tree)))
    result = run_server(path)
    assert result.returncode != 0
    assert message in result.stderr
