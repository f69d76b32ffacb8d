"""Re-apply ``--model_config_file`` when it changes (``--model_config_file_poll_wait_seconds``).

A thread checks the file's content every ``poll_s`` seconds, and at once when watchdog
reports an event in its folder. A changed file is handed to ``apply(path)``; an error
(a malformed or contradictory file) is logged and the current config keeps serving,
as TF Serving does; the same bad content is not retried until it changes again.
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

    def __init__(self, path: str, poll_s: float, apply: Callable[[str], None], *, use_file_events: bool = True) -> None:
        self.path = os.path.abspath(path)
        self.poll_s = poll_s
        self.apply = apply
        self._last = _digest(self.path)
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

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):  # type: ignore[no-untyped-def]
                wake.set()

        observer = Observer()
        observer.schedule(Handler(), os.path.dirname(self.path), recursive=False)
        observer.daemon = True
        return observer

    def start(self) -> None:
        if self._observer is not None:
            self._observer.start()
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
        self._thread.join(5)

    def check_now(self) -> bool:
        """Apply the file if it changed; returns whether it was applied successfully."""
        digest = _digest(self.path)
        if digest is None or digest == self._last:
            return False
        self._last = digest
        try:
            self.apply(self.path)
        except Exception as error:  # keep serving the current config
            log.error("model config file %s not applied, the current config keeps serving: %s", self.path, error)
            return False
        log.info("applied model config file %s", self.path)
        return True

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if self._stopped.is_set():
                return
            self.check_now()
