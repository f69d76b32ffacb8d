"""A model tree shared by this directory's tests (module-independent, built once)."""

from __future__ import annotations

import os

import pytest

from tests.models_config.helpers import write_python_version
from tests.serverutil import copy_version


@pytest.fixture(scope="session")
def model_tree(tmp_path_factory, half_plus_two_export, half_plus_three_export) -> dict[str, str]:
    """Base paths: ``hp2`` (versions 1, 2, 3: half_plus_two), ``hp3`` (1: half_plus_three),
    ``ab`` (1: half_plus_two, 2: half_plus_three, so REST answers tell them apart),
    ``py`` (python platform, 1: x*10)."""
    root = tmp_path_factory.mktemp("models_config")
    paths = {name: str(root / name) for name in ("hp2", "hp3", "ab", "py")}
    for version in (1, 2, 3):
        copy_version(half_plus_two_export, paths["hp2"], version)
    copy_version(half_plus_three_export, paths["hp3"], 1)
    copy_version(half_plus_two_export, paths["ab"], 1)
    copy_version(half_plus_three_export, paths["ab"], 2)
    os.makedirs(paths["py"])
    write_python_version(paths["py"], 1, 10.0)
    paths["root"] = str(root)
    return paths
