"""Fault-injection helpers: python-platform models with scripted faults, clients, status."""

from __future__ import annotations

import http.client
import json
import os
import textwrap
from dataclasses import dataclass
from typing import Iterator

import grpc
import pytest
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc

from tests.faults import hooks

MODEL_TEMPLATE = '''
import numpy as np
from servable.python_model import PythonModel, tensor
from tests.faults import hooks


class Model(PythonModel):
    inputs = {{"x": tensor("float32", [-1])}}
    outputs = {{"y": tensor("float32", [-1])}}

    def run(self, inputs):
        x = inputs["x"]
{run}
        return {{"y": x * {factor}}}


def load(path):
{load}
    return Model(path)
'''


def write_python_version(base_path: str, version: int, *, factor: float = 2.0, load: str = "", run: str = "") -> str:
    """Write ``base_path/<version>/servable.py`` atomically (staged, then renamed into place).

    ``load`` / ``run`` are Python statements injected at the start of ``load(path)`` and
    ``Model.run`` (``x`` is the input array there); they may call ``hooks.hold(name)``.
    """
    os.makedirs(base_path, exist_ok=True)
    staging = os.path.join(base_path, f".incoming-{version}")
    os.makedirs(staging)
    source = MODEL_TEMPLATE.format(
        factor=factor,
        load=textwrap.indent(textwrap.dedent(load) or "pass", " " * 4),
        run=textwrap.indent(textwrap.dedent(run) or "pass", " " * 8),
    )
    with open(os.path.join(staging, "servable.py"), "w") as handle:
        handle.write(source)
    target = os.path.join(base_path, str(version))
    os.rename(staging, target)
    return target


@dataclass
class VersionStatus:
    version: int
    state: str
    error_code: int
    error_message: str


class GrpcClient:
    """The official client on one channel: predict, status."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_stub = model_service_pb2_grpc.ModelServiceStub(self.channel)

    @staticmethod
    def request(name: str, values: list[float], version: int | None = None, input_name: str = "x") -> predict_pb2.PredictRequest:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
        tensor = request.inputs[input_name]
        tensor.dtype = 1
        tensor.tensor_shape.dim.add().size = len(values)
        tensor.float_val.extend(values)
        return request

    def predict(self, name: str, values: list[float], *, version: int | None = None, timeout: float = 10.0,
                input_name: str = "x", output: str = "y") -> tuple[int, list[float]]:
        response = self.predict_stub.Predict(self.request(name, values, version, input_name), timeout=timeout)
        return response.model_spec.version.value, list(response.outputs[output].float_val)

    def status(self, name: str) -> list[VersionStatus]:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        response = self.model_stub.GetModelStatus(request, timeout=5)
        return [
            VersionStatus(
                s.version,
                get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
                s.status.error_code,
                s.status.error_message,
            )
            for s in response.model_version_status
        ]

    def version_state(self, name: str, version: int) -> VersionStatus | None:
        try:
            statuses = self.status(name)
        except grpc.RpcError:
            return None
        return next((s for s in statuses if s.version == version), None)

    def close(self) -> None:
        self.channel.close()


def rest_call(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 10.0,
              headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def rest_predict(port: int, name: str, values: list[float], timeout: float = 10.0) -> tuple[int, object]:
    status, body = rest_call(port, "POST", f"/v1/models/{name}:predict", json.dumps({"instances": values}).encode(), timeout)
    return status, json.loads(body)


@pytest.fixture(autouse=True)
def _fresh_hooks() -> Iterator[None]:
    hooks.reset()
    yield
    hooks.release_all()
