"""ModelServerConfig text files and reload protos -> ModelConfig, with TF Serving's errors."""

from __future__ import annotations

import os
import textwrap

import pytest

from servable._proto.tensorflow_serving.config import model_server_config_pb2
from servable.config.model_config import (
    ConfigError,
    ModelConfig,
    load_model_config_file,
    models_from_proto,
    parse_model_server_config,
    single_model_config,
)
from servable.core.status import Code, ServingError
from servable.sources.version_policy import All, Latest, Specific

# The example of tfserving.md §3.1.
REFERENCE_EXAMPLE = """
model_config_list {
  config { name: "half_plus_two" base_path: "/models/half_plus_two" model_platform: "tensorflow"
           model_version_policy { specific { versions: 123 versions: 124 } }
           version_labels { key: "stable" value: 123 }
           version_labels { key: "canary" value: 124 } }
  config { name: "half_plus_three" base_path: "/models/half_plus_three" model_platform: "tensorflow" }
}
"""


def _one(body: str, base_dir: str | None = None) -> ModelConfig:
    text = f'model_config_list {{ config {{ name: "m" base_path: "/models/m" {body} }} }}'
    (model,) = parse_model_server_config(text, base_dir=base_dir)
    return model


def _error(body: str, *, name: str = '"m"', base_path: str = '"/models/m"') -> ServingError:
    text = f"model_config_list {{ config {{ name: {name} base_path: {base_path} {body} }} }}"
    with pytest.raises(ServingError) as info:
        parse_model_server_config(text)
    return info.value


def test_reference_example_parses() -> None:
    models = parse_model_server_config(REFERENCE_EXAMPLE)
    assert models == [
        ModelConfig("half_plus_two", "/models/half_plus_two", "tensorflow", Specific((123, 124)),
                    {"stable": 123, "canary": 124}),
        ModelConfig("half_plus_three", "/models/half_plus_three", "tensorflow", Latest(1), {}),
    ]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("", Latest(1)),
        ("model_version_policy { latest { num_versions: 2 } }", Latest(2)),
        ("model_version_policy { latest {} }", Latest(1)),
        ("model_version_policy { all {} }", All()),
        ("model_version_policy { specific { versions: 42 } }", Specific((42,))),
        ("model_version_policy { specific { versions: 3 versions: 1 versions: 3 } }", Specific((1, 3))),
        ("model_version_policy {}", Latest(1)),
    ],
)
def test_version_policies(policy: str, expected: object) -> None:
    assert _one(f'model_platform: "tensorflow" {policy}').version_policy == expected


def test_single_quotes_colons_and_commas_as_in_tf_serving_docs() -> None:
    text = """
    model_config_list: {
      config: {
        name: 'my_first_model',
        base_path: '/tmp/my_first_model/',
        model_platform: 'tensorflow'
      },
      config: {
        name: 'my_second_model',
        base_path: '/tmp/my_second_model/',
        model_platform: 'tensorflow'
      }
    }
    """
    names = [(m.name, m.base_path) for m in parse_model_server_config(text)]
    assert names == [("my_first_model", "/tmp/my_first_model/"), ("my_second_model", "/tmp/my_second_model/")]


def test_deprecated_model_type_maps_to_tensorflow() -> None:
    assert _one("model_type: TENSORFLOW").platform == "tensorflow"


def test_python_platform_is_accepted() -> None:
    assert _one('model_platform: "python"').platform == "python"


def test_labels_are_read_only() -> None:
    labels = _one('model_platform: "tensorflow" version_labels { key: "a" value: 1 }').version_labels
    assert dict(labels) == {"a": 1}
    with pytest.raises(TypeError):
        labels["b"] = 2  # type: ignore[index]


def test_logging_config_is_accepted() -> None:
    body = 'model_platform: "tensorflow" logging_config { sampling_config { sampling_rate: 0.5 } }'
    assert _one(body).name == "m"


@pytest.mark.parametrize("text", ["", "# nothing\n", "model_config_list {}"])
def test_empty_configs_serve_no_models(text: str) -> None:
    assert parse_model_server_config(text) == []


def test_duplicates_are_left_to_server_core() -> None:
    text = ('model_config_list { config { name: "m" base_path: "/a" model_platform: "tensorflow" } '
            'config { name: "m" base_path: "/b" model_platform: "tensorflow" } }')
    assert [m.base_path for m in parse_model_server_config(text)] == ["/a", "/b"]


# -- validation errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(body='model_platform: "pytorch"'), "Model m requests unsupported platform pytorch"),
        (dict(body="model_type: OTHER"), "Model m requests unsupported platform other"),
        (dict(body=""), "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                        "ModelServerConfig::model_platform, model name is m"),
        (dict(body='model_type: TENSORFLOW model_platform: "tensorflow"'),
         "Illegal setting both ModelServerConfig::model_type (deprecated) and "
         "ModelServerConfig::model_platform, model name is m"),
        (dict(body='model_platform: "tensorflow"', name='""'), "ModelConfig has no name specified."),
        (dict(body='model_platform: "tensorflow"', base_path='""'),
         "Expected model m to have an absolute path or URI; got base_path()="),
        (dict(body='model_platform: "tensorflow"', base_path='"relative/m"'),
         "Expected model m to have an absolute path or URI; got base_path()=relative/m"),
        (dict(body='model_platform: "tensorflow" model_version_policy { specific {} }'),
         "Model m has a 'specific' version policy that lists no versions"),
        (dict(body='model_platform: "tensorflow" model_version_policy { specific { versions: -3 } }'),
         "Model m lists negative version -3 in its 'specific' version policy"),
    ],
)
def test_validation_errors(kwargs: dict[str, str], message: str) -> None:
    error = _error(**kwargs)
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message == message


