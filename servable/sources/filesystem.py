"""FileSystemSource: versions are numbered folders under each model's base path.

``BASE/<model>/<version>/``: a version is a child folder whose name is a non-negative
integer (``00000123`` is 123). Each model's version policy picks the aspired versions
among the complete ones, and the source emits them through the aspired-versions
callback whenever the choice (or a failed version's content) changes.

Beyond TF Serving's poller:
- File events (watchdog) trigger a rescan at once; the periodic scan
  (``poll_wait_seconds``) is the fallback for filesystems without events.
- A folder is only offered once it is complete (``saved_model.pb`` or another marker,
  and every variables shard the index names) and has settled: two observations of its
  file list, sizes and mtimes at least ``settle_seconds`` apart are identical. A folder
  still being copied is never loaded half-written.
- The content fingerprint travels as ``ServableData.revision``: a version whose load
  failed is loaded again when its folder changes.
- A missing or unreadable base path only affects its own model: its loaded versions
  keep serving and the other models keep updating.

Threads: one background thread (scans on events, timers and polls). ``update_config``
is called by ServerCore from another thread; it scans synchronously before returning, so
the manager already holds the new aspired versions when it returns. Scans are serialized.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

from servable.core.ids import ServableId
from servable.core.loader import Loader
from servable.core.source import AspiredVersionsCallback, ServableData, Source
from servable.core.status import Code, ServingError
from servable.sources.version_policy import Latest

log = logging.getLogger(__name__)


class _BenignUnscheduleRace(logging.Filter):
    """Drops watchdog's "queue_events() called when the thread is inactive" ERROR.

    Why: unscheduling a watch (a model removed from the config) stops its emitter thread
    while it may be between two reads; watchdog 7 then logs that line at ERROR and
    returns. Nothing failed (the watch was meant to end), and an operator seeing ERROR
    after a routine config reload would go looking for a fault. Every other watchdog
    record passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_BenignUnscheduleRace())

LoaderFactory = Callable[[str, int, str], Loader]

_VERSION_NAME = re.compile(r"[0-9]{1,18}")
MARKER_FILES = ("saved_model.pb", "saved_model.pbtxt", "servable.py")
_SHARD = re.compile(r"variables\.data-(\d+)-of-(\d+)")


@dataclass(frozen=True)
class ServableToMonitor:
    """One model to watch: its name, base path and version policy."""

    name: str
    base_path: str
    policy: Any = field(default_factory=Latest)


@dataclass
class _Observation:
    fingerprint: Hashable
    since: float


Fingerprint = tuple


