"""Shared helpers for the model-config tests: config text, gRPC/REST calls, a client loop."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import grpc
from google.protobuf import text_format
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.conftest import wait_until

PYTHON_SERVABLE = '''
import numpy as np
from servable.python_model import PythonModel, tensor


class Times(PythonModel):
    inputs = {"x": tensor("float32", [-1])}
    outputs = {"y": tensor("float32", [-1])}

    def run(self, inputs):
        return {"y": inputs["x"] * FACTOR}


def load(path):
    return Times(path)
'''


def write_python_version(base_path: str, version: int, factor: float) -> str:
    """A ``model_platform: "python"`` version folder whose model returns ``x * factor``."""
    folder = os.path.join(base_path, str(version))
    staging = os.path.join(base_path, f".incoming-{version}")
    os.makedirs(staging)
    with open(os.path.join(staging, "servable.py"), "w") as handle:
        handle.write(PYTHON_SERVABLE.replace("FACTOR", repr(float(factor))))
    os.rename(staging, folder)
    return folder


def model_entry(name: str, base_path: str, *, platform: str = "tensorflow", policy: str = "",
                labels: dict[str, int] | None = None) -> str:
    """One ``config { ... }`` block of a ModelServerConfig text proto."""
    parts = [f'name: "{name}"', f'base_path: "{base_path}"', f'model_platform: "{platform}"']
    if policy:
        parts.append(f"model_version_policy {{ {policy} }}")
    for label, version in (labels or {}).items():
        parts.append(f'version_labels {{ key: "{label}" value: {version} }}')
    return "config { " + " ".join(parts) + " }"


def config_text(*entries: str) -> str:
    return "model_config_list {\n  " + "\n  ".join(entries) + "\n}\n"


def write_config(path: str, text: str) -> str:
    """Replace the file atomically (as config management tools do)."""
    staging = path + ".tmp"
    with open(staging, "w") as handle:
        handle.write(text)
    os.replace(staging, path)
    return path


def predict_request(name: str, x: float = 2.0, *, version: int | None = None, label: str | None = None) -> Any:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    tensor = request.inputs["x"]
    tensor.dtype = 1  # DT_FLOAT
    tensor.float_val.append(x)
    tensor.tensor_shape.dim.add().size = 1
    return request


class Clients:
    """The official gRPC stubs and a tiny REST client for one running server."""

    def __init__(self, server: Any) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.rest = f"http://127.0.0.1:{server.rest_port}" if server.rest_port else None

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Clients":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def predict(self, name: str, x: float = 2.0, **spec: Any) -> tuple[int, float]:
        """(version that answered, y)."""
        response = self.predictions.Predict(predict_request(name, x, **spec), timeout=20)
        return response.model_spec.version.value, response.outputs["y"].float_val[0]

    def predict_error(self, name: str, **spec: Any) -> grpc.RpcError:
        try:
            self.predictions.Predict(predict_request(name, **spec), timeout=20)
        except grpc.RpcError as error:
            return error
        raise AssertionError(f"Predict on {name} {spec} succeeded")

    def reload(self, text: str) -> Any:
        request = model_management_pb2.ReloadConfigRequest()
        text_format.Parse(text, request.config)
        return self.models.HandleReloadConfigRequest(request, timeout=120)

    def reload_error(self, text: str) -> grpc.RpcError:
        try:
            self.reload(text)
        except grpc.RpcError as error:
            return error
        raise AssertionError("reload succeeded")

    def rest_call(self, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.rest + path, data=data, method="POST" if data else "GET")
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def available(self, name: str) -> list[int]:
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        try:
            response = self.models.GetModelStatus(request, timeout=10)
        except grpc.RpcError:
            return []
        return sorted(s.version for s in response.model_version_status if s.state == 30)


class ClientLoop:
    """Threads calling Predict on one model as fast as they can; every failure is kept."""

    def __init__(self, port: int, name: str, threads: int = 2) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.name = name
        self.ok = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        request = predict_request(self.name)
        while not self._stop.is_set():
            try:
                self.stub.Predict(request, timeout=20)
                with self._lock:
                    self.ok += 1
            except grpc.RpcError as error:
                with self._lock:
                    self.failures.append(f"{error.code()}: {error.details()}")

    def __enter__(self) -> "ClientLoop":
        for thread in self._threads:
            thread.start()
        wait_until(lambda: self.ok > 5, message="client loop running")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)
        self.channel.close()

    def count(self) -> int:
        with self._lock:
            return self.ok

    def wait_for_more(self, n: int = 5) -> None:
        start = self.count()
        wait_until(lambda: self.count() >= start + n, message="client loop still answered")


def elapsed(start: float) -> float:
    return time.monotonic() - start
