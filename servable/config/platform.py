"""TF Serving's ``--platform_config_file`` (a ``PlatformConfigMap`` text proto).

servable builds its loaders from flags, so the file's ``source_adapter_config`` payloads
have no effect; the file is still parsed so a malformed one fails at startup as in TF
Serving, and its platform names can be checked against the ones servable serves.
"""

from __future__ import annotations

from servable._proto.tensorflow_serving.config import platform_config_pb2
from servable.config.errors import load_text_proto


def load_platform_config_file(path: str) -> list[str]:
    """Parse the file; returns the platform names it configures (sorted)."""
    proto = load_text_proto(path, platform_config_pb2.PlatformConfigMap(), "platform config file")
    return sorted(proto.platform_configs)