def fingerprint(path: str) -> Fingerprint:
    """(relative path, size, mtime_ns) of every file and folder below ``path``, sorted."""
    entries = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files) + dirs:
            full = os.path.join(root, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            entries.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
    return tuple(entries)


def is_complete(path: str, entries: Fingerprint) -> bool:
    """Holds a model marker file, and every variables shard the shard names promise."""
    names = {entry[0] for entry in entries}
    if not any(marker in names for marker in MARKER_FILES):
        return False
    if "saved_model.pbtxt" in names or "servable.py" in names:
        return True
    variables = {name.split("/", 1)[1] for name in names if name.startswith("variables/") and "/" in name}
    if not variables:
        return True  # no variables (constants only) or not written yet: settle decides
    if "variables.index" not in variables:
        return False
    shards = [m for m in (_SHARD.fullmatch(v) for v in variables) if m]
    if not shards:
        return False
    total = int(shards[0].group(2))
    return len({m.group(1) for m in shards}) == total


def list_versions(base_path: str) -> dict[int, str]:
    """Numeric child folders of ``base_path`` (version -> path). Raises OSError."""
    found: dict[int, str] = {}
    with os.scandir(base_path) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if not _VERSION_NAME.fullmatch(entry.name):
                continue
            try:
                if not entry.is_dir():
                    continue
            except OSError:
                continue
            version = int(entry.name)
            if version in found:
                log.warning("versions %s and %s of %s are both %d; using the first", found[version], entry.path, base_path, version)
                continue
            found[version] = entry.path
    return found


class FileSystemSource(Source):
    """Watches model base paths and emits aspired versions (see the module docstring)."""

    def __init__(
        self,
        servables: Sequence[ServableToMonitor],
        loader_factory: LoaderFactory,
        poll_wait_seconds: float = 1.0,
        settle_seconds: float = 0.1,
        use_file_events: bool = True,
    ) -> None:
        self._loader_factory = loader_factory
        self._poll_wait = poll_wait_seconds
        self._settle = max(0.0, settle_seconds)
        self._use_events = use_file_events
        self._callback: AspiredVersionsCallback | None = None
        self._servables: dict[str, ServableToMonitor] = {s.name: s for s in servables}
        self._scan_lock = threading.Lock()
        self._cond = threading.Condition()
        self._wake = False
        self._running = False
        self._thread: threading.Thread | None = None
        self._observer: Any = None
        self._watches: dict[str, Any] = {}
        # Source state (guarded by _scan_lock).
        self._observations: dict[tuple[str, int], _Observation] = {}
        self._emitted: dict[str, dict[int, Hashable]] = {}
        self._data: dict[tuple[str, int], ServableData] = {}
        self._next_deadline: float | None = None
        self._warned: dict[str, str] = {}

    # ------------------------------------------------------------------ Source API

    def set_aspired_versions_callback(self, callback: AspiredVersionsCallback) -> None:
        self._callback = callback

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        if self._poll_wait > 0:
            self._thread = threading.Thread(target=self._run, name="servable-fs-source", daemon=True)
            self._thread.start()
            if self._use_events:
                self._start_observer()
        self.scan()

    def stop(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._observer is not None:
            try:
                self._observer.stop()
                self._observer.join(timeout=5)
            except Exception:  # watchdog teardown problems must not block shutdown
                log.debug("observer stop failed", exc_info=True)
            self._observer = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    def update_config(self, servables: Sequence[ServableToMonitor]) -> None:
        """Replace the watched models; scans (and emits) before returning.

        Removed models are emitted with an empty list, so the manager unloads them.
        """
        with self._scan_lock:
            removed = set(self._servables) - {s.name for s in servables}
            self._servables = {s.name: s for s in servables}
            for name in removed:
                self._emit(name, {})
                self._emitted.pop(name, None)
                for key in [k for k in self._observations if k[0] == name]:
                    del self._observations[key]
        self._refresh_watches()
        self.scan(wait_for_settle=True)

    # ------------------------------------------------------------------ scanning

    def scan(self, wait_for_settle: bool = False) -> None:
        """Scan every model once (any thread). With ``wait_for_settle``, new folders
        found complete are observed a second time after the settle delay, so a fully
        written folder is emitted before this returns."""
        pending = self._scan_once()
        if wait_for_settle and pending:
            time.sleep(self._settle)
            self._scan_once()

    def _scan_once(self) -> bool:
        """One pass over every model. Returns True when some folder is still settling."""
        with self._scan_lock:
            now = time.monotonic()
            self._next_deadline = None
            settling = False
            for model in list(self._servables.values()):
                try:
                    settling |= self._scan_model(model, now)
                except Exception:  # one model's problem never stops the others
                    log.exception("scanning %s failed", model.base_path)
            return settling

    def _scan_model(self, model: ServableToMonitor, now: float) -> bool:
        try:
            folders = list_versions(model.base_path)
        except OSError as error:
            message = f"Could not find base path {model.base_path} for servable {model.name} with error {error.strerror or error}"
            if self._warned.get(model.name) != message:
                log.warning("FileSystemSource: %s", message)
                self._warned[model.name] = message
            return False  # keep what is loaded; other models go on
        self._warned.pop(model.name, None)
        ready: dict[int, Hashable] = {}
        settling = False
        for version, path in folders.items():
            entries = fingerprint(path)
            key = (model.name, version)
            seen = self._observations.get(key)
            if seen is None or seen.fingerprint != entries:
                self._observations[key] = _Observation(entries, now)
                settling = True
                self._schedule(now + self._settle)
                continue
            if not is_complete(path, entries):
                continue
            if now - seen.since < self._settle:
                settling = True
                self._schedule(seen.since + self._settle)
                continue
            ready[version] = entries
        for key in [k for k in self._observations if k[0] == model.name and k[1] not in folders]:
            del self._observations[key]
        selected = model.policy.select(ready)
        if not folders:
            message = (
                f"No versions of servable {model.name} found under base path {model.base_path}. "
                "Did you forget to name your leaf directory as a number (eg. '/1/')?"
            )
            if self._warned.get(model.name) != message:
                log.warning("%s", message)
                self._warned[model.name] = message
        wanted = {version: ready[version] for version in selected}
        # A version still on disk and already aspired stays aspired while it settles again.
        for version, revision in self._emitted.get(model.name, {}).items():
            if version in folders and version not in ready and version in selected_fallback(model, folders, ready):
                wanted[version] = revision
        previous = self._emitted.get(model.name)
        if wanted != previous and (wanted or previous is not None):
            self._emit(model.name, {version: (folders[version], revision) for version, revision in wanted.items()})
            self._emitted[model.name] = wanted
        return settling

    def _emit(self, name: str, versions: dict[int, tuple[str, Hashable]]) -> None:
        items: list[ServableData] = []
        for version, (path, revision) in sorted(versions.items()):
            key = (name, version)
            cached = self._data.get(key)
            if cached is not None and cached.revision == revision:
                items.append(cached)
                continue
            sid = ServableId(name, version)
            try:
                data = ServableData(sid, loader=self._loader_factory(name, version, path), revision=revision)
            except ServingError as error:
                data = ServableData(sid, error=error, revision=revision)
            except Exception as error:
                data = ServableData(sid, error=ServingError(Code.UNKNOWN, f"{type(error).__name__}: {error}"), revision=revision)
            self._data[key] = data
            items.append(data)
        for key in [k for k in self._data if k[0] == name and k[1] not in versions]:
            del self._data[key]
        log.info("aspired versions of %s: %s", name, [item.id.version for item in items])
        if self._callback is not None:
            self._callback(name, items)

    # ------------------------------------------------------------------ background thread

    def _schedule(self, deadline: float) -> None:
        if self._next_deadline is None or deadline < self._next_deadline:
            self._next_deadline = deadline

    def notify_change(self) -> None:
        """Something changed on disk (file event): rescan soon. Any thread."""
        with self._cond:
            self._wake = True
            self._cond.notify_all()

    def _run(self) -> None:
        next_poll = time.monotonic() + self._poll_wait
        while True:
            with self._cond:
                while self._running and not self._wake:
                    now = time.monotonic()
                    deadline = next_poll if self._next_deadline is None else min(next_poll, self._next_deadline)
                    if now >= deadline:
                        break
                    self._cond.wait(deadline - now)
                if not self._running:
                    return
                self._wake = False
            # Coalesce bursts of events (a copy produces many) for a few milliseconds.
            time.sleep(0.005)
            self._scan_once()
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + self._poll_wait

    def _start_observer(self) -> None:
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # polling still works
            log.warning("watchdog is not installed: polling only")
            return
        source = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                if getattr(event, "event_type", "") in ("opened", "closed_no_write"):
                    return
                source.notify_change()

        self._handler = Handler()
        self._observer = Observer()
        self._observer.daemon = True
        self._observer.start()
        self._refresh_watches()

    def _refresh_watches(self) -> None:
        """Watch each existing base path (recursively) and the parent of missing ones."""
        if self._observer is None:
            return
        wanted: set[str] = set()
        for model in self._servables.values():
            path = os.path.abspath(model.base_path)
            if not os.path.isdir(path):
                path = os.path.dirname(path)
                if not os.path.isdir(path):
                    continue
                wanted.add(path + "\0shallow")
            else:
                wanted.add(path)
        for key in list(self._watches):
            if key not in wanted:
                try:
                    self._observer.unschedule(self._watches.pop(key))
                except Exception:
                    log.debug("unschedule failed", exc_info=True)
        for key in wanted - set(self._watches):
            path, _, shallow = key.partition("\0")
            try:
                self._watches[key] = self._observer.schedule(self._handler, path, recursive=not shallow)
            except Exception as error:  # e.g. inotify watch limit: polling covers it
                log.warning("cannot watch %s (%s); relying on polling", path, error)


def selected_fallback(model: ServableToMonitor, folders: dict[int, str], ready: dict[int, Hashable]) -> list[int]:
    """Versions the policy would pick if every folder on disk were ready.

    Used so that an aspired version whose folder is being touched (settling again)
    stays aspired instead of being unloaded and reloaded.
    """
    return model.policy.select(folders)
