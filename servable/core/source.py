"""Sources emit aspired versions: the full set of versions wanted now for one stream.

A source calls its ``AspiredVersionsCallback(name, versions)`` from its own thread
whenever the wanted set of stream ``name`` changes. A version left out of the list is to
be unloaded; an empty list unloads the whole stream.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, Hashable

from servable.core.ids import ServableId
from servable.core.loader import Loader
from servable.core.status import ServingError


@dataclass(frozen=True)
class ServableData:
    """One aspired version: a loader to load it, or the error that prevents it.

    Exactly one of ``loader`` and ``error`` is set. ``revision`` identifies the content
    on disk; when a version whose load failed is aspired again with another revision,
    the manager forgets the failure and loads it afresh (a fixed folder gets retried).
    """

    id: ServableId
    loader: Loader | None = None
    error: ServingError | None = None
    revision: Hashable = None

    def __post_init__(self) -> None:
        if (self.loader is None) == (self.error is None):
            raise ValueError("ServableData needs exactly one of loader and error")


AspiredVersionsCallback = Callable[[str, "list[ServableData]"], None]


class Source(abc.ABC):
    """Something that finds servables and reports them through one callback."""

    @abc.abstractmethod
    def set_aspired_versions_callback(self, callback: AspiredVersionsCallback) -> None:
        """Called once, before ``start()``."""

    @abc.abstractmethod
    def start(self) -> None:
        """Begin emitting (the first emission may happen before this returns)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop emitting; after it returns the callback is not called again."""
