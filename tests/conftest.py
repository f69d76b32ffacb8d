"""Shared fixtures: exported test models, free ports, servers, waiting on conditions."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import socket
import time
from typing import Callable

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.01, message: str = "") -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {message or predicate}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def half_plus_two_export(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One exported half_plus_two SavedModel (a version folder's content), reused by copying."""
    from servable.tf.testing_models import export_half_plus_two

    path = str(tmp_path_factory.mktemp("exports") / "half_plus_two")
    export_half_plus_two(path)
    return path


@pytest.fixture(scope="session")
def half_plus_three_export(tmp_path_factory: pytest.TempPathFactory) -> str:
    from servable.tf.testing_models import export_half_plus_three

    path = str(tmp_path_factory.mktemp("exports") / "half_plus_three")
    export_half_plus_three(path)
    return path
