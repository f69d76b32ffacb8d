"""TF Serving's ``--monitoring_config_file`` (a ``MonitoringConfig`` text proto).

Read once at startup (main thread). Prometheus metrics are served on the REST port at
``path`` when ``enable`` is true; an empty path means TF Serving's default.
"""

from __future__ import annotations

from dataclasses import dataclass

from servable._proto.tensorflow_serving.config import monitoring_config_pb2
from servable.config.errors import ConfigError, load_text_proto

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


@dataclass(frozen=True)
class MonitoringConfig:
    """Whether and where the REST front door serves Prometheus metrics."""

    enable: bool = False
    path: str = DEFAULT_PROMETHEUS_PATH


def load_monitoring_config(path: str) -> MonitoringConfig:
    """Parse a ``MonitoringConfig`` file; ``ConfigError`` for unreadable or malformed files."""
    proto = load_text_proto(path, monitoring_config_pb2.MonitoringConfig(), "monitoring config file")
    prometheus = proto.prometheus_config
    url_path = prometheus.path or DEFAULT_PROMETHEUS_PATH
    if not url_path.startswith("/") or any(ch.isspace() for ch in url_path):
        raise ConfigError(
            f"Monitoring config file '{path}': prometheus_config.path must be a URL path "
            f"starting with '/', got '{url_path}'", path=path,
        )
    return MonitoringConfig(enable=prometheus.enable, path=url_path)
