"""Reference-counted handles: how requests borrow a loaded version.

The manager gives each loaded version a ``RefCount``. A request calls
``manager.get_handle()`` and holds the returned ``ServableHandle`` (a context manager)
for the duration of one request. When the version is to be unloaded, the manager
``close()``s its counter: no new handle can be taken, and the ``on_drained`` callback
runs (on the thread that releases the last handle, or at once when none is held) so the
unload happens only after the last in-flight request has finished.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from servable.core.ids import ServableId


class RefCount:
    """Counts the handles held on one version; thread-safe."""

    __slots__ = ("_lock", "_count", "_open", "_on_drained")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._open = True
        self._on_drained: Callable[[], None] | None = None

    @property
    def count(self) -> int:
        return self._count

    def try_acquire(self) -> bool:
        """Take one reference; False once the counter is closed (version leaving)."""
        with self._lock:
            if not self._open:
                return False
            self._count += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._count -= 1
            drained = not self._open and self._count == 0
            callback = self._on_drained if drained else None
            if drained:
                self._on_drained = None
        if callback is not None:
            callback()

    def close(self, on_drained: Callable[[], None]) -> None:
        """Refuse new references; call ``on_drained`` once none is held (maybe right now)."""
        with self._lock:
            self._open = False
            if self._count == 0:
                callback: Callable[[], None] | None = on_drained
            else:
                self._on_drained = on_drained
                callback = None
        if callback is not None:
            callback()


class ServableHandle:
    """One borrowed reference on a loaded version. Use as ``with manager.get_handle(r) as h``.

    ``servable`` is valid until ``release()`` (called by ``__exit__``); releasing twice
    is harmless. Not thread-affine: it may be released from another thread.
    """

    __slots__ = ("id", "servable", "_refs", "_released")

    def __init__(self, id: ServableId, servable: Any, refs: RefCount) -> None:
        self.id = id
        self.servable = servable
        self._refs = refs
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.servable = None
            self._refs.release()

    def __enter__(self) -> "ServableHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"ServableHandle({self.id}, released={self._released})"