def test_custom_model_config_is_refused() -> None:
    proto = model_server_config_pb2.ModelServerConfig()
    proto.custom_model_config.type_url = "type.googleapis.com/x.Y"
    with pytest.raises(ServingError) as info:
        models_from_proto(proto)
    assert (info.value.code, info.value.message) == (
        Code.INVALID_ARGUMENT, "ModelServer does not yet support custom model config.")


# -- syntax errors -------------------------------------------------------------------------


def test_malformed_text_reports_file_line_and_column(tmp_path) -> None:
    path = tmp_path / "models.config"
    path.write_text('model_config_list {\n  config {\n    name: "m"\n    bas_path: "/m"\n  }\n}\n')
    with pytest.raises(ConfigError) as info:
        load_model_config_file(str(path))
    error = info.value
    assert (error.path, error.line, error.column) == (str(path), 4, 5)
    assert error.code == Code.INVALID_ARGUMENT
    # TF Serving's two diagnostics, which scripts and its own tests grep for.
    assert f"Invalid protobuf file: '{path}'" in str(error)
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig: 4:5:" in str(error)
    assert 'no field named "bas_path"' in str(error)
    assert f"{path}:4:5" in str(error)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('model_config_list {\n config { name: "m" \n', 2),  # unterminated: last token
        ('model_config_list { config { name: m } }', 1),  # unquoted string
        ('model_config_list { config { name: "a" name: "b" } }', 1),  # non-repeated field twice
        ('\n\nmodel_config_list { config { model_version_policy { latest { num_versions: -1 } } } }', 3),
    ],
)
def test_other_syntax_errors_carry_a_line(text: str, line: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse_model_server_config(text, source="inline.config")
    assert info.value.line == line
    assert "inline.config" in str(info.value)


def test_missing_file_is_not_found(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        load_model_config_file(str(tmp_path / "absent.config"))
    assert info.value.code == Code.NOT_FOUND
    assert "absent.config" in str(info.value)


def test_binary_file_is_refused(tmp_path) -> None:
    path = tmp_path / "models.config"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_model_config_file(str(path))


# -- base paths ----------------------------------------------------------------------------


def test_relative_base_paths_resolve_against_the_config_folder(tmp_path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    path = folder / "models.config"
    path.write_text(textwrap.dedent("""
        model_config_list {
          config { name: "a" base_path: "models/a" model_platform: "tensorflow" }
          config { name: "b" base_path: "../b" model_platform: "tensorflow" }
          config { name: "c" base_path: "/abs/c" model_platform: "tensorflow" }
          config { name: "d" base_path: "gs://bucket/d" model_platform: "tensorflow" }
          config { name: "e" base_path: "file:///srv/e" model_platform: "tensorflow" }
        }
    """))
    models = {m.name: m.base_path for m in load_model_config_file(str(path))}
    assert models == {
        "a": str(folder / "models" / "a"),
        "b": str(tmp_path / "b"),
        "c": "/abs/c",
        "d": "gs://bucket/d",
        "e": "/srv/e",
    }


def test_relative_config_file_path(tmp_path, monkeypatch) -> None:
    (tmp_path / "models.config").write_text(
        'model_config_list { config { name: "a" base_path: "a" model_platform: "tensorflow" } }')
    monkeypatch.chdir(tmp_path)
    assert load_model_config_file("models.config")[0].base_path == str(tmp_path / "a")


def test_reload_proto_refuses_relative_paths() -> None:
    proto = model_server_config_pb2.ModelServerConfig()
    proto.model_config_list.config.add(name="m", base_path="rel", model_platform="tensorflow")
    with pytest.raises(ServingError, match=r"absolute path or URI; got base_path\(\)=rel"):
        models_from_proto(proto)
    assert models_from_proto(proto, base_dir="/srv")[0].base_path == "/srv/rel"


def test_official_client_proto_is_accepted() -> None:
    from tensorflow_serving.config import model_server_config_pb2 as official

    proto = official.ModelServerConfig()
    config = proto.model_config_list.config.add(name="m", base_path="/m", model_platform="tensorflow")
    config.model_version_policy.all.SetInParent()
    config.version_labels["stable"] = 3
    assert models_from_proto(proto) == [ModelConfig("m", "/m", "tensorflow", All(), {"stable": 3})]


def test_single_model_config(tmp_path, monkeypatch) -> None:
    assert single_model_config("default", "/models/m") == [ModelConfig("default", "/models/m")]
    monkeypatch.chdir(tmp_path)
    assert single_model_config("x", "rel")[0].base_path == os.path.join(str(tmp_path), "rel")
    with pytest.raises(ServingError, match="Both server_options.model_base_path and server_options.model_config_file are empty!"):
        single_model_config("x", "")
