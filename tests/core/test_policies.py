"""Every decision of the two version policies (pure functions)."""

from __future__ import annotations

import pytest

from servable.core.ids import ServableId
from servable.core.policies import Action, HarnessState as H, VersionInfo, availability_preserving, resource_preserving


def v(version: int, state: H, aspired: bool) -> VersionInfo:
    return VersionInfo(ServableId("m", version), state, aspired)


def act(kind: str, version: int) -> Action:
    return Action(kind, ServableId("m", version))


@pytest.mark.parametrize(
    "versions,expected",
    [
        ([], None),
        ([v(1, H.NEW, True)], act("load", 1)),
        ([v(1, H.NEW, True), v(2, H.NEW, True)], act("load", 2)),  # highest first
        ([v(1, H.READY, False), v(2, H.NEW, True)], act("load", 2)),  # load before unload
        ([v(1, H.READY, False), v(2, H.LOADING, True)], None),  # old keeps serving meanwhile
        ([v(1, H.READY, False), v(2, H.READY, True)], act("unload", 1)),
        ([v(1, H.READY, False), v(2, H.ERROR, True)], None),  # failed new version: keep old
        ([v(1, H.READY, False)], act("unload", 1)),  # nothing aspired
        ([v(1, H.READY, False), v(2, H.READY, False), v(3, H.NEW, True)], act("unload", 1)),  # >1 unaspired
        ([v(1, H.NEW, False), v(2, H.READY, True)], act("unload", 1)),  # never loaded: drop
        ([v(1, H.READY, True), v(2, H.READY, True)], None),
        ([v(1, H.QUIESCING, False), v(2, H.READY, True)], None),
    ],
)
def test_availability_preserving(versions, expected):
    assert availability_preserving(versions) == expected


@pytest.mark.parametrize(
    "versions,expected",
    [
        ([], None),
        ([v(1, H.NEW, True)], act("load", 1)),
        ([v(1, H.READY, False), v(2, H.NEW, True)], act("unload", 1)),  # unload first
        ([v(1, H.QUIESCING, False), v(2, H.NEW, True)], None),  # wait until it is gone
        ([v(1, H.UNLOADING, False), v(2, H.NEW, True)], None),
        ([v(1, H.DISABLED, False), v(2, H.NEW, True)], act("load", 2)),
        ([v(1, H.ERROR, False), v(2, H.NEW, True)], act("load", 2)),
        ([v(2, H.READY, True)], None),
    ],
)
def test_resource_preserving(versions, expected):
    assert resource_preserving(versions) == expected
