"""The lifecycle framework with plain Python loaders: no TensorFlow, no network."""

from __future__ import annotations

import threading

import pytest

from servable.core.handles import RefCount
from servable.core.ids import ServableId, ServableRequest
from servable.core.loader import Loader, SimpleLoader
from servable.core.manager import AspiredVersionsManager
from servable.core.policies import resource_preserving
from servable.core.source import ServableData
from servable.core.states import ManagerState
from servable.core.status import Code, ServingError
from tests.conftest import wait_until


class RecordingLoader(Loader):
    """A loader whose load can fail a number of times, block, and which records calls."""

    def __init__(self, value: object, fail_times: int = 0, gate: threading.Event | None = None, log: list | None = None):
        self.value = value
        self.fail_times = fail_times
        self.gate = gate
        self.log = log if log is not None else []
        self.loaded = False

    def load(self) -> None:
        self.log.append(("load", self.value))
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_times > 0:
            self.fail_times -= 1
            raise ServingError(Code.NOT_FOUND, f"cannot load {self.value}")
        self.loaded = True

    def unload(self) -> None:
        self.log.append(("unload", self.value))
        self.loaded = False

    def servable(self) -> object:
        return self.value


def data(name: str, version: int, loader: Loader, revision: object = None) -> ServableData:
    return ServableData(ServableId(name, version), loader=loader, revision=revision)


@pytest.fixture
def manager():
    m = AspiredVersionsManager(max_num_load_retries=0, load_retry_interval_s=0.01)
    m.start()
    yield m
    m.stop(timeout=5)


def state_of(manager: AspiredVersionsManager, name: str, version: int) -> ManagerState | None:
    state = manager.monitor.get_state(ServableId(name, version))
    return state.state if state else None


def test_load_route_and_latest(manager):
    manager.aspired_versions_callback("m", [data("m", 1, SimpleLoader(lambda: "one"))])
    assert manager.wait_until_settled(["m"], 5)
    with manager.get_handle(ServableRequest.latest("m")) as handle:
        assert handle.id == ServableId("m", 1) and handle.servable == "one"
    with manager.get_handle(ServableRequest.specific("m", 1)) as handle:
        assert handle.servable == "one"
    with pytest.raises(ServingError) as info:
        manager.get_handle(ServableRequest.specific("m", 2))
    assert info.value.code == Code.NOT_FOUND
    assert info.value.message == "Servable not found for request: Specific(m, 2)"
    with pytest.raises(ServingError) as info:
        manager.get_handle(ServableRequest.latest("other"))
    assert info.value.message == "Servable not found for request: Latest(other)"


def test_states_go_start_loading_available_unloading_end(manager):
    seen: list[tuple[int, ManagerState]] = []
    manager.monitor.subscribe(lambda s: seen.append((s.id.version, s.state)))
    manager.aspired_versions_callback("m", [data("m", 1, SimpleLoader(lambda: 1))])
    assert manager.wait_until_settled(["m"], 5)
    manager.aspired_versions_callback("m", [])
    wait_until(lambda: state_of(manager, "m", 1) == ManagerState.END)
    assert [s for v, s in seen] == [
        ManagerState.START, ManagerState.LOADING, ManagerState.AVAILABLE, ManagerState.UNLOADING, ManagerState.END
    ]
    end = manager.monitor.get_state(ServableId("m", 1))
    assert end.error is None and end.reason


def test_availability_preserving_loads_new_before_unloading_old(manager):
    log: list = []
    manager.aspired_versions_callback("m", [data("m", 1, RecordingLoader(1, log=log))])
    assert manager.wait_until_settled(["m"], 5)
    gate = threading.Event()
    manager.aspired_versions_callback("m", [data("m", 2, RecordingLoader(2, gate=gate, log=log))])
    wait_until(lambda: state_of(manager, "m", 2) == ManagerState.LOADING)
    # While version 2 loads, version 1 keeps serving.
    with manager.get_handle(ServableRequest.latest("m")) as handle:
        assert handle.id.version == 1
    gate.set()
    wait_until(lambda: manager.available_versions("m") == [2])
    wait_until(lambda: ("unload", 1) in log)
    assert log.index(("load", 2)) < log.index(("unload", 1))


