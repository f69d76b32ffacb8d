"""Re-apply ``--model_config_file`` when it changes (``--model_config_file_poll_wait_seconds``).

A thread checks the file's content every ``poll_s`` seconds, and at once when watchdog
reports an event in its folder. A changed file is applied only once its content has
stayed the same for ``settle_s`` seconds (an editor that truncates then writes must not
make the server apply a half-written or empty file). It is then handed to
``apply(path)``; an error (a malformed or contradictory file) is logged and kept in
``last_error``, and the current config keeps serving, as TF Serving does; the same bad
content is not retried until it changes again.

Threads: ``apply`` runs on the watcher's own thread; ``check_now`` may be called from
any thread (calls are serialized).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from typing import Callable

log = logging.getLogger(__name__)


def _digest(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return None


class ConfigFileWatcher:
    """Calls ``apply(path)`` from its own thread whenever the file's content changes."""

    def __init__(
        self,
        path: str,
        poll_s: float,
        apply: Callable[[str], None],
        *,
        use_file_events: bool = True,
        settle_s: float = 0.1,
    ) -> None:
        self.path = os.path.abspath(path)
        self.poll_s = poll_s
        self.settle_s = max(0.0, settle_s)
        self.apply = apply
        self.applied_count = 0
        self.failed_count = 0
        self.last_error: BaseException | None = None
        self._last = _digest(self.path)
        self._check_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="servable-config-watch", daemon=True)
        self._observer = None
        if use_file_events:
            self._observer = self._start_observer()

    def _start_observer(self):  # type: ignore[no-untyped-def]
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # pragma: no cover - watchdog is a dependency
            return None
        wake = self._wake
        watched = self.path

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):  # type: ignore[no-untyped-def]
                paths = {getattr(event, "src_path", ""), getattr(event, "dest_path", "")}
                if any(os.path.abspath(os.fsdecode(p)) == watched for p in paths if p):
                    wake.set()

        try:
            observer = Observer()
            observer.schedule(Handler(), os.path.dirname(self.path), recursive=False)
            observer.daemon = True
        except Exception as error:  # e.g. inotify limits: polling still works
            log.warning("cannot watch %s for changes (%s); relying on polling", self.path, error)
            return None
        return observer

    def start(self) -> None:
        if self._observer is not None:
            try:
                self._observer.start()
            except Exception as error:
                log.warning("cannot watch %s for changes (%s); relying on polling", self.path, error)
                self._observer = None
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._observer is not None:
            try:
                self._observer.stop()
            except Exception:  # teardown problems must not block shutdown
                log.debug("observer stop failed", exc_info=True)
        if self._thread.is_alive():
            self._thread.join(5)

    def _stable_digest(self) -> str | None:
        """The file's digest once it has not changed for ``settle_s`` (at most 20 tries)."""
        digest = _digest(self.path)
        for _ in range(20):
            if self.settle_s <= 0 or self._stopped.wait(self.settle_s):
                return digest
            again = _digest(self.path)
            if again == digest:
                return digest
            digest = again
        return digest

    def check_now(self) -> bool:
        """Apply the file if it changed; returns whether it was applied successfully."""
        with self._check_lock:
            if _digest(self.path) == self._last:
                return False
            digest = self._stable_digest()
            if digest is None or digest == self._last:
                return False
            self._last = digest
            try:
                self.apply(self.path)
            except Exception as error:  # keep serving the current config
                self.failed_count += 1
                self.last_error = error
                log.error("model config file %s not applied, the current config keeps serving: %s", self.path, error)
                return False
            self.applied_count += 1
            self.last_error = None
            log.info("applied model config file %s", self.path)
            return True

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                self.check_now()
            except Exception:  # never let the watcher die
                log.exception("checking %s failed", self.path)
