"""Several models from one config file: policies, platforms, relative base paths, labels."""

from __future__ import annotations

import os

import grpc
import pytest

from servable.config.model_config import load_model_config_file
from servable.serving.server_core import CoreOptions
from tests.models_config.helpers import Clients, config_text, model_entry, write_config
from tests.serverutil import running_server


@pytest.fixture(scope="module")
def served(model_tree, tmp_path_factory):
    """One server from a config file whose base paths are relative to the file's folder."""
    config_dir = model_tree["root"]
    text = config_text(
        model_entry("hp2", "hp2", policy="latest { num_versions: 2 }"),
        model_entry("hp2_all", "./hp2", policy="all {}"),
        model_entry("hp2_specific", "hp2", policy="specific { versions: 1 versions: 3 }"),
        model_entry("hp3", "hp3"),
        model_entry("ab", "ab", policy="all {}", labels={"stable": 1, "canary": 2}),
        model_entry("py", "py", platform="python"),
    )
    path = write_config(os.path.join(config_dir, "many.config"), text)
    models = load_model_config_file(path)
    core = CoreOptions(file_system_poll_wait_seconds=0.5, load_retry_interval_s=0.05, max_num_load_retries=0)
    with running_server(models, core=core) as server, Clients(server) as clients:
        yield server, clients


def test_relative_base_paths_resolve_against_the_config_file(served, model_tree):
    models = {m.name: m for m in load_model_config_file(os.path.join(model_tree["root"], "many.config"))}
    assert models["hp2"].base_path == model_tree["hp2"]
    assert models["hp2_all"].base_path == model_tree["hp2"]


def test_models_served_side_by_side(served):
    _server, clients = served
    assert clients.predict("hp2") == (3, 3.0)
    assert clients.predict("hp3") == (1, 4.0)
    assert clients.predict("py", 2.0) == (1, 20.0)  # python platform next to SavedModels
    status, body = clients.rest_call("/v1/models/hp3:predict", {"instances": [2.0]})
    assert (status, body) == (200, {"predictions": [4.0]})
    status, body = clients.rest_call("/v1/models/py:predict", {"instances": [1.5]})
    assert (status, body) == (200, {"predictions": [15.0]})


@pytest.mark.parametrize(
    "name, versions",
    [("hp2", [2, 3]), ("hp2_all", [1, 2, 3]), ("hp2_specific", [1, 3]), ("hp3", [1]), ("ab", [1, 2])],
)
def test_version_policies(served, name, versions):
    _server, clients = served
    assert clients.available(name) == versions
    for version in versions:
        assert clients.predict(name, version=version)[0] == version
    missing = ({1, 2, 3} - set(versions)) or {7}
    error = clients.predict_error(name, version=min(missing))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == f"Servable not found for request: Specific({name}, {min(missing)})"


def test_labels_by_grpc(served):
    _server, clients = served
    assert clients.predict("ab", label="stable") == (1, 3.0)
    assert clients.predict("ab", label="canary") == (2, 4.0)
    error = clients.predict_error("ab", label="nope")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Unrecognized servable version label: nope"
    error = clients.predict_error("hp3", label="stable")  # labels are per model
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_labels_by_rest(served):
    _server, clients = served
    assert clients.rest_call("/v1/models/ab/labels/stable:predict", {"instances": [2.0]}) == (200, {"predictions": [3.0]})
    assert clients.rest_call("/v1/models/ab/labels/canary:predict", {"instances": [2.0]}) == (200, {"predictions": [4.0]})
    status, body = clients.rest_call("/v1/models/ab/labels/nope:predict", {"instances": [2.0]})
    assert status == 400
    assert "Unrecognized servable version label: nope" in body["error"]
    status, body = clients.rest_call("/v1/models/ab/labels/canary/metadata")
    assert status == 200
    assert body["model_spec"]["version"] == "2"
