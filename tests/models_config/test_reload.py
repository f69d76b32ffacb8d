"""HandleReloadConfigRequest with the official client: add/remove under load, refusals, labels."""

from __future__ import annotations

import grpc
import pytest

from servable.serving.server_core import CoreOptions
from tests.models_config.helpers import ClientLoop, Clients, config_text, model_entry
from tests.serverutil import model, running_server


def core_options(**extra) -> CoreOptions:
    return CoreOptions(file_system_poll_wait_seconds=0.5, load_retry_interval_s=0.05, max_num_load_retries=0, **extra)


@pytest.fixture(scope="module")
def served(model_tree):
    models = [model("hp2", model_tree["hp2"]), model("hp3", model_tree["hp3"])]
    with running_server(models, core=core_options(), rest=False) as server, Clients(server) as clients:
        yield server, clients, model_tree


def base_config(tree, *extra: str) -> str:
    return config_text(model_entry("hp2", tree["hp2"]), model_entry("hp3", tree["hp3"]), *extra)


def test_reload_adds_and_removes_models_under_load(served):
    server, clients, tree = served
    with ClientLoop(server.grpc_port, "hp2") as loop:
        response = clients.reload(config_text(model_entry("hp2", tree["hp2"]), model_entry("py", tree["py"], platform="python")))
        assert response.status.error_code == 0 and response.HasField("status")  # "status {}" as TF Serving
        # In effect when the RPC answers: the new model serves, the removed one is gone.
        assert clients.predict("py", 3.0) == (1, 30.0)
        error = clients.predict_error("hp3")
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error.details() == "Servable not found for request: Latest(hp3)"
        assert clients.available("hp3") == []
        loop.wait_for_more()
        clients.reload(base_config(tree))
        assert clients.predict("hp3") == (1, 4.0)
        assert clients.predict_error("py").code() == grpc.StatusCode.NOT_FOUND
        loop.wait_for_more()
    assert loop.failures == []
    assert loop.ok > 0


@pytest.mark.parametrize(
    "make_config, code, message",
    [
        (lambda t: base_config(t, model_entry("hp2", t["hp3"])),
         grpc.StatusCode.INVALID_ARGUMENT, "Illegal to list model hp2 multiple times in config list"),
        (lambda t: base_config(t, model_entry("other", t["hp3"], platform="pytorch")),
         grpc.StatusCode.INVALID_ARGUMENT, "Model other requests unsupported platform pytorch"),
        (lambda t: config_text(model_entry("hp2", t["hp2"], labels={"stable": 7})),
         grpc.StatusCode.FAILED_PRECONDITION,
         "Request to assign label to version 7 of model hp2, which is not currently available for inference"),
        (lambda t: config_text(model_entry("hp2", t["hp2"], platform="python")),
         grpc.StatusCode.INVALID_ARGUMENT,
         "Illegal to change a model's platform. For model hp2 platform was tensorflow and new platform requested is python"),
        (lambda t: config_text(model_entry("hp2", "relative/hp2")),
         grpc.StatusCode.INVALID_ARGUMENT, "Expected model hp2 to have an absolute path or URI; got base_path()=relative/hp2"),
        (lambda t: config_text('config { name: "hp2" base_path: "/x" }'),
         grpc.StatusCode.INVALID_ARGUMENT,
         "Illegal setting neither ModelServerConfig::model_type (deprecated) nor ModelServerConfig::model_platform, model name is hp2"),
        (lambda t: "",
         grpc.StatusCode.INVALID_ARGUMENT,
         "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently supported"),
    ],
    ids=["duplicate-name", "unknown-platform", "label-to-missing-version", "platform-change", "relative-path",
         "no-platform", "no-model-config-list"],
)
def test_bad_config_refused_and_old_config_keeps_serving(served, make_config, code, message):
    server, clients, tree = served
    with ClientLoop(server.grpc_port, "hp3", threads=1) as loop:
        error = clients.reload_error(make_config(tree))
        assert error.code() == code
        assert error.details() == message
        assert clients.predict("hp2") == (3, 3.0)
        assert clients.predict("hp3") == (1, 4.0)
        loop.wait_for_more()
    assert loop.failures == []


def test_label_to_a_version_the_new_config_loads(served):
    """A label may name a version that only the new config's policy loads: the RPC
    answers after it is AVAILABLE, so the label works as soon as the call returns."""
    server, clients, tree = served
    try:
        clients.reload(config_text(
            model_entry("hp2", tree["hp2"], policy="specific { versions: 1 versions: 3 }", labels={"stable": 1, "canary": 3}),
            model_entry("hp3", tree["hp3"]),
        ))
        assert clients.predict("hp2", label="stable") == (1, 3.0)
        assert clients.predict("hp2", label="canary") == (3, 3.0)
        # Move the canary label to another available version; stable stays.
        clients.reload(config_text(
            model_entry("hp2", tree["hp2"], policy="all {}", labels={"stable": 1, "canary": 2}),
            model_entry("hp3", tree["hp3"]),
        ))
        assert clients.predict("hp2", label="canary") == (2, 3.0)
        assert clients.available("hp2") == [1, 2, 3]
        # A label left out of the new config is gone.
        clients.reload(config_text(model_entry("hp2", tree["hp2"], policy="all {}", labels={"stable": 1}),
                                   model_entry("hp3", tree["hp3"])))
        error = clients.predict_error("hp2", label="canary")
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == "Unrecognized servable version label: canary"
    finally:
        clients.reload(base_config(tree))
    assert clients.available("hp2") == [3]


def test_allow_version_labels_for_unavailable_models(model_tree):
    """With the flag: a config with a new label to a version not on disk starts; moving an
    existing label to an unavailable version is still refused (TF Serving's rule)."""
    models = [model("hp2", model_tree["hp2"], labels={"stable": 3, "next": 9})]
    core = core_options(allow_version_labels_for_unavailable_models=True)
    with running_server(models, core=core, rest=False) as server, Clients(server) as clients:
        assert clients.predict("hp2", label="stable") == (3, 3.0)
        error = clients.predict_error("hp2", label="next")
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error.details() == "Servable not found for request: Specific(hp2, 9)"
        error = clients.reload_error(config_text(model_entry("hp2", model_tree["hp2"], labels={"stable": 8, "next": 9})))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "version 8 of model hp2" in error.details()
        assert clients.predict("hp2", label="stable") == (3, 3.0)


def test_labels_to_unavailable_versions_refused_at_startup(model_tree):
    models = [model("hp2", model_tree["hp2"], labels={"stable": 9})]
    with pytest.raises(Exception) as raised:
        with running_server(models, core=core_options(), rest=False):
            pass
    assert "Request to assign label to version 9 of model hp2" in str(raised.value)


def test_reload_reports_models_that_fail_to_load(served, tmp_path):
    """TF Serving answers UNKNOWN "N model(s) did not become available" and keeps the config."""
    server, clients, tree = served
    broken = tmp_path / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"not a saved model")
    try:
        error = clients.reload_error(base_config(tree, model_entry("broken", str(tmp_path / "broken"))))
        assert error.code() == grpc.StatusCode.UNKNOWN
        assert error.details().startswith("1 model(s) did not become available")
        assert clients.predict("hp3") == (1, 4.0)
    finally:
        clients.reload(base_config(tree))
