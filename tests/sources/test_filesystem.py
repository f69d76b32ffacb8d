"""The filesystem source with a plain Python loader factory (no TensorFlow)."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

from servable.core.loader import SimpleLoader
from servable.core.source import ServableData
from servable.sources.filesystem import FileSystemSource, ServableToMonitor, is_complete, fingerprint, list_versions
from servable.sources.version_policy import All, Latest, Specific
from tests.conftest import wait_until


def make_version(base, version, shards: int = 1, complete: bool = True) -> str:
    path = os.path.join(str(base), str(version))
    os.makedirs(os.path.join(path, "variables"), exist_ok=True)
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(b"pb")
    with open(os.path.join(path, "variables", "variables.index"), "wb") as f:
        f.write(b"index")
    for shard in range(shards if complete else shards - 1):
        with open(os.path.join(path, "variables", f"variables.data-{shard:05d}-of-{shards:05d}"), "wb") as f:
            f.write(b"data")
    return path


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.data: dict[str, list[ServableData]] = {}
        self.lock = threading.Lock()

    def __call__(self, name: str, versions: list[ServableData]) -> None:
        with self.lock:
            self.calls.append((name, [d.id.version for d in versions]))
            self.data[name] = versions

    def latest(self, name: str) -> list[int] | None:
        with self.lock:
            for n, versions in reversed(self.calls):
                if n == name:
                    return versions
        return None


def factory(name: str, version: int, path: str) -> SimpleLoader:
    return SimpleLoader(lambda: (name, version, path))


@pytest.fixture
def source_factory():
    created: list[FileSystemSource] = []

    def make(models, **kwargs) -> tuple[FileSystemSource, Recorder]:
        kwargs.setdefault("poll_wait_seconds", 0.2)
        kwargs.setdefault("settle_seconds", 0.05)
        source = FileSystemSource([], loader_factory=factory, **kwargs)
        recorder = Recorder()
        source.set_aspired_versions_callback(recorder)
        source.start()
        source.update_config(models)
        created.append(source)
        return source, recorder

    yield make
    for source in created:
        source.stop()


def test_version_names(tmp_path):
    for name in ("1", "00000123", "v2", "1.0", "123.tmp", ".7"):
        (tmp_path / name).mkdir()
    (tmp_path / "42").write_text("a file, not a folder")
    assert sorted(list_versions(str(tmp_path))) == [1, 123]


def test_completeness(tmp_path):
    path = make_version(tmp_path, 1, shards=2, complete=False)
    assert not is_complete(path, fingerprint(path))
    make_version(tmp_path, 1, shards=2)
    assert is_complete(path, fingerprint(path))
    os.remove(os.path.join(path, "saved_model.pb"))
    assert not is_complete(path, fingerprint(path))


def test_initial_scan_emits_synchronously(tmp_path, source_factory):
    make_version(tmp_path / "m", 1)
    make_version(tmp_path / "m", 2)
    _, recorder = source_factory([ServableToMonitor("m", str(tmp_path / "m"))])
    assert recorder.latest("m") == [2]


@pytest.mark.parametrize("policy,expected", [(Latest(2), [2, 3]), (All(), [1, 2, 3]), (Specific((1, 3, 9)), [1, 3])])
def test_policies(tmp_path, source_factory, policy, expected):
    for v in (1, 2, 3):
        make_version(tmp_path / "m", v)
    _, recorder = source_factory([ServableToMonitor("m", str(tmp_path / "m"), policy)])
    assert recorder.latest("m") == expected


def test_new_folder_noticed_quickly_and_only_when_complete(tmp_path, source_factory):
    base = tmp_path / "m"
    make_version(base, 1)
    _, recorder = source_factory([ServableToMonitor("m", str(base))], poll_wait_seconds=30)
    assert recorder.latest("m") == [1]
    make_version(base, 2, shards=2, complete=False)
    time.sleep(0.3)  # an incomplete folder must not be offered, however long we wait
    assert recorder.latest("m") == [1]
    started = time.monotonic()
    make_version(base, 2, shards=2)
    wait_until(lambda: recorder.latest("m") == [2], timeout=5)
    # File events (no poll for 30 s) make this fast.
    assert time.monotonic() - started < 2.0


def test_deleting_newest_falls_back(tmp_path, source_factory):
    base = tmp_path / "m"
    make_version(base, 1)
    make_version(base, 2)
    _, recorder = source_factory([ServableToMonitor("m", str(base))])
    assert recorder.latest("m") == [2]
    shutil.rmtree(base / "2")
    wait_until(lambda: recorder.latest("m") == [1], timeout=5)


def test_missing_base_path_does_not_stop_others(tmp_path, source_factory):
    make_version(tmp_path / "good", 1)
    _, recorder = source_factory(
        [ServableToMonitor("missing", str(tmp_path / "nope")), ServableToMonitor("good", str(tmp_path / "good"))]
    )
    assert recorder.latest("good") == [1]
    assert recorder.latest("missing") is None
    make_version(tmp_path / "good", 2)
    wait_until(lambda: recorder.latest("good") == [2], timeout=5)
    # The missing model appears later and is picked up.
    make_version(tmp_path / "nope", 4)
    wait_until(lambda: recorder.latest("missing") == [4], timeout=5)


def test_removed_model_gets_empty_list(tmp_path, source_factory):
    make_version(tmp_path / "a", 1)
    make_version(tmp_path / "b", 1)
    source, recorder = source_factory(
        [ServableToMonitor("a", str(tmp_path / "a")), ServableToMonitor("b", str(tmp_path / "b"))]
    )
    source.update_config([ServableToMonitor("a", str(tmp_path / "a"))])
    assert recorder.latest("b") == []


def test_changed_content_changes_revision(tmp_path, source_factory):
    base = tmp_path / "m"
    path = make_version(base, 1)
    _, recorder = source_factory([ServableToMonitor("m", str(base))])
    first = recorder.data["m"][0]
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(b"fixed content, different size")
    wait_until(lambda: recorder.data["m"][0].revision != first.revision, timeout=5)
    assert recorder.data["m"][0].loader is not first.loader


def test_polling_without_events(tmp_path, source_factory):
    base = tmp_path / "m"
    make_version(base, 1)
    _, recorder = source_factory([ServableToMonitor("m", str(base))], use_file_events=False, poll_wait_seconds=0.1)
    make_version(base, 5)
    wait_until(lambda: recorder.latest("m") == [5], timeout=5)


def test_loader_factory_error_becomes_servable_data_error(tmp_path):
    make_version(tmp_path / "m", 1)

    def broken(name, version, path):
        raise ValueError("no loader for you")

    source = FileSystemSource([], loader_factory=broken, poll_wait_seconds=0)
    recorder = Recorder()
    source.set_aspired_versions_callback(recorder)
    source.update_config([ServableToMonitor("m", str(tmp_path / "m"))])
    (item,) = recorder.data["m"]
    assert item.loader is None and "no loader for you" in item.error.message


def test_watchdogs_benign_unschedule_race_is_not_logged_as_an_error(caplog):
    """watchdog logs ERROR when a removed watch's emitter stops between reads; nothing failed."""
    import logging

    import servable.sources.filesystem  # noqa: F401 (installs the filter)

    logger = logging.getLogger("watchdog.observers.inotify")
    with caplog.at_level(logging.INFO, logger="watchdog.observers.inotify"):
        logger.error("InotifyEmitter.queue_events() called when the thread is inactive")
        logger.error("some other inotify failure")
    assert [r.getMessage() for r in caplog.records if r.name == "watchdog.observers.inotify"] == [
        "some other inotify failure"
    ]
