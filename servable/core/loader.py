"""Loader: loads, unloads and sizes one version of a servable.

The manager owns every loader it is given. Call order, all from manager worker threads:
``estimate_resources()`` (optional, any time), ``load()`` once (maybe again after a failed
attempt when retries are on), ``servable()`` any number of times while loaded, then
``unload()`` once after the last request handle on the version is released.
"""

from __future__ import annotations

import abc
import logging
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


def close_wrapped(servable: Any, model: Any) -> None:
    """Close a wrapper around ``model`` (batching's), then ``model``; either may lack ``close``.

    Called by a loader's ``unload`` (or a failed ``load``) on a manager thread. A wrapper
    that fails to close is logged and the model is still closed, so its resources come
    back; the model's own error propagates. ``servable is model`` means no wrapper.
    """
    if servable is not model:
        close = getattr(servable, "close", None)
        if callable(close):
            try:
                close()
            except Exception:
                log.exception("closing the servable wrapper failed")
    close = getattr(model, "close", None)
    if callable(close):
        close()


class Loader(abc.ABC):
    """One version's lifecycle. Subclasses raise from ``load()`` to report a failure."""

    def estimate_resources(self) -> int:
        """Upper bound of the bytes the loaded servable will hold (0 = unknown)."""
        return 0

    @abc.abstractmethod
    def load(self) -> None:
        """Load the servable. Runs on a manager load thread; may block for long; may raise."""

    @abc.abstractmethod
    def unload(self) -> None:
        """Release everything ``load()`` acquired. Never called while a handle is held."""

    @abc.abstractmethod
    def servable(self) -> Any:
        """The loaded object requests compute with; valid between load() and unload()."""


class SimpleLoader(Loader, Generic[T]):
    """A loader built from callables: handy for Python models and tests.

    ``create()`` builds the servable on load; ``release(servable)`` (optional) frees it.
    """

    def __init__(
        self,
        create: Callable[[], T],
        release: Callable[[T], None] | None = None,
        estimate: int = 0,
    ) -> None:
        self._create = create
        self._release = release
        self._estimate = estimate
        self._servable: T | None = None

    def estimate_resources(self) -> int:
        return self._estimate

    def load(self) -> None:
        self._servable = self._create()

    def unload(self) -> None:
        servable, self._servable = self._servable, None
        if self._release is not None and servable is not None:
            self._release(servable)

    def servable(self) -> T:
        if self._servable is None:
            raise RuntimeError("servable() called on a loader that is not loaded")
        return self._servable
