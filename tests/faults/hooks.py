"""Process-wide switches that fault-injection models (servable.py files) wait on.

The python-platform models written by ``tests.faults.conftest.write_python_version`` import
this module, so a test can hold a load or a request open and release it later without a
fixed sleep. ``reset()`` gives every test fresh events; ``release_all()`` lets every
waiter go (called at teardown so no worker thread stays stuck).
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_events: dict[str, threading.Event] = {}
_entered: dict[str, threading.Event] = {}


def event(name: str) -> threading.Event:
    """The release event called ``name`` (created on first use)."""
    with _lock:
        return _events.setdefault(name, threading.Event())


def entered(name: str) -> threading.Event:
    """Set by a model when it starts waiting on ``name`` (tests wait for it)."""
    with _lock:
        return _entered.setdefault(name, threading.Event())


def hold(name: str, timeout: float = 30.0) -> bool:
    """Called by a model: announce, then block until released (or ``timeout``)."""
    entered(name).set()
    return event(name).wait(timeout)


def release_all() -> None:
    with _lock:
        for item in _events.values():
            item.set()


def reset() -> None:
    release_all()
    with _lock:
        _events.clear()
        _entered.clear()
