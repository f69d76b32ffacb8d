"""SSLConfig, MonitoringConfig and PlatformConfigMap files."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from servable.config.errors import ConfigError
from servable.config.monitoring import MonitoringConfig, load_monitoring_config
from servable.config.platform import load_platform_config_file
from servable.config.ssl import SslConfig, load_ssl_config
from servable.core.status import Code

KEY = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"
CERT = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"


def _write(tmp_path, text: str, name: str = "conf.txt") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _ssl_text(key: str = KEY, cert: str = CERT, ca: str | None = None, verify: bool = False) -> str:
    def quoted(value: str) -> str:
        return '"' + value.replace("\n", "\\n") + '"'

    text = f"server_key: {quoted(key)}\nserver_cert: {quoted(cert)}\n"
    if ca is not None:
        text += f"custom_ca: {quoted(ca)}\n"
    if verify:
        text += "client_verify: true\n"
    return text


def test_ssl_config(tmp_path) -> None:
    config = load_ssl_config(_write(tmp_path, _ssl_text()))
    assert config == SslConfig(server_key=KEY.encode(), server_cert=CERT.encode(), custom_ca=None, client_verify=False)


def test_ssl_config_with_client_verification(tmp_path) -> None:
    config = load_ssl_config(_write(tmp_path, _ssl_text(ca=CERT, verify=True)))
    assert (config.custom_ca, config.client_verify) == (CERT.encode(), True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(key=""), "has no server_key"),
        (dict(cert=""), "has no server_cert"),
        (dict(key="not a pem"), "server_key is not PEM data"),
        (dict(ca="junk"), "custom_ca is not PEM data"),
        (dict(verify=True), "sets client_verify but no custom_ca"),
    ],
)
def test_ssl_config_errors(tmp_path, kwargs: dict, message: str) -> None:
    path = _write(tmp_path, _ssl_text(**kwargs))
    with pytest.raises(ConfigError) as info:
        load_ssl_config(path)
    assert message in str(info.value) and path in str(info.value)
    assert info.value.code == Code.INVALID_ARGUMENT


def test_ssl_config_path_instead_of_contents_gets_a_hint(tmp_path) -> None:
    key_file = _write(tmp_path, KEY, "server.key")
    path = _write(tmp_path, _ssl_text(key=key_file))
    with pytest.raises(ConfigError, match="looks like a path: put the file's contents in server_key"):
        load_ssl_config(path)


def test_ssl_config_syntax_error(tmp_path) -> None:
    path = _write(tmp_path, 'server_key: "x"\nserver_crt: "y"\n')
    with pytest.raises(ConfigError) as info:
        load_ssl_config(path)
    assert (info.value.line, info.value.column) == (2, 1)
    assert "tensorflow.serving.SSLConfig" in str(info.value)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_real_key_and_cert_build_grpc_credentials(tmp_path) -> None:
    import grpc

    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem")],
        check=True, capture_output=True,
    )
    key, cert = (tmp_path / "k.pem").read_text(), (tmp_path / "c.pem").read_text()
    config = load_ssl_config(_write(tmp_path, _ssl_text(key=key, cert=cert, ca=cert, verify=True)))
    credentials = grpc.ssl_server_credentials(
        [(config.server_key, config.server_cert)], root_certificates=config.custom_ca,
        require_client_auth=config.client_verify,
    )
    assert credentials is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('prometheus_config: { enable: true, path: "/monitoring/prometheus/metrics" }',
         MonitoringConfig(True, "/monitoring/prometheus/metrics")),  # TF Serving's testdata file
        ("prometheus_config { enable: true }", MonitoringConfig(True, "/monitoring/prometheus/metrics")),
        ('prometheus_config { enable: true path: "/metrics" }', MonitoringConfig(True, "/metrics")),
        ("", MonitoringConfig(False, "/monitoring/prometheus/metrics")),
    ],
)
def test_monitoring_config(tmp_path, text: str, expected: MonitoringConfig) -> None:
    assert load_monitoring_config(_write(tmp_path, text)) == expected


def test_monitoring_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="must be a URL path starting with '/'"):
        load_monitoring_config(_write(tmp_path, 'prometheus_config { enable: true path: "metrics" }'))
    with pytest.raises(ConfigError) as info:
        load_monitoring_config(_write(tmp_path, "prometheus_config { enabled: true }"))
    assert (info.value.line, info.value.column) == (1, 21)
    with pytest.raises(ConfigError) as info:
        load_monitoring_config(str(tmp_path / "missing.txt"))
    assert info.value.code == Code.NOT_FOUND


def test_platform_config_file(tmp_path) -> None:
    text = 'platform_configs { key: "tensorflow" value { } }\nplatform_configs { key: "python" value { } }'
    assert load_platform_config_file(_write(tmp_path, text)) == ["python", "tensorflow"]
    with pytest.raises(ConfigError):
        load_platform_config_file(_write(tmp_path, "platform_configs { key: }"))