def test_resource_preserving_unloads_first():
    manager = AspiredVersionsManager(policy=resource_preserving, max_num_load_retries=0)
    manager.start()
    try:
        log: list = []
        manager.aspired_versions_callback("m", [data("m", 1, RecordingLoader(1, log=log))])
        assert manager.wait_until_settled(["m"], 5)
        manager.aspired_versions_callback("m", [data("m", 2, RecordingLoader(2, log=log))])
        wait_until(lambda: manager.available_versions("m") == [2])
        assert log == [("load", 1), ("unload", 1), ("load", 2)]
    finally:
        manager.stop(5)


def test_unload_waits_for_last_handle(manager):
    log: list = []
    manager.aspired_versions_callback("m", [data("m", 1, RecordingLoader(1, log=log))])
    assert manager.wait_until_settled(["m"], 5)
    handle = manager.get_handle(ServableRequest.latest("m"))
    manager.aspired_versions_callback("m", [data("m", 2, RecordingLoader(2, log=log))])
    wait_until(lambda: state_of(manager, "m", 1) == ManagerState.UNLOADING)
    # New requests already go to version 2; version 1 is not unloaded while the handle is held.
    with manager.get_handle(ServableRequest.latest("m")) as fresh:
        assert fresh.id.version == 2
    with pytest.raises(ServingError):
        manager.get_handle(ServableRequest.specific("m", 1))
    assert ("unload", 1) not in log
    handle.release()
    wait_until(lambda: ("unload", 1) in log)
    wait_until(lambda: state_of(manager, "m", 1) == ManagerState.END)


def test_failed_load_keeps_previous_and_reports_error(manager):
    manager.aspired_versions_callback("m", [data("m", 1, RecordingLoader(1))])
    assert manager.wait_until_settled(["m"], 5)
    manager.aspired_versions_callback("m", [data("m", 2, RecordingLoader(2, fail_times=99), revision="a")])
    assert manager.wait_until_settled(["m"], 5)
    end = manager.monitor.get_state(ServableId("m", 2))
    assert end.state == ManagerState.END and end.error.code == Code.NOT_FOUND and "cannot load 2" in end.error.message
    assert manager.available_versions("m") == [1]
    # Same content again: not retried. New content (revision): loaded afresh.
    manager.aspired_versions_callback("m", [data("m", 2, RecordingLoader(2, fail_times=99), revision="a")])
    assert manager.wait_until_settled(["m"], 5)
    assert manager.available_versions("m") == [1]
    manager.aspired_versions_callback("m", [data("m", 2, RecordingLoader(2), revision="b")])
    wait_until(lambda: manager.available_versions("m") == [2])


def test_load_retries():
    manager = AspiredVersionsManager(max_num_load_retries=2, load_retry_interval_s=0.01)
    manager.start()
    try:
        loader = RecordingLoader(1, fail_times=2)
        manager.aspired_versions_callback("m", [data("m", 1, loader)])
        assert manager.wait_until_settled(["m"], 5)
        assert manager.available_versions("m") == [1]
        assert [e for e in loader.log if e[0] == "load"] == [("load", 1)] * 3
    finally:
        manager.stop(5)


def test_load_timeout_fails_a_hung_loader():
    manager = AspiredVersionsManager(max_num_load_retries=0, load_timeout_s=0.2)
    manager.start()
    gate = threading.Event()
    try:
        manager.aspired_versions_callback("m", [data("m", 1, RecordingLoader(1, gate=gate))])
        assert manager.wait_until_settled(["m"], 5)
        end = manager.monitor.get_state(ServableId("m", 1))
        assert end.state == ManagerState.END and end.error.code == Code.DEADLINE_EXCEEDED
    finally:
        gate.set()
        manager.stop(5)


