"""A real server with REST on for the REST tests, and a tiny HTTP client."""

from __future__ import annotations

import gzip
import http.client
import json
from dataclasses import dataclass

import pytest

from servable.rest.app import RestOptions
from tests.serverutil import copy_version, model, running_server

METRICS_PATH = "/monitoring/prometheus/metrics"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        # TF Serving's NaN/Infinity tokens: the standard library parser accepts them.
        return json.loads(self.body)


class Client:
    """Blocking HTTP/1.1 client for one server (a new connection per call keeps tests simple)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def call(self, method: str, path: str, body: bytes | str | dict | None = None,
             headers: dict[str, str] | None = None, timeout: float = 30.0) -> Reply:
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            data = response.read()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
        finally:
            connection.close()

    def get(self, path: str, **kwargs) -> Reply:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, body: bytes | str | dict | None = None, **kwargs) -> Reply:
        return self.call("POST", path, body, **kwargs)

    def post_gzip(self, path: str, body: dict) -> Reply:
        data = gzip.compress(json.dumps(body).encode())
        return self.call("POST", path, data, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})


@pytest.fixture(scope="session")
def mlp_export(tmp_path_factory) -> str:
    from servable.tf.testing_models import export_mlp

    return export_mlp(str(tmp_path_factory.mktemp("exports") / "mlp"))


@pytest.fixture(scope="session")
def strings_export(tmp_path_factory) -> str:
    from servable.tf.testing_models import export_string_model

    return export_string_model(str(tmp_path_factory.mktemp("exports") / "strings"))


@pytest.fixture(scope="package")
def rest_server(tmp_path_factory, half_plus_two_export, half_plus_three_export, mlp_export, strings_export):
    """default (half_plus_two v123, label stable), half_plus_three, mlp, strings; CORS and metrics on."""
    root = tmp_path_factory.mktemp("rest_models")
    copy_version(half_plus_two_export, str(root / "default"), "00000123")
    copy_version(half_plus_three_export, str(root / "half_plus_three"), 1)
    copy_version(mlp_export, str(root / "mlp"), 1)
    copy_version(strings_export, str(root / "strings"), 1)
    models = [
        model("default", root / "default", labels={"stable": 123}),
        model("half_plus_three", root / "half_plus_three"),
        model("mlp", root / "mlp"),
        model("strings", root / "strings"),
    ]
    options = RestOptions(enable_cors=True, metrics_path=METRICS_PATH)
    with running_server(models, rest_options=options) as server:
        yield server


@pytest.fixture(scope="package")
def client(rest_server) -> Client:
    return Client(rest_server.rest_port)
