"""Untrusted-input limits (servable.limits.InputLimits) enforced at both front doors.

Each limit answers the client's fault (400 / INVALID_ARGUMENT, or 413 /
RESOURCE_EXHAUSTED for sizes) with a message naming the limit, and the server goes on
serving. Small limits are configured in-process so the tests stay cheap.
"""

from __future__ import annotations

import base64
import json

import grpc
import pytest
from tensorflow_serving.apis import predict_pb2

from servable.grpc_api.server import GrpcOptions
from servable.limits import DEFAULT_LIMITS, InputLimits
from servable.rest.app import RestOptions
from tests.faults.conftest import GrpcClient, rest_call, write_python_version
from tests.serverutil import copy_version, model, running_server

STRING_MODEL_RUN = ""


@pytest.fixture(scope="module")
def server(tmp_path_factory, half_plus_two_export):
    root = tmp_path_factory.mktemp("limits")
    copy_version(half_plus_two_export, str(root / "hp2"), 1)
    write_python_version(str(root / "steady"), 1)
    strings = root / "strings" / "1"
    strings.mkdir(parents=True)
    (strings / "servable.py").write_text(
        "import numpy as np\n"
        "from servable.python_model import PythonModel, tensor\n"
        "class M(PythonModel):\n"
        "    inputs = {'s': tensor('string', [-1])}\n"
        "    outputs = {'n': tensor('int64', [-1])}\n"
        "    def run(self, inputs):\n"
        "        return {'n': np.array([len(v) for v in inputs['s']], dtype=np.int64)}\n"
        "def load(path):\n"
        "    return M(path)\n"
    )
    models = [model("hp2", str(root / "hp2")), model("steady", str(root / "steady"), platform="python"),
              model("strings", str(root / "strings"), platform="python")]
    limits = InputLimits(max_request_bytes=4096, max_string_bytes=100, max_examples=3, max_json_depth=8)
    rest = RestOptions(max_body_bytes=4096, limits=limits)
    grpc_options = GrpcOptions(address="127.0.0.1", port=0, max_message_bytes=4096)
    with running_server(models, rest_options=rest, grpc_options=grpc_options) as srv:
        yield srv


@pytest.fixture
def client(server):
    grpc_client = GrpcClient(server.grpc_port)
    yield grpc_client
    grpc_client.close()


def _post(server, path: str, doc) -> tuple[int, dict]:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    status, data = rest_call(server.rest_port, "POST", path, body)
    return status, json.loads(data)


def _serving(server, client) -> None:
    assert client.predict("steady", [1.0]) == (1, [2.0])
    assert _post(server, "/v1/models/hp2:predict", {"instances": [2.0]}) == (200, {"predictions": [3.0]})


def test_request_size_rest(server, client) -> None:
    status, body = _post(server, "/v1/models/hp2:predict", {"instances": [1.0] * 2000})
    assert status == 413 and "--rest_api_max_body_bytes" in body["error"]
    _serving(server, client)


def test_request_size_grpc(server, client) -> None:
    with pytest.raises(grpc.RpcError) as info:
        client.predict("hp2", [1.0] * 2000)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--grpc_max_message_bytes" in info.value.details()
    _serving(server, client)


@pytest.mark.parametrize("dims", [[2**40], [2**31, 2**31], [-5], [3, -1]])
def test_tensor_elements_grpc(server, client, dims) -> None:
    """One float_val broadcast to a huge shape must be refused before any allocation."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hp2"
    tensor = request.inputs["x"]
    tensor.dtype = 1
    for size in dims:
        tensor.tensor_shape.dim.add().size = size
    tensor.float_val.append(1.0)
    with pytest.raises(grpc.RpcError) as info:
        client.predict_stub.Predict(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert info.value.details()
    _serving(server, client)


def test_tensor_bytes_limit_default() -> None:
    assert DEFAULT_LIMITS.max_tensor_bytes <= 1 << 30 and DEFAULT_LIMITS.max_tensor_elements <= 2**31 - 1


def test_string_length_rest(server, client) -> None:
    ok = base64.b64encode(b"a" * 50).decode()
    status, body = _post(server, "/v1/models/strings:predict", {"instances": [{"b64": ok}]})
    assert (status, body) == (200, {"predictions": [50]})
    big = base64.b64encode(b"a" * 500).decode()
    status, body = _post(server, "/v1/models/strings:predict", {"instances": [{"b64": big}]})
    assert status == 400 and "limit of 100 bytes" in body["error"], body
    status, body = _post(server, "/v1/models/strings:predict", {"instances": ["b" * 500]})
    assert status == 400 and "limit of 100 bytes" in body["error"], body
    _serving(server, client)


def test_number_of_examples_rest(server, client) -> None:
    examples = [{"x": [1.0]}] * 4
    for verb in ("classify", "regress"):
        status, body = _post(server, f"/v1/models/hp2:{verb}", {"signature_name": f"{verb}_x_to_y", "examples": examples})
        assert status == 400 and "more than the limit of 3" in body["error"], body
    status, body = _post(server, "/v1/models/hp2:regress", {"signature_name": "regress_x_to_y", "examples": examples[:3]})
    assert status == 200, body
    _serving(server, client)


@pytest.mark.parametrize("depth", [12, 20, 500, 5000, 100000])
def test_json_depth_rest(server, client, depth) -> None:
    body = ("[" * depth + "1.0" + "]" * depth).encode()
    status, reply = _post(server, "/v1/models/hp2:predict", b'{"instances": ' + body + b"}")
    assert status == (400 if len(body) < 4000 else 413), reply
    assert reply["error"]
    _serving(server, client)


def test_json_depth_within_limit(server, client) -> None:
    status, reply = _post(server, "/v1/models/hp2:predict", {"instances": [[[[2.0]]]]})
    assert status in (200, 400), reply  # shape may not fit the signature; never a 500
    _serving(server, client)
