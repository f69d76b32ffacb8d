"""Published version states and the monitor that records them.

``ManagerState`` values equal ``tensorflow.serving.ModelVersionStatus.State`` so the
front doors can copy them into GetModelStatus answers. The manager calls
``ServableStateMonitor.notify`` on every transition (from its own threads); readers
(status RPCs, readiness, tests) query or wait on it from any thread.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from servable.core.ids import ServableId
from servable.core.status import ServingError


class ManagerState(enum.IntEnum):
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True)
class ServableState:
    """One version's published state; ``error`` is set when it ended because of a failure."""

    id: ServableId
    state: ManagerState
    error: ServingError | None = None
    reason: str = ""
    timestamp: float = field(default_factory=time.time)


StateCallback = Callable[[ServableState], None]


class ServableStateMonitor:
    """Latest state of every version ever seen, and a way to wait for states.

    Thread-safe. Subscribers are called synchronously from the notifying thread after
    the state is recorded, in notification order; they must be quick and must not raise.
    """

    def __init__(self, max_ended_per_stream: int = 16) -> None:
        self._cond = threading.Condition()
        self._states: dict[str, dict[int, ServableState]] = {}
        self._subscribers: list[StateCallback] = []
        self._max_ended = max_ended_per_stream

    def notify(self, state: ServableState) -> None:
        with self._cond:
            versions = self._states.setdefault(state.id.name, {})
            versions[state.id.version] = state
            self._forget_old_ended(versions)
            subscribers = list(self._subscribers)
            self._cond.notify_all()
        for callback in subscribers:
            try:
                callback(state)
            except Exception:  # a broken subscriber must not break the manager
                import logging

                logging.getLogger(__name__).exception("state subscriber failed")

    def _forget_old_ended(self, versions: dict[int, ServableState]) -> None:
        ended = [v for v, s in versions.items() if s.state == ManagerState.END]
        if len(ended) > self._max_ended:
            for version in sorted(ended, key=lambda v: versions[v].timestamp)[: len(ended) - self._max_ended]:
                del versions[version]

    def forget(self, name: str) -> None:
        """Drop the history of a stream (after a model leaves the config and has ended)."""
        with self._cond:
            self._states.pop(name, None)

    def subscribe(self, callback: StateCallback) -> None:
        with self._cond:
            self._subscribers.append(callback)

    def get_state(self, id: ServableId) -> ServableState | None:
        with self._cond:
            return self._states.get(id.name, {}).get(id.version)

    def get_version_states(self, name: str) -> dict[int, ServableState]:
        """Every known version of ``name``, newest version first."""
        with self._cond:
            versions = self._states.get(name, {})
            return {v: versions[v] for v in sorted(versions, reverse=True)}

    def get_all_states(self) -> dict[str, dict[int, ServableState]]:
        with self._cond:
            return {name: dict(versions) for name, versions in self._states.items()}

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait until ``predicate()`` (evaluated after each notification) holds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining if remaining is not None else 1.0)
            return True

    def wait_for_state(
        self, id: ServableId, states: set[ManagerState] | ManagerState, timeout: float | None = None
    ) -> ServableState | None:
        wanted = {states} if isinstance(states, ManagerState) else set(states)
        found: list[ServableState] = []

        def reached() -> bool:
            state = self._states.get(id.name, {}).get(id.version)
            if state is not None and state.state in wanted:
                found.append(state)
                return True
            return False

        return found[-1] if self.wait_until(reached, timeout) else None
