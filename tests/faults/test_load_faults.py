"""Load-time faults: a loader that raises or hangs, a folder deleted mid-load, bad files.

In every case the other models (and the previous version of the same model) keep
serving, and GetModelStatus reports the failed version as END with the reason.
"""

from __future__ import annotations

import os
import shutil

import grpc
import pytest

from servable.serving.server_core import CoreOptions
from tests.conftest import wait_until
from tests.faults import hooks
from tests.faults.conftest import GrpcClient, write_python_version
from tests.serverutil import copy_version, model, running_server

UNKNOWN = grpc.StatusCode.UNKNOWN.value[0]
DEADLINE = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


def _core(**overrides) -> CoreOptions:
    options = dict(file_system_poll_wait_seconds=0.2, file_system_settle_seconds=0.05,
                   load_retry_interval_s=0.05, max_num_load_retries=0)
    options.update(overrides)
    return CoreOptions(**options)


def _ended(client: GrpcClient, name: str, version: int):
    state = client.version_state(name, version)
    return state if state is not None and state.state == "END" else None


def test_loader_that_raises(tmp_path) -> None:
    steady, boom, upgrade = (str(tmp_path / n) for n in ("steady", "boom", "upgrade"))
    write_python_version(steady, 1)
    write_python_version(boom, 1, load="raise RuntimeError('kaboom in load')")
    write_python_version(upgrade, 1, factor=3.0)
    models = [model("steady", steady, platform="python"), model("boom", boom, platform="python"),
              model("upgrade", upgrade, platform="python")]
    with running_server(models, core=_core()) as server:
        client = GrpcClient(server.grpc_port)
        try:
            state = wait_until(lambda: _ended(client, "boom", 1), message="boom v1 END")
            assert "kaboom in load" in state.error_message
            assert state.error_code != 0
            with pytest.raises(grpc.RpcError) as info:
                client.predict("boom", [1.0])
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert client.predict("steady", [1.0]) == (1, [2.0])
            # A new version whose loader raises leaves the previous one serving.
            write_python_version(upgrade, 2, load="raise ValueError('bad weights v2')")
            state = wait_until(lambda: _ended(client, "upgrade", 2), message="upgrade v2 END")
            assert "bad weights v2" in state.error_message
            assert client.predict("upgrade", [1.0]) == (1, [3.0])
            assert client.version_state("upgrade", 1).state == "AVAILABLE"
        finally:
            client.close()


def test_loader_that_hangs_is_bounded_by_load_timeout(tmp_path) -> None:
    steady, hang = str(tmp_path / "steady"), str(tmp_path / "hang")
    write_python_version(steady, 1)
    write_python_version(hang, 1, load="hooks.hold('hang-load', 60)")
    models = [model("steady", steady, platform="python"), model("hang", hang, platform="python")]
    with running_server(models, core=_core(load_timeout_s=1.0, num_load_threads=2)) as server:
        client = GrpcClient(server.grpc_port)
        try:
            assert hooks.entered("hang-load").is_set()
            state = wait_until(lambda: _ended(client, "hang", 1), message="hang v1 END")
            assert state.error_code == DEADLINE
            assert "load_timeout_seconds" in state.error_message
            assert client.predict("steady", [2.0]) == (1, [4.0])
            # The load threads are not stuck: a new version of another model still loads.
            write_python_version(steady, 2, factor=5.0)
            wait_until(lambda: client.predict("steady", [1.0]) == (2, [5.0]), message="steady v2 served")
            # A fixed new version of the hung model loads too.
            write_python_version(hang, 2, factor=7.0)
            wait_until(lambda: client.version_state("hang", 2) and client.version_state("hang", 2).state == "AVAILABLE",
                       message="hang v2 AVAILABLE")
            assert client.predict("hang", [1.0]) == (2, [7.0])
        finally:
            hooks.release_all()  # the abandoned load finishes and is unloaded by the manager
            client.close()


