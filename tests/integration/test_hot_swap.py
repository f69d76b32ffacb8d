"""Hot swaps under load: no failed request, one version after the swap, drain before unload."""

from __future__ import annotations

import os
import shutil
import threading
import time

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc

from tests.conftest import wait_until
from tests.serverutil import copy_version, model, running_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def half_plus_ten_export(tmp_path_factory):
    from servable.tf.testing_models import export_half_plus_two

    path = str(tmp_path_factory.mktemp("exports") / "half_plus_ten")
    export_half_plus_two(path, a=0.5, b=10.0)
    return path


class Hammer:
    """A client loop calling Predict as fast as it can, recording versions and failures."""

    def __init__(self, port: int, name: str, threads: int = 3) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.name = name
        self.failures: list[str] = []
        self.versions: list[tuple[float, int, float]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self._lock = threading.Lock()

    def _run(self) -> None:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.name
        request.inputs["x"].dtype = 1
        request.inputs["x"].float_val.append(2.0)
        request.inputs["x"].tensor_shape.dim.add().size = 1
        while not self._stop.is_set():
            try:
                sent = time.monotonic()  # requests sent after a swap settled must see the new version
                response = self.stub.Predict(request, timeout=10)
                with self._lock:
                    self.versions.append((sent, response.model_spec.version.value, response.outputs["y"].float_val[0]))
            except grpc.RpcError as error:
                with self._lock:
                    self.failures.append(f"{error.code()}: {error.details()}")

    def __enter__(self) -> "Hammer":
        for thread in self._threads:
            thread.start()
        wait_until(lambda: len(self.versions) > 5, message="hammer running")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        self.channel.close()

    def latest_version(self) -> int | None:
        with self._lock:
            return self.versions[-1][1] if self.versions else None

    def versions_since(self, t: float) -> set[int]:
        with self._lock:
            return {v for (ts, v, _y) in self.versions if ts >= t}


def slow_copy(src: str, dst: str, pause: float = 0.15) -> None:
    """Copy a SavedModel into place file by file, in chunks, as a slow network copy would."""
    for root, _dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
        for name in files:
            with open(os.path.join(root, name), "rb") as fin, open(os.path.join(dst, rel, name), "wb") as fout:
                data = fin.read()
                half = len(data) // 2
                fout.write(data[:half])
                fout.flush()
                time.sleep(pause)
                fout.write(data[half:])
            time.sleep(pause)


def test_hot_swap_under_load(tmp_path, half_plus_two_export, half_plus_ten_export):
    base = tmp_path / "swap"
    copy_version(half_plus_two_export, str(base), 1)
    with running_server([model("swap", base)], rest=False) as server:
        with Hammer(server.grpc_port, "swap") as hammer:
            assert hammer.latest_version() == 1
            slow_copy(half_plus_ten_export, str(base / "2"))
            completed = time.monotonic()
            wait_until(lambda: server.core.manager.available_versions("swap") == [2] or None, timeout=20, message="v2 only")
            settled = time.monotonic()
            wait_until(lambda: hammer.versions_since(settled), message="requests after the swap")
            assert hammer.versions_since(settled) == {2}
            assert all(y == pytest.approx(11.0) for (ts, v, y) in hammer.versions if v == 2)

            # Deleting the newest version falls back to the previous one, still without failures.
            shutil.rmtree(base / "2")
            wait_until(lambda: server.core.manager.available_versions("swap") == [1] or None, timeout=20, message="back to v1")
            back = time.monotonic()
            wait_until(lambda: hammer.versions_since(back), message="requests after the fallback")
            assert hammer.versions_since(back) == {1}
        assert hammer.failures == []
        assert settled - completed < 10.0


def test_unload_waits_for_in_flight_request(tmp_path, half_plus_two_export):
    from servable.tf.testing_models import export_slow_model

    slow_export = str(tmp_path / "slow_export")
    export_slow_model(slow_export, delay_s=1.5)
    base = tmp_path / "drain"
    copy_version(slow_export, str(base), 1)
    with running_server([model("drain", base)], rest=False) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "drain"
        request.inputs["x"].dtype = 1
        request.inputs["x"].float_val.append(1.0)
        request.inputs["x"].tensor_shape.dim.add().size = 1
        future = stub.Predict.future(request, timeout=30)
        time.sleep(0.3)  # let the slow request start running on version 1
        copy_version(half_plus_two_export, str(base), 2)
        wait_until(lambda: 2 in server.core.manager.available_versions("drain"), timeout=20)
        # Version 2 serves new requests while version 1 is still draining.
        fast = predict_pb2.PredictRequest()
        fast.CopyFrom(request)
        assert stub.Predict(fast, timeout=10).model_spec.version.value == 2
        response = future.result()
        finished = time.time()
        assert response.model_spec.version.value == 1
        state = wait_until(
            lambda: (s := server.core.monitor.get_state(_id("drain", 1))) is not None and s.state.name == "END" and s,
            timeout=15,
        )
        assert state.timestamp >= finished - 0.05
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "drain"}), timeout=5
        )
        assert [(s.version, s.state) for s in status.model_version_status] == [
            (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
            (1, get_model_status_pb2.ModelVersionStatus.END),
        ]
        channel.close()


def _id(name: str, version: int):
    from servable.core.ids import ServableId

    return ServableId(name, version)


def test_failed_version_keeps_previous_serving(tmp_path, half_plus_two_export):
    base = tmp_path / "broken"
    copy_version(half_plus_two_export, str(base), 1)
    with running_server([model("broken", base)], rest=False) as server:
        bad = base / ".incoming-2"
        shutil.copytree(half_plus_two_export, bad)
        with open(bad / "saved_model.pb", "wb") as handle:
            handle.write(b"this is not a SavedModel")
        os.rename(bad, base / "2")
        state = wait_until(
            lambda: (s := server.core.monitor.get_state(_id("broken", 2))) is not None and s.state.name == "END" and s,
            timeout=20,
        )
        assert state.error is not None and state.error.code.name != "OK" and state.error.message
        assert server.core.manager.available_versions("broken") == [1]
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "broken"}), timeout=5
        )
        by_version = {s.version: s for s in status.model_version_status}
        assert by_version[2].state == get_model_status_pb2.ModelVersionStatus.END
        assert by_version[2].status.error_code != 0 and by_version[2].status.error_message
        assert by_version[1].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
        # Fixing the folder (new content) retries the load.
        shutil.rmtree(base / "2")
        copy_version(half_plus_two_export, str(base), 2)
        wait_until(lambda: server.core.manager.available_versions("broken") == [2] or None, timeout=20)
        channel.close()


def test_missing_base_path_does_not_block_other_models(tmp_path, half_plus_two_export):
    good = tmp_path / "good"
    copy_version(half_plus_two_export, str(good), 1)
    with running_server([model("missing", tmp_path / "does-not-exist"), model("good", good)], rest=False) as server:
        assert server.core.manager.available_versions("good") == [1]
        copy_version(half_plus_two_export, str(good), 2)
        wait_until(lambda: server.core.manager.available_versions("good") == [2] or None, timeout=10)
        # The missing model appears when its folder does.
        copy_version(half_plus_two_export, str(tmp_path / "does-not-exist"), 5)
        wait_until(lambda: server.core.manager.available_versions("missing") == [5] or None, timeout=10)
