"""Version policies: pure functions choosing the next load or unload of one stream.

The manager calls a policy with every version of a stream it knows about and performs
the returned action (at most one per call; it calls again after each change). As in TF
Serving, unloads of versions no longer aspired come first unless they would drop the
stream's last AVAILABLE version while a replacement is still loading.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

from servable.core.ids import ServableId


class HarnessState(enum.Enum):
    """A version's state inside the manager (finer than the published ManagerState)."""

    NEW = "new"  # aspired, waiting for a load decision
    LOADING = "loading"
    READY = "ready"  # loaded and serving
    QUIESCING = "quiescing"  # no new handles; waiting for in-flight ones
    UNLOADING = "unloading"
    DISABLED = "disabled"  # unloaded or never loaded after a decision not to
    ERROR = "error"  # load failed (retries exhausted)


@dataclass(frozen=True)
class VersionInfo:
    id: ServableId
    state: HarnessState
    is_aspired: bool


@dataclass(frozen=True)
class Action:
    kind: Literal["load", "unload"]
    id: ServableId


Policy = Callable[[Sequence[VersionInfo]], "Action | None"]


def _unload_candidates(versions: Sequence[VersionInfo]) -> list[VersionInfo]:
    return [v for v in versions if not v.is_aspired and v.state in (HarnessState.READY, HarnessState.NEW)]


def _load_candidates(versions: Sequence[VersionInfo]) -> list[VersionInfo]:
    return sorted(
        (v for v in versions if v.is_aspired and v.state == HarnessState.NEW),
        key=lambda v: v.id.version,
        reverse=True,
    )


def availability_preserving(versions: Sequence[VersionInfo]) -> Action | None:
    """Load new versions before unloading old ones, so the stream never goes dark.

    TF Serving's rule: unload the lowest un-aspired READY version when no version is
    aspired at all, or some aspired version is READY, or more than one un-aspired
    version is READY. Otherwise load the highest aspired NEW version. So a new version
    that fails to load leaves the previous one serving.
    """
    for v in versions:
        if not v.is_aspired and v.state == HarnessState.NEW:
            return Action("unload", v.id)
    aspired_exists = any(v.is_aspired for v in versions)
    ready_aspired = any(v.is_aspired and v.state == HarnessState.READY for v in versions)
    unaspired_ready = sorted(
        (v for v in versions if not v.is_aspired and v.state == HarnessState.READY), key=lambda v: v.id.version
    )
    if unaspired_ready and (not aspired_exists or ready_aspired or len(unaspired_ready) > 1):
        return Action("unload", unaspired_ready[0].id)
    loads = _load_candidates(versions)
    return Action("load", loads[0].id) if loads else None


def resource_preserving(versions: Sequence[VersionInfo]) -> Action | None:
    """Unload old versions first and wait until they are gone before loading new ones."""
    unloads = _unload_candidates(versions)
    if unloads:
        return Action("unload", unloads[0].id)
    if any(not v.is_aspired and v.state in (HarnessState.QUIESCING, HarnessState.UNLOADING) for v in versions):
        return None
    loads = _load_candidates(versions)
    return Action("load", loads[0].id) if loads else None