def test_load_timeout_flag_reaches_the_manager() -> None:
    from servable.config.flags import parse_flags
    from servable.settings import settings_from_flags

    flags = parse_flags(["--model_name=m", "--model_base_path=/nonexistent/m", "--load_timeout_seconds=2.5"])
    settings, _demo = settings_from_flags(flags)
    assert settings.core.load_timeout_s == 2.5


def test_version_folder_deleted_while_loading(tmp_path) -> None:
    base = str(tmp_path / "m")
    write_python_version(base, 1)
    with running_server([model("m", base, platform="python")], core=_core()) as server:
        client = GrpcClient(server.grpc_port)
        try:
            assert client.predict("m", [1.0]) == (1, [2.0])
            path = write_python_version(
                base, 2, factor=9.0,
                load="hooks.hold('delete-me', 30)\nopen(path + '/servable.py').read()",
            )
            wait_until(hooks.entered("delete-me").is_set, message="v2 loading")
            shutil.rmtree(path)
            hooks.event("delete-me").set()
            wait_until(lambda: _ended(client, "m", 2), message="v2 END")
            assert client.version_state("m", 2).error_code != 0 or client.version_state("m", 2).error_message == ""
            assert client.predict("m", [1.0]) == (1, [2.0])
            assert client.version_state("m", 1).state == "AVAILABLE"
        finally:
            client.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: chmod 000 does not stop root from reading")
def test_unreadable_files(tmp_path, half_plus_two_export) -> None:
    base = str(tmp_path / "hp2")
    copy_version(half_plus_two_export, base, 1)
    with running_server([model("hp2", base)], core=_core()) as server:
        client = GrpcClient(server.grpc_port)
        try:
            staging = str(tmp_path / "staging")
            shutil.copytree(half_plus_two_export, staging)
            os.chmod(os.path.join(staging, "saved_model.pb"), 0)
            os.rename(staging, os.path.join(base, "2"))
            state = wait_until(lambda: _ended(client, "hp2", 2), message="v2 END")
            assert state.error_code != 0 and state.error_message
            assert client.predict("hp2", [2.0])[0] == 1
        finally:
            client.close()


def _corrupt_copy(export: str, base: str, version: int, relative: str, data: bytes) -> None:
    staging = os.path.join(base, f".incoming-{version}")
    shutil.copytree(export, staging)
    with open(os.path.join(staging, relative), "wb") as handle:
        handle.write(data)
    os.rename(staging, os.path.join(base, str(version)))


def _variables_file(export: str) -> str:
    names = sorted(n for n in os.listdir(os.path.join(export, "variables")) if n.startswith("variables.data"))
    return os.path.join("variables", names[0])


def test_corrupt_saved_model_and_variables(tmp_path, half_plus_two_export) -> None:
    steady, base = str(tmp_path / "steady"), str(tmp_path / "hp2")
    write_python_version(steady, 1)
    copy_version(half_plus_two_export, base, 1)
    models = [model("steady", steady, platform="python"), model("hp2", base)]
    with running_server(models, core=_core()) as server:
        client = GrpcClient(server.grpc_port)
        try:
            assert client.predict("hp2", [2.0]) == (1, [3.0])
            _corrupt_copy(half_plus_two_export, base, 2, "saved_model.pb", b"\x08\xff\xff garbage, not a SavedModel")
            state = wait_until(lambda: _ended(client, "hp2", 2), message="v2 END")
            assert state.error_code != 0 and state.error_message
            assert client.predict("hp2", [2.0]) == (1, [3.0])
            variables = _variables_file(half_plus_two_export)
            _corrupt_copy(half_plus_two_export, base, 3, variables, b"\x00" * 7)
            state = wait_until(lambda: _ended(client, "hp2", 3), message="v3 END")
            assert state.error_code != 0 and state.error_message
            assert client.predict("hp2", [2.0]) == (1, [3.0])
            assert client.predict("steady", [1.0]) == (1, [2.0])
        finally:
            client.close()
