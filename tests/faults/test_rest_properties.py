"""Property tests through a real server: any REST body or URL gets a 4xx JSON error or a
valid answer, never a 500 or a dropped connection, and the server keeps serving.

Bounded: a few hundred generated requests in total (a few seconds); the longer run is
``python -m fuzz.fuzz_rest``.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.faults.conftest import GrpcClient, write_python_version
from tests.serverutil import copy_version, model, running_server

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
    st.builds(lambda s: {"b64": s}, st.text(alphabet="ABCDabcd0123+/=-_", max_size=12)),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(["x", "y", "b64", "inputs", "k"]), children, max_size=3),
    max_leaves=20,
)
KEYS = ["instances", "inputs", "signature_name", "examples", "context", "x"]
request_docs = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=4)
SIGNATURES = st.sampled_from(["", "serving_default", "classify_x_to_y", "regress_x_to_y", "tensorflow/serving/regress", "nope"])


@pytest.fixture(scope="module")
def server(tmp_path_factory, half_plus_two_export):
    root = tmp_path_factory.mktemp("rest_properties")
    copy_version(half_plus_two_export, str(root / "hp2"), 1)
    write_python_version(str(root / "steady"), 1)
    models = [model("hp2", str(root / "hp2")), model("steady", str(root / "steady"), platform="python")]
    with running_server(models) as srv:
        yield srv


class Http:
    """One keep-alive connection, reopened when the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        for attempt in range(2):
            try:
                self.connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
                response = self.connection.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.connection.close()
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                if attempt:
                    raise
        raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def http_client(server):
    client = Http(server.rest_port)
    yield client
    client.connection.close()


def _check(status: int, body: bytes, v1: bool = True) -> None:
    assert status < 500, (status, body[:500])
    if v1:
        document = json.loads(body)
        if status >= 400:
            assert isinstance(document.get("error"), str) and document["error"], body[:500]


def _still_serving(server) -> None:
    client = GrpcClient(server.grpc_port)
    try:
        assert client.predict("steady", [1.0]) == (1, [2.0])
        assert client.predict("hp2", [2.0]) == (1, [3.0])
    finally:
        client.close()


@SETTINGS
@given(verb=st.sampled_from(["predict", "classify", "regress"]), doc=request_docs, signature=SIGNATURES)
def test_json_documents(server, http_client, verb, doc, signature) -> None:
    if signature and "signature_name" not in doc:
        doc["signature_name"] = signature
    status, body = http_client.call("POST", f"/v1/models/hp2:{verb}", json.dumps(doc).encode())
    _check(status, body)


@SETTINGS
@given(verb=st.sampled_from(["predict", "classify", "regress"]), data=st.binary(max_size=200))
def test_arbitrary_bytes(server, http_client, verb, data) -> None:
    status, body = http_client.call("POST", f"/v1/models/hp2:{verb}", data)
    _check(status, body)


URL_CHARS = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12)
SEGMENTS = st.one_of(
    st.sampled_from(["v1", "models", "hp2", "steady", "versions", "labels", "metadata", "1", "-1",
                     "99999999999999999999", ":predict", "hp2:predict", "hp2:classify", "stable", "", "V1", "%2F"]),
    URL_CHARS,
    URL_CHARS.map(lambda s: urllib.parse.quote(s, safe="")),
)


@SETTINGS
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
       segments=st.lists(SEGMENTS, max_size=6), prefix=st.booleans())
def test_arbitrary_urls(server, http_client, method, segments, prefix) -> None:
    path = "/" + "/".join((["v1", "models"] if prefix else []) + segments)
    body = b'{"instances": [1.0]}' if method in ("POST", "PUT", "PATCH") else None
    status, data = http_client.call(method, path, body)
    under_v1 = path.lower().startswith("/v1/")
    assert status < 500, (method, path, status, data[:300])
    if under_v1 and method not in ("HEAD", "OPTIONS"):
        _check(status, data)


@pytest.mark.parametrize("depth,verb", [
    (65, "predict"), (66, "classify"), (1000, "predict"), (1000, "classify"),
    (5000, "predict"), (200000, "predict"), (200000, "classify"),
])
def test_deep_nesting_default_limits(server, http_client, depth, verb) -> None:
    """Deeper than the JSON decoder allows (or than the parser's own recursion limit)."""
    nested = "[" * depth + "1.0" + "]" * depth
    key = "instances" if verb == "predict" else "examples"
    status, body = http_client.call("POST", f"/v1/models/hp2:{verb}", ('{"%s": %s}' % (key, nested)).encode())
    assert status == 400, body[:300]
    _check(status, body)
    obj = '{"a":' * depth + "1" + "}" * depth
    status, body = http_client.call("POST", f"/v1/models/hp2:{verb}", ('{"%s": [%s]}' % (key, obj)).encode())
    assert status == 400, body[:300]
    _check(status, body)


@pytest.mark.parametrize("depth", [31, 32, 33, 63, 64])
def test_nesting_near_the_limits_is_never_a_server_error(server, http_client, depth) -> None:
    """Row format adds the batch dimension: depths around numpy's 32/64 dimension limits."""
    for body in ('{"instances": %s}' % ("[" * depth + "1.0" + "]" * depth),
                 '{"inputs": %s}' % ("[" * depth + "1.0" + "]" * depth)):
        status, data = http_client.call("POST", "/v1/models/hp2:predict", body.encode())
        assert status < 500, data[:300]
        _check(status, data)


def test_still_serving_after_fuzzing(server) -> None:
    _still_serving(server)
