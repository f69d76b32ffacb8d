"""AspiredVersionsManager: turns aspired versions into loaded, routable servables.

Who calls what, from which thread:
- A source calls ``aspired_versions_callback(name, versions)`` from its own thread. The
  call only records the wish and wakes the manager thread: it never blocks on a load.
- The manager thread (one per manager) applies wishes and asks the version policy for
  the next action per stream. It is woken by events (a wish, a finished load or
  unload, a retry timer), never by a fixed tick.
- Loads run on a pool of ``num_load_threads`` threads (parallel across streams and
  versions); unloads on ``num_unload_threads``. Neither ever runs on a request thread.
- Request threads call ``get_handle()``; it reads an immutable routing snapshot (no
  manager lock) and takes a reference on the chosen version. A version chosen for unload
  is removed from the snapshot first, so new requests route to what remains at once;
  its ``Loader.unload()`` runs only after the last handle on it is released.

Every state change is published to the ``ServableStateMonitor`` with a reason, and with
the error for failures (state END).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Mapping

from servable.core.handles import RefCount, ServableHandle
from servable.core.ids import ServableId, ServableRequest
from servable.core.loader import Loader
from servable.core.policies import Action, HarnessState, Policy, VersionInfo, availability_preserving
from servable.core.source import AspiredVersionsCallback, ServableData
from servable.core.states import ManagerState, ServableState, ServableStateMonitor
from servable.core.status import Code, ServingError, not_found

log = logging.getLogger(__name__)

_SETTLED = (HarnessState.READY, HarnessState.ERROR, HarnessState.DISABLED)


@dataclass(eq=False)
class _Harness:
    """The manager's record of one version (TF Serving's LoaderHarness)."""

    id: ServableId
    loader: Loader | None
    revision: Hashable
    state: HarnessState = HarnessState.NEW
    is_aspired: bool = True
    error: ServingError | None = None
    refs: RefCount = field(default_factory=RefCount)
    servable: Any = None
    cancel: threading.Event = field(default_factory=threading.Event)
    load_started: float = 0.0


class AspiredVersionsManager:
    """Owns the lifecycle of every version of every stream it is told about."""

    def __init__(
        self,
        policy: Policy = availability_preserving,
        monitor: ServableStateMonitor | None = None,
        num_load_threads: int = 4,
        num_unload_threads: int = 2,
        max_num_load_retries: int = 5,
        load_retry_interval_s: float = 60.0,
        load_timeout_s: float | None = None,
    ) -> None:
        self._policy = policy
        self._monitor = monitor or ServableStateMonitor()
        self._max_retries = max(0, max_num_load_retries)
        self._retry_interval = max(0.0, load_retry_interval_s)
        self._load_timeout = load_timeout_s if load_timeout_s and load_timeout_s > 0 else None
        self._load_pool = ThreadPoolExecutor(max(1, num_load_threads), thread_name_prefix="servable-load")
        self._unload_pool = ThreadPoolExecutor(max(1, num_unload_threads), thread_name_prefix="servable-unload")
        self._lock = threading.Condition()
        self._streams: dict[str, dict[int, _Harness]] = {}
        self._pending: dict[str, list[ServableData]] = {}
        self._wish: dict[str, dict[int, ServableData]] = {}  # the last aspired list per stream
        self._dirty = False
        self._running = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        # name -> harnesses in READY state, newest first. Replaced, never mutated.
        self._serving: Mapping[str, tuple[_Harness, ...]] = {}

    # ------------------------------------------------------------------ public API

    @property
    def monitor(self) -> ServableStateMonitor:
        return self._monitor

    @property
    def aspired_versions_callback(self) -> AspiredVersionsCallback:
        return self._set_aspired_versions

    def start(self) -> None:
        with self._lock:
            if self._running:
                return
            self._running = True
        self._thread = threading.Thread(target=self._run, name="servable-manager", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Unload every version (waiting for in-flight requests up to ``timeout``), then stop."""
        with self._lock:
            if not self._running:
                return
            for name in list(self._streams):
                self._pending[name] = []
            self._stopping = True
            self._wake_locked()
            deadline = time.monotonic() + timeout
            while any(self._streams.values()) or self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning("stop: versions still loaded after %.1fs: %s", timeout, self._describe_locked())
                    break
                self._lock.wait(min(remaining, 0.5))
            self._running = False
            self._wake_locked()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._load_pool.shutdown(wait=False, cancel_futures=True)
        self._unload_pool.shutdown(wait=False, cancel_futures=True)

    def get_handle(self, request: ServableRequest) -> ServableHandle:
        """Borrow the version ``request`` names. NOT_FOUND when it is not AVAILABLE.

        Latest means the highest-numbered AVAILABLE version. Called from request threads.
        """
        serving = self._serving
        while True:
            for harness in serving.get(request.name, ()):
                if request.version is not None and harness.id.version != request.version:
                    continue
                if harness.refs.try_acquire():
                    return ServableHandle(harness.id, harness.servable, harness.refs)
            # A version was leaving while we looked: the manager publishes the new
            # snapshot before closing the old version, so look again at the newer one.
            latest = self._serving
            if latest is serving:
                break
            serving = latest
        raise not_found(f"Servable not found for request: {request}")

    def available_versions(self, name: str) -> list[int]:
        """Versions of ``name`` currently AVAILABLE, newest first."""
        return [h.id.version for h in self._serving.get(name, ())]

    def list_available(self) -> dict[str, list[int]]:
        return {name: [h.id.version for h in hs] for name, hs in self._serving.items() if hs}

    def wait_until_settled(self, names: Iterable[str], timeout: float | None = None) -> bool:
        """Wait until every aspired version of ``names`` is AVAILABLE or has failed.

        Wishes already handed to ``aspired_versions_callback`` count: call this after the
        source has emitted. True when settled, False at the timeout.
        """
        wanted = list(names)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._settled_locked(wanted):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._lock.wait(0.5 if remaining is None else min(remaining, 0.5))
            return True

    # ------------------------------------------------------------------ source side

    def _set_aspired_versions(self, name: str, versions: list[ServableData]) -> None:
        with self._lock:
            if self._stopping:
                return
            self._pending[name] = list(versions)
            self._wake_locked()

    # ------------------------------------------------------------------ manager thread

    def _wake_locked(self) -> None:
        self._dirty = True
        self._lock.notify_all()

    def _run(self) -> None:
        with self._lock:
            while self._running:
                while not self._dirty and self._running:
                    self._lock.wait()
                self._dirty = False
                try:
                    self._apply_pending_locked()
                    for name in list(self._streams):
                        self._drive_stream_locked(name)
                except Exception:  # never let the manager thread die
                    log.exception("manager iteration failed")
                self._lock.notify_all()

    def _apply_pending_locked(self) -> None:
        pending, self._pending = self._pending, {}
        for name, versions in pending.items():
            stream = self._streams.setdefault(name, {})
            wanted = {data.id.version: data for data in versions if data.id.name == name}
            if wanted:
                self._wish[name] = wanted
            else:
                self._wish.pop(name, None)
            for version, harness in list(stream.items()):
                if version not in wanted:
                    if harness.is_aspired:
                        harness.is_aspired = False
                        harness.cancel.set()
            for version, data in sorted(wanted.items()):
                harness = stream.get(version)
                if harness is not None and harness.state == HarnessState.ERROR and data.revision != harness.revision:
                    log.info("%s changed on disk since its failed load; loading it again", data.id)
                    del stream[version]
                    harness = None
                if harness is None:
                    self._add_harness_locked(stream, data)
                elif not harness.is_aspired:
                    if harness.state in (HarnessState.NEW, HarnessState.LOADING, HarnessState.READY, HarnessState.ERROR):
                        harness.is_aspired = True
                        harness.cancel.clear()
                    else:
                        # Leaving right now; re-added once it has unloaded (see _unload).
                        harness.is_aspired = False
            if not stream:
                del self._streams[name]

    def _add_harness_locked(self, stream: dict[int, _Harness], data: ServableData) -> None:
        harness = _Harness(data.id, data.loader, data.revision)
        stream[data.id.version] = harness
        if data.error is not None:
            harness.state = HarnessState.ERROR
            harness.error = data.error
            self._publish(harness, ManagerState.END, "the source could not create a loader", data.error)
        else:
            self._publish(harness, ManagerState.START, "aspired by the source")

    def _drive_stream_locked(self, name: str) -> None:
        stream = self._streams.get(name)
        if stream is None:
            return
        # Versions that failed and are no longer wanted leave the manager (their END stays published).
        for version, harness in list(stream.items()):
            if harness.state in (HarnessState.ERROR, HarnessState.DISABLED) and not harness.is_aspired:
                del stream[version]
        for _ in range(2 * len(stream) + 2):
            infos = [VersionInfo(h.id, h.state, h.is_aspired) for h in stream.values()]
            action = self._policy(infos)
            if action is None:
                break
            harness = stream.get(action.id.version)
            if harness is None:
                break
            if action.kind == "load" and harness.state == HarnessState.NEW:
                self._start_load_locked(harness)
            elif action.kind == "unload" and harness.state in (HarnessState.READY, HarnessState.NEW):
                self._start_unload_locked(harness)
            else:
                break
        if not stream:
            self._streams.pop(name, None)

    # ------------------------------------------------------------------ loading

    def _start_load_locked(self, harness: _Harness) -> None:
        harness.state = HarnessState.LOADING
        harness.load_started = time.monotonic()
        self._publish(harness, ManagerState.LOADING, "load approved")
        self._load_pool.submit(self._load, harness)

    def _load(self, harness: _Harness) -> None:
        """Load thread: try, retry while aspired, then report."""
        error: ServingError | None = None
        attempts = self._max_retries + 1
        for attempt in range(attempts):
            if attempt:
                if harness.cancel.wait(self._retry_interval) or not harness.is_aspired:
                    error = error or ServingError(Code.CANCELLED, "load cancelled: version no longer aspired")
                    break
                log.info("retrying load of %s (attempt %d of %d)", harness.id, attempt + 1, attempts)
            error = self._load_once(harness)
            if error is None:
                break
            log.warning("loading %s failed (attempt %d of %d): %s", harness.id, attempt + 1, attempts, error.message)
            if error.code == Code.DEADLINE_EXCEEDED:
                break  # a hung loader is not retried: its thread may still be running
        with self._lock:
            if error is None:
                harness.servable = harness.loader.servable() if harness.loader else None
                harness.state = HarnessState.READY
                self._publish_serving_locked(harness.id.name)
                seconds = time.monotonic() - harness.load_started
                self._publish(harness, ManagerState.AVAILABLE, f"loaded in {seconds:.3f}s")
            else:
                harness.state = HarnessState.ERROR
                harness.error = error
                self._publish(harness, ManagerState.END, "load failed", error)
            self._wake_locked()

    def _load_once(self, harness: _Harness) -> ServingError | None:
        loader = harness.loader
        if loader is None:
            return ServingError(Code.INTERNAL, "no loader")
        if self._load_timeout is None:
            return _call_load(loader, harness.id)
        outcome: list[ServingError | None] = []
        abandoned = threading.Event()

        def target() -> None:
            result = _call_load(loader, harness.id)
            outcome.append(result)
            if abandoned.is_set() and result is None:
                _call_unload(loader, harness.id)  # finished after we gave up: free it

        thread = threading.Thread(target=target, name=f"servable-load-{harness.id.name}", daemon=True)
        thread.start()
        thread.join(self._load_timeout)
        if thread.is_alive():
            abandoned.set()
            return ServingError(
                Code.DEADLINE_EXCEEDED,
                f"Loading servable {harness.id} did not finish within {self._load_timeout:g}s (--load_timeout_seconds)",
            )
        return outcome[0]

    # ------------------------------------------------------------------ unloading

    def _start_unload_locked(self, harness: _Harness) -> None:
        if harness.state == HarnessState.NEW:
            harness.state = HarnessState.DISABLED
            self._publish(harness, ManagerState.END, "no longer aspired before it was loaded")
            return
        harness.state = HarnessState.QUIESCING
        self._publish(harness, ManagerState.UNLOADING, "no longer aspired")
        self._publish_serving_locked(harness.id.name)  # new requests stop routing here now
        harness.refs.close(lambda: self._unload_pool.submit(self._unload, harness))

    def _unload(self, harness: _Harness) -> None:
        """Unload thread: runs after the version's last handle was released."""
        with self._lock:
            harness.state = HarnessState.UNLOADING
        harness.servable = None
        loader = harness.loader
        error = _call_unload(loader, harness.id) if loader else None
        with self._lock:
            harness.state = HarnessState.DISABLED
            harness.loader = None
            stream = self._streams.get(harness.id.name, {})
            if stream.get(harness.id.version) is harness:
                del stream[harness.id.version]
                if not stream:
                    self._streams.pop(harness.id.name, None)
            self._publish(harness, ManagerState.END, "unloaded", error)
            # Aspired again while it was leaving: start over with a fresh loader.
            data = self._wish.get(harness.id.name, {}).get(harness.id.version)
            if data is not None and data.loader is not loader and not self._stopping:
                self._add_harness_locked(self._streams.setdefault(harness.id.name, {}), data)
            self._wake_locked()

    # ------------------------------------------------------------------ helpers

    def _publish_serving_locked(self, name: str) -> None:
        stream = self._streams.get(name, {})
        ready = tuple(
            sorted((h for h in stream.values() if h.state == HarnessState.READY), key=lambda h: -h.id.version)
        )
        serving = dict(self._serving)
        if ready:
            serving[name] = ready
        else:
            serving.pop(name, None)
        self._serving = serving

    def _publish(self, harness: _Harness, state: ManagerState, reason: str, error: ServingError | None = None) -> None:
        self._monitor.notify(ServableState(harness.id, state, error, reason))

    def _settled_locked(self, names: list[str]) -> bool:
        for name in names:
            if name in self._pending:
                return False
            for harness in self._streams.get(name, {}).values():
                if harness.is_aspired and harness.state not in _SETTLED:
                    return False
        return True

    def _describe_locked(self) -> str:
        return ", ".join(f"{h.id}:{h.state.value}" for s in self._streams.values() for h in s.values())


def _call_load(loader: Loader, id: ServableId) -> ServingError | None:
    try:
        loader.load()
        return None
    except ServingError as error:
        return error
    except Exception as error:  # a loader bug or a bad model: report, never crash
        log.debug("load of %s raised", id, exc_info=True)
        return ServingError(Code.UNKNOWN, f"{type(error).__name__}: {error}")


def _call_unload(loader: Loader, id: ServableId) -> ServingError | None:
    try:
        loader.unload()
        return None
    except Exception as error:
        log.exception("unload of %s raised", id)
        return ServingError(Code.INTERNAL, f"unload failed: {error}")
