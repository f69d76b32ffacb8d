"""TF Serving's ``ModelServerConfig`` (``--model_config_file``, ``HandleReloadConfigRequest``).

Turns the text proto or the proto message into ``ModelConfig`` values that
``ServerCore.apply_config`` consumes. Callers: ``servable.settings`` at startup (main
thread), ``ModelServer.apply_config_file`` (config watcher thread) and
``ModelServer.reload_config`` (a gRPC worker thread). Everything here is pure and
thread-safe.

Checked here, with TF Serving's messages and INVALID_ARGUMENT: empty names, missing or
relative base paths, platforms, ``model_type`` next to ``model_platform``, empty
``specific {}`` policies, ``custom_model_config``. Checked by ``ServerCore`` (not
repeated here): duplicate names, labels that point at unavailable versions.

servable extensions: in a config *file*, a relative ``base_path`` resolves against the
file's folder (TF Serving refuses it); ``file://`` URIs become plain paths; platform
``"python"`` is accepted next to ``"tensorflow"``. ``logging_config`` is accepted and
ignored (TF Serving's open-source binary has no request logger either).
"""

from __future__ import annotations

import os
import types
from dataclasses import dataclass, field
from typing import Any, Mapping

from servable._proto.tensorflow_serving.config import model_server_config_pb2
from servable.config.errors import ConfigError, load_text_proto, parse_text_proto
from servable.core.status import invalid_argument
from servable.sources.version_policy import All, Latest, Specific, VersionPolicy

__all__ = [
    "ConfigError",
    "ModelConfig",
    "SUPPORTED_PLATFORMS",
    "load_model_config_file",
    "models_from_proto",
    "parse_model_server_config",
    "single_model_config",
]

TENSORFLOW_PLATFORM = "tensorflow"
SUPPORTED_PLATFORMS = frozenset({TENSORFLOW_PLATFORM, "python"})
_OTHER_PLATFORM = "other"  # what TF Serving maps the deprecated model_type OTHER to


@dataclass(frozen=True)
class ModelConfig:
    """One served model: the fields of TF Serving's ``ModelConfig`` that servable uses.

    ``base_path`` excludes the version folder (``/models/m``, versions in ``/models/m/1``).
    ``version_labels`` is read-only (a mapping proxy) so a config can be shared safely.
    """

    name: str
    base_path: str
    platform: str = TENSORFLOW_PLATFORM
    version_policy: VersionPolicy = field(default_factory=Latest)
    version_labels: Mapping[str, int] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "version_labels", types.MappingProxyType(dict(self.version_labels)))


def single_model_config(name: str, base_path: str) -> list[ModelConfig]:
    """``--model_name`` / ``--model_base_path``: one TensorFlow model, latest version.

    A relative path resolves against the working directory (TF Serving refuses it).
    """
    if not name:
        raise invalid_argument("--model_name must not be empty")
    if not base_path:
        raise invalid_argument(
            "Both server_options.model_base_path and server_options.model_config_file are empty!"
        )
    return [ModelConfig(name=name, base_path=_resolve(name, base_path, os.getcwd()))]


def parse_model_server_config(text: str, *, base_dir: str | None = None, source: str = "<text>") -> list[ModelConfig]:
    """Parse ``ModelServerConfig`` text format; ``ConfigError`` for syntax, ServingError for the rest."""
    proto = parse_text_proto(text, model_server_config_pb2.ModelServerConfig(), source=source)
    return models_from_proto(proto, base_dir=base_dir)


def load_model_config_file(path: str) -> list[ModelConfig]:
    """Read ``--model_config_file``; relative base paths resolve against the file's folder."""
    proto = load_text_proto(path, model_server_config_pb2.ModelServerConfig(), "model config file")
    return models_from_proto(proto, base_dir=os.path.dirname(os.path.abspath(path)))


def models_from_proto(proto: Any, base_dir: str | None = None) -> list[ModelConfig]:
    """Validate a ``ModelServerConfig`` message and convert it.

    An unset config (an empty file) serves no models, as in TF Serving. With
    ``base_dir=None`` (the reload RPC) a relative base path is refused with TF Serving's
    message, since the server's folders mean nothing to a remote client.
    """
    proto = _own_message(proto)
    which = proto.WhichOneof("config")
    if which is None:
        return []
    if which == "custom_model_config":
        raise invalid_argument("ModelServer does not yet support custom model config.")
    return [_model_from_proto(model, base_dir) for model in proto.model_config_list.config]


def _own_message(proto: Any) -> model_server_config_pb2.ModelServerConfig:
    """Accept a ModelServerConfig from another descriptor pool (e.g. a client's) by re-parsing."""
    if isinstance(proto, model_server_config_pb2.ModelServerConfig):
        return proto
    full_name = getattr(getattr(proto, "DESCRIPTOR", None), "full_name", None)
    if full_name != model_server_config_pb2.ModelServerConfig.DESCRIPTOR.full_name:
        raise TypeError(f"expected a tensorflow.serving.ModelServerConfig, got {type(proto).__name__}")
    return model_server_config_pb2.ModelServerConfig.FromString(proto.SerializeToString())


def _model_from_proto(model: Any, base_dir: str | None) -> ModelConfig:
    if not model.name:
        raise invalid_argument("ModelConfig has no name specified.")
    platform = _platform(model)
    return ModelConfig(
        name=model.name,
        base_path=_resolve(model.name, model.base_path, base_dir),
        platform=platform,
        version_policy=_version_policy(model),
        version_labels=dict(model.version_labels),
    )


def _platform(model: Any) -> str:
    """ServerCore::GetPlatform: ``model_type`` (deprecated) xor ``model_platform``."""
    if model.model_type != model_server_config_pb2.MODEL_TYPE_UNSPECIFIED:
        if model.model_platform:
            raise invalid_argument(
                "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                f"ModelServerConfig::model_platform, model name is {model.name}"
            )
        platform = TENSORFLOW_PLATFORM if model.model_type == model_server_config_pb2.TENSORFLOW else _OTHER_PLATFORM
    elif not model.model_platform:
        raise invalid_argument(
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f"ModelServerConfig::model_platform, model name is {model.name}"
        )
    else:
        platform = model.model_platform
    if platform not in SUPPORTED_PLATFORMS:
        raise invalid_argument(f"Model {model.name} requests unsupported platform {platform}")
    return platform


def _resolve(name: str, base_path: str, base_dir: str | None) -> str:
    """Absolute path (or non-file URI) for ``base_path``; TF Serving's error otherwise."""
    path = base_path
    if path.startswith("file://"):
        path = path[len("file://"):]
    if "://" in path or os.path.isabs(path):
        return path
    if path and base_dir is not None:
        return os.path.normpath(os.path.join(base_dir, path))
    raise invalid_argument(
        f"Expected model {name} to have an absolute path or URI; got base_path()={base_path}"
    )


def _version_policy(model: Any) -> VersionPolicy:
    if not model.HasField("model_version_policy"):
        return Latest(1)
    policy = model.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return All()
    if choice == "specific":
        versions = tuple(policy.specific.versions)
        if not versions:
            raise invalid_argument(
                f"Model {model.name} has a 'specific' version policy that lists no versions"
            )
        negative = [v for v in versions if v < 0]
        if negative:
            raise invalid_argument(
                f"Model {model.name} lists negative version {negative[0]} in its 'specific' version policy"
            )
        return Specific(tuple(sorted(set(versions))))
    # latest {} or an empty model_version_policy {}: TF Serving serves max(num_versions, 1).
    num = policy.latest.num_versions if choice == "latest" else 1
    return Latest(max(num, 1))
