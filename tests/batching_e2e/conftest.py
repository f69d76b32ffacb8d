"""Fixtures for end-to-end batching and warmup tests: a real server built from TF Serving flags."""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any, Iterator

import grpc
import numpy as np
import pytest

from tests.conftest import free_port, wait_until


@pytest.fixture(scope="session")
def mlp_export(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One exported 784-128-10 MLP (version folder content), copied per test."""
    from servable.tf.testing_models import export_mlp

    path = str(tmp_path_factory.mktemp("exports") / "mlp")
    export_mlp(path)
    return path


@pytest.fixture(scope="session")
def slow_export(tmp_path_factory: pytest.TempPathFactory) -> str:
    """y = 0.5x + 2 taking 0.25 s per call (keeps a batch thread busy)."""
    from servable.tf.testing_models import export_slow_model

    path = str(tmp_path_factory.mktemp("exports") / "slow")
    export_slow_model(path, 0.25)
    return path


@contextlib.contextmanager
def flag_server(argv: list[str], *, rest: bool = False, wait_for: dict[str, int] | None = None) -> Iterator[Any]:
    """Run ``ModelServer`` in-process from TF Serving flags (``argv`` without ports).

    ``wait_for``: model name -> version that must be AVAILABLE before yielding.
    """
    from servable.config import parse_flags
    from servable.model_server import ModelServer
    from servable.settings import settings_from_flags

    argv = list(argv) + [
        f"--port={free_port()}",
        "--grpc_address=127.0.0.1",
        "--rest_api_address=127.0.0.1",
        "--max_num_load_retries=0",
        "--file_system_poll_wait_seconds=1",
    ]
    if rest:
        argv.append(f"--rest_api_port={free_port()}")
    settings, _demo = settings_from_flags(parse_flags(argv))
    server = ModelServer(settings)
    server.start_in_thread()
    try:
        for name, version in (wait_for or {}).items():
            wait_until(lambda: version in server.core.manager.available_versions(name), timeout=60,
                       message=f"{name} v{version} AVAILABLE")
        yield server
    finally:
        server.stop()


def place_version(export: str, base_path: str, version: int, params: str | None = None,
                  warmup: list[Any] | None = None, broken_warmup: bytes | None = None) -> str:
    """Copy ``export`` to ``base_path/version``; optionally add batching_params.pbtxt and a
    warmup file; the version folder appears atomically (rename)."""
    from servable.tf.testing_models import write_warmup_file

    os.makedirs(base_path, exist_ok=True)
    staging = os.path.join(base_path, f".incoming-{version}")
    shutil.copytree(export, staging)
    if params is not None:
        with open(os.path.join(staging, "batching_params.pbtxt"), "w", encoding="utf-8") as handle:
            handle.write(params)
    if warmup is not None:
        write_warmup_file(staging, warmup)
    if broken_warmup is not None:
        os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
        with open(os.path.join(staging, "assets.extra", "tf_serving_warmup_requests"), "wb") as handle:
            handle.write(broken_warmup)
    target = os.path.join(base_path, str(version))
    os.rename(staging, target)
    return target


def write_params(tmp_path: Any, text: str, name: str = "batching.pbtxt") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def predict_request(model: str, inputs: dict[str, np.ndarray], signature: str = "serving_default") -> Any:
    """An official ``tensorflow_serving.apis`` PredictRequest."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for alias, array in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(array))
    return request


def stub_for(server: Any) -> tuple[grpc.Channel, Any]:
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    return channel, prediction_service_pb2_grpc.PredictionServiceStub(channel)


def batching_stats(server: Any, model: str, version: int | None = None) -> Any:
    """The ``BatchingStats`` of the served wrapper of ``model`` (latest or ``version``)."""
    from servable.core.ids import ServableRequest

    request = ServableRequest.latest(model) if version is None else ServableRequest.specific(model, version)
    with server.core.manager.get_handle(request) as handle:
        return handle.servable.stats()
