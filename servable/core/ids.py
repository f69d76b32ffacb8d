"""Names for servables: one version (``ServableId``) and a lookup (``ServableRequest``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class ServableId:
    """One version of one servable stream. Versions are non-negative integers."""

    name: str
    version: int

    def __str__(self) -> str:
        return f"{{name: {self.name} version: {self.version}}}"


@dataclass(frozen=True)
class ServableRequest:
    """What a request asks the manager for: a specific version, or the latest available.

    ``str()`` gives TF Serving's wording, used verbatim in NOT_FOUND messages:
    ``Latest(name)`` and ``Specific(name, 3)``.
    """

    name: str
    version: int | None = None

    @classmethod
    def latest(cls, name: str) -> "ServableRequest":
        return cls(name, None)

    @classmethod
    def specific(cls, name: str, version: int) -> "ServableRequest":
        return cls(name, version)

    def __str__(self) -> str:
        if self.version is None:
            return f"Latest({self.name})"
        return f"Specific({self.name}, {self.version})"
