"""Which versions of a model to serve: TF Serving's ``ServableVersionPolicy``.

Pure selection over the versions found on disk, used by the filesystem source and built
from config files (``latest { num_versions }``, ``all {}``, ``specific { versions }``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Latest:
    """The ``num_versions`` highest versions (TF Serving's default, with 1)."""

    num_versions: int = 1

    def select(self, versions: Iterable[int]) -> list[int]:
        return sorted(set(versions), reverse=True)[: max(self.num_versions, 1)]


@dataclass(frozen=True)
class All:
    """Every version found."""

    def select(self, versions: Iterable[int]) -> list[int]:
        return sorted(set(versions), reverse=True)


@dataclass(frozen=True)
class Specific:
    """Exactly these versions, when present."""

    versions: tuple[int, ...] = ()

    def select(self, versions: Iterable[int]) -> list[int]:
        wanted = set(self.versions)
        return sorted((v for v in set(versions) if v in wanted), reverse=True)


VersionPolicy = Latest | All | Specific
