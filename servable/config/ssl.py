"""TF Serving's ``--ssl_config_file`` (an ``SSLConfig`` text proto) for both front doors.

Read once at startup by ``servable.settings`` (main thread). As in TF Serving the file
holds PEM *contents*, not paths. TLS applies to gRPC as in TF Serving, and to REST too
with ``--rest_api_enable_ssl`` (TF Serving's REST has no TLS).
Mistakes get an error at startup instead of a failed handshake later: a missing key or
certificate, a path where PEM contents belong, ``client_verify`` without ``custom_ca``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from servable._proto.tensorflow_serving.config import ssl_config_pb2
from servable.config.errors import ConfigError, load_text_proto

_PEM_MARKER = "-----BEGIN "


@dataclass(frozen=True)
class SslConfig:
    """Server TLS material; ``custom_ca`` set means client certificates are checked against it."""

    server_key: bytes
    server_cert: bytes
    custom_ca: bytes | None = None
    client_verify: bool = False


def load_ssl_config(path: str) -> SslConfig:
    """Parse and check an ``SSLConfig`` file; ``ConfigError`` names the file and the problem."""
    proto = load_text_proto(path, ssl_config_pb2.SSLConfig(), "SSL config file")
    key = _pem(path, "server_key", proto.server_key, required=True)
    cert = _pem(path, "server_cert", proto.server_cert, required=True)
    custom_ca = _pem(path, "custom_ca", proto.custom_ca, required=False)
    if proto.client_verify and custom_ca is None:
        raise ConfigError(
            f"SSL config file '{path}' sets client_verify but no custom_ca to verify client "
            "certificates against", path=path,
        )
    return SslConfig(server_key=key, server_cert=cert, custom_ca=custom_ca, client_verify=proto.client_verify)


def _pem(path: str, field: str, value: str, *, required: bool) -> bytes | None:
    if not value.strip():
        if required:
            raise ConfigError(f"SSL config file '{path}' has no {field}", path=path)
        return None
    if _PEM_MARKER not in value:
        hint = ""
        if "\n" not in value.strip() and os.path.exists(value.strip()):
            hint = f" ('{value.strip()}' looks like a path: put the file's contents in {field})"
        raise ConfigError(f"SSL config file '{path}': {field} is not PEM data{hint}", path=path)
    return value.encode("utf-8")
