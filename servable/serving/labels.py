"""Version labels (``stable``, ``canary``...) per model, swapped atomically on reconfig."""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from servable.core.status import invalid_argument


class VersionLabels:
    """Maps (model, label) to a version.

    Read on every labelled request from worker threads; replaced as a whole by the
    config applier, so readers see either the old or the new map, never a mix.
    """

    def __init__(self, labels: Mapping[str, Mapping[str, int]] | None = None) -> None:
        self._labels: Mapping[str, Mapping[str, int]] = MappingProxyType({})
        self.replace(labels or {})

    def replace(self, labels: Mapping[str, Mapping[str, int]]) -> None:
        self._labels = MappingProxyType({name: dict(m) for name, m in labels.items() if m})

    def snapshot(self) -> Mapping[str, Mapping[str, int]]:
        return self._labels

    def for_model(self, name: str) -> Mapping[str, int]:
        return self._labels.get(name, {})

    def resolve(self, name: str, label: str) -> int:
        """The version ``label`` points at; INVALID_ARGUMENT as TF Serving when unknown."""
        version = self._labels.get(name, {}).get(label)
        if version is None:
            raise invalid_argument(f"Unrecognized servable version label: {label}")
        return version
