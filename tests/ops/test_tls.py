"""TLS and mutual TLS from ``--ssl_config_file`` on gRPC (as TF Serving) and on REST (added).

Certificates are made by the test (openssl); the right client is served, the wrong one
(no TLS, no client certificate, a certificate from another CA) refused.
"""

from __future__ import annotations

import os
import ssl
import urllib.error
import urllib.request

import grpc
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from servable.config.ssl import load_ssl_config
from servable.grpc_api.server import GrpcOptions
from tests.ops.conftest import predict_request
from tests.serverutil import copy_version, model, running_server


def _text_proto_string(data: bytes) -> str:
    return '"' + data.decode().replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _ssl_config_file(path: str, certs, *, client_verify: bool) -> str:
    lines = [f"server_key: {_text_proto_string(certs.server_key)}",
             f"server_cert: {_text_proto_string(certs.server_cert)}"]
    if client_verify:
        lines += [f"custom_ca: {_text_proto_string(certs.ca)}", "client_verify: true"]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module", params=["tls", "mtls"])
def tls_server(request, tmp_path_factory, certs, half_plus_two_export):
    mutual = request.param == "mtls"
    root = tmp_path_factory.mktemp(f"tls_{request.param}")
    copy_version(half_plus_two_export, str(root / "default"), 1)
    config = load_ssl_config(_ssl_config_file(str(root / "ssl.txt"), certs, client_verify=mutual))
    with running_server([model("default", root / "default")],
                        grpc_options=GrpcOptions(address="127.0.0.1", port=0, ssl=config), rest_tls=True) as server:
        yield server, mutual


def _predict(channel: grpc.Channel) -> float:
    reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(predict_request([2.0]), timeout=10)
    return reply.outputs["y"].float_val[0]


def _secure(port: int, certs, key: bytes | None = None, cert: bytes | None = None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(root_certificates=certs.ca, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(f"localhost:{port}", credentials)


def _refused_grpc(channel: grpc.Channel) -> None:
    with channel, pytest.raises(grpc.RpcError) as info:
        _predict(channel)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_grpc_right_client_is_served(tls_server, certs):
    server, mutual = tls_server
    with _secure(server.grpc_port, certs, certs.client_key, certs.client_cert) as channel:
        assert _predict(channel) == 3.0
    if not mutual:  # plain TLS: no client certificate needed
        with _secure(server.grpc_port, certs) as channel:
            assert _predict(channel) == 3.0


def test_grpc_wrong_clients_are_refused(tls_server, certs):
    server, mutual = tls_server
    _refused_grpc(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
    if mutual:
        _refused_grpc(_secure(server.grpc_port, certs))  # no client certificate
        _refused_grpc(_secure(server.grpc_port, certs, certs.rogue_key, certs.rogue_cert))  # another CA


def _https_context(certs, key_name: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=certs.ca.decode())
    if key_name is not None:
        context.load_cert_chain(os.path.join(certs.directory, f"{key_name}.pem"),
                                os.path.join(certs.directory, f"{key_name}.key"))
    return context


def _rest_get(url: str, context: ssl.SSLContext | None = None) -> int:
    with urllib.request.urlopen(url, timeout=10, context=context) as reply:
        return reply.status


def test_rest_right_client_is_served(tls_server, certs):
    server, mutual = tls_server
    url = f"https://localhost:{server.rest_port}/v1/models/default"
    assert _rest_get(url, _https_context(certs, "client")) == 200
    if not mutual:
        assert _rest_get(url, _https_context(certs, None)) == 200


def test_rest_wrong_clients_are_refused(tls_server, certs):
    server, mutual = tls_server
    port = server.rest_port
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        _rest_get(f"http://127.0.0.1:{port}/v1/models/default")  # plaintext to a TLS port
    untrusting = ssl.create_default_context()  # does not trust our CA
    with pytest.raises((urllib.error.URLError, ssl.SSLError)):
        _rest_get(f"https://localhost:{port}/v1/models/default", untrusting)
    if mutual:
        for key_name in (None, "rogue"):
            with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
                _rest_get(f"https://localhost:{port}/v1/models/default", _https_context(certs, key_name))
    # The server is still fine afterwards.
    assert _rest_get(f"https://localhost:{port}/v1/healthz", _https_context(certs, "client")) == 200
