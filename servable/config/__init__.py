"""TF Serving's command line flags and text-proto config files.

- ``flags``: ``parse_flags(argv) -> Flags``, ``usage()``, ``FlagError``.
- ``model_config``: ``ModelServerConfig`` files and reload protos -> ``ModelConfig`` list.
- ``ssl``: ``SSLConfig`` -> ``SslConfig``; ``monitoring``: ``MonitoringConfig``.
- ``platform``: ``PlatformConfigMap`` (parsed for validation only).

Imports only ``servable._proto``, ``servable.core.status`` and the version policies.
"""

from servable.config.errors import ConfigError
from servable.config.flags import FlagError, Flags, parse_flags, usage
from servable.config.model_config import (
    ModelConfig,
    load_model_config_file,
    models_from_proto,
    parse_model_server_config,
    single_model_config,
)

__all__ = [
    "ConfigError",
    "FlagError",
    "Flags",
    "ModelConfig",
    "load_model_config_file",
    "models_from_proto",
    "parse_flags",
    "parse_model_server_config",
    "single_model_config",
    "usage",
]