def test_loader_exception_is_reported_not_raised(manager):
    def boom() -> object:
        raise RuntimeError("kaput")

    manager.aspired_versions_callback("m", [data("m", 1, SimpleLoader(boom))])
    assert manager.wait_until_settled(["m"], 5)
    end = manager.monitor.get_state(ServableId("m", 1))
    assert end.state == ManagerState.END and "kaput" in end.error.message


def test_source_error_is_published(manager):
    error = ServingError(Code.INVALID_ARGUMENT, "bad platform")
    manager.aspired_versions_callback("m", [ServableData(ServableId("m", 3), error=error)])
    assert manager.wait_until_settled(["m"], 5)
    assert manager.monitor.get_state(ServableId("m", 3)).error == error


def test_loads_run_in_parallel_across_models(manager):
    gates = threading.Barrier(2, timeout=5)

    def create(value: int):
        def make() -> int:
            gates.wait()  # both loads must be running at once to pass the barrier
            return value
        return make

    manager.aspired_versions_callback("a", [data("a", 1, SimpleLoader(create(1)))])
    manager.aspired_versions_callback("b", [data("b", 1, SimpleLoader(create(2)))])
    assert manager.wait_until_settled(["a", "b"], 10)
    assert manager.available_versions("a") == [1] and manager.available_versions("b") == [1]


def test_several_versions_and_removal(manager):
    manager.aspired_versions_callback("m", [data("m", v, SimpleLoader(lambda v=v: v)) for v in (1, 2, 3)])
    assert manager.wait_until_settled(["m"], 5)
    assert manager.available_versions("m") == [3, 2, 1]
    manager.aspired_versions_callback("m", [])
    wait_until(lambda: manager.available_versions("m") == [])
    states = manager.monitor.get_version_states("m")
    assert list(states) == [3, 2, 1] and all(s.state == ManagerState.END for s in states.values())


def test_reaspired_while_unloading_comes_back(manager):
    loaders = [RecordingLoader(1)]
    manager.aspired_versions_callback("m", [data("m", 1, loaders[0])])
    assert manager.wait_until_settled(["m"], 5)
    handle = manager.get_handle(ServableRequest.latest("m"))
    manager.aspired_versions_callback("m", [])
    wait_until(lambda: state_of(manager, "m", 1) == ManagerState.UNLOADING)
    manager.aspired_versions_callback("m", [data("m", 1, RecordingLoader(1))])
    handle.release()
    wait_until(lambda: manager.available_versions("m") == [1])


def test_stop_unloads_everything():
    log: list = []
    manager = AspiredVersionsManager()
    manager.start()
    manager.aspired_versions_callback("m", [data("m", 1, RecordingLoader(1, log=log))])
    assert manager.wait_until_settled(["m"], 5)
    manager.stop(5)
    assert log == [("load", 1), ("unload", 1)]


def test_refcount_close_calls_back_once():
    calls: list[int] = []
    refs = RefCount()
    assert refs.try_acquire() and refs.try_acquire()
    refs.close(lambda: calls.append(1))
    assert not refs.try_acquire()
    refs.release()
    assert calls == []
    refs.release()
    assert calls == [1]


def test_many_threads_borrow_during_swaps(manager):
    """Requests never fail while versions swap (availability preserving)."""
    manager.aspired_versions_callback("m", [data("m", 1, SimpleLoader(lambda: 1))])
    assert manager.wait_until_settled(["m"], 5)
    failures: list[Exception] = []
    stop = threading.Event()

    def borrow() -> None:
        while not stop.is_set():
            try:
                with manager.get_handle(ServableRequest.latest("m")) as handle:
                    assert handle.servable == handle.id.version
            except Exception as error:  # pragma: no cover - reported below
                failures.append(error)

    threads = [threading.Thread(target=borrow) for _ in range(4)]
    for thread in threads:
        thread.start()
    for version in range(2, 12):
        manager.aspired_versions_callback("m", [data("m", version, SimpleLoader(lambda v=version: v))])
        wait_until(lambda v=version: manager.available_versions("m") == [v])
    stop.set()
    for thread in threads:
        thread.join()
    assert failures == []
