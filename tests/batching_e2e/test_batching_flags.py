"""Batching through a real server started with TF Serving's flags (--enable_batching...)."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest

from servable.tf.testing_models import mlp_reference
from tests.batching_e2e.conftest import (
    batching_stats,
    flag_server,
    place_version,
    predict_request,
    stub_for,
    write_params,
)
from tests.conftest import wait_until


def _images(request_id: int, rows: int) -> np.ndarray:
    """Rows unique to one request (so a mixed-up row is caught)."""
    rng = np.random.default_rng(request_id)
    return rng.random((rows, 784), dtype=np.float32)


def _scores(response) -> np.ndarray:
    import tensorflow as tf

    return tf.make_ndarray(response.outputs["scores"])


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_64_concurrent_requests_of_1_3_5_rows_get_their_own_rows(tmp_path, mlp_export, mode) -> None:
    base = str(tmp_path / "mlp")
    place_version(mlp_export, base, 1)
    params = write_params(tmp_path, """
        max_batch_size { value: 32 }
        batch_timeout_micros { value: 5000 }
        max_enqueued_batches { value: 100 }
        num_batch_threads { value: 2 }
    """)
    argv = ["--model_name=mlp", f"--model_base_path={base}", "--enable_batching",
            f"--batching_parameters_file={params}"]
    with flag_server(argv + [f"--grpc_server_mode={mode}"], wait_for={"mlp": 1}) as server:
        before = batching_stats(server, "mlp")
        channel, stub = stub_for(server)
        sizes = [(1, 3, 5)[i % 3] for i in range(64)]
        inputs = [_images(i, rows) for i, rows in enumerate(sizes)]
        barrier = threading.Barrier(64)

        def call(i: int) -> np.ndarray:
            request = predict_request("mlp", {"images": inputs[i]})
            barrier.wait(10)
            return _scores(stub.Predict(request, timeout=30))

        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            results = list(pool.map(call, range(64)))
        channel.close()
        for i, scores in enumerate(results):
            assert scores.shape == (sizes[i], 10)
            np.testing.assert_allclose(scores, mlp_reference(inputs[i]), rtol=1e-4, atol=1e-6)
        after = batching_stats(server, "mlp")
        tasks = after.tasks - before.tasks
        batches = after.batches - before.batches
        assert tasks == 64 and after.rows - before.rows == sum(sizes)
        assert batches < 64, "concurrent requests were never merged"


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_padding_to_allowed_batch_sizes(tmp_path, mlp_export, mode) -> None:
    base = str(tmp_path / "mlp")
    place_version(mlp_export, base, 1)
    params = write_params(tmp_path, """
        max_batch_size { value: 16 }
        batch_timeout_micros { value: 0 }
        allowed_batch_sizes: 4
        allowed_batch_sizes: 16
    """)
    argv = ["--model_name=mlp", f"--model_base_path={base}", "--enable_batching",
            f"--batching_parameters_file={params}"]
    with flag_server(argv + [f"--grpc_server_mode={mode}"], wait_for={"mlp": 1}) as server:
        channel, stub = stub_for(server)
        for i, rows in enumerate((1, 3, 5, 16)):
            before = batching_stats(server, "mlp")
            images = _images(100 + i, rows)
            scores = _scores(stub.Predict(predict_request("mlp", {"images": images}), timeout=30))
            assert scores.shape == (rows, 10)
            np.testing.assert_allclose(scores, mlp_reference(images), rtol=1e-4, atol=1e-6)
            after = batching_stats(server, "mlp")
            assert after.rows - before.rows == rows
            assert after.padded_rows - before.padded_rows == (4 if rows <= 4 else 16)
        # Task bigger than max_batch_size without splitting: TF Serving's INVALID_ARGUMENT.
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(predict_request("mlp", {"images": _images(7, 17)}), timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Task size 17 is larger than maximum input batch size 16" in error.value.details()
        channel.close()
        text = server.metrics.render().decode()
        assert "servable_batch_size" in text


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_large_batch_splitting(tmp_path, mlp_export, mode) -> None:
    base = str(tmp_path / "mlp")
    place_version(mlp_export, base, 1)
    params = write_params(tmp_path, """
        max_batch_size { value: 64 }
        batch_timeout_micros { value: 0 }
        enable_large_batch_splitting { value: true }
        max_execution_batch_size { value: 8 }
        allowed_batch_sizes: 4
        allowed_batch_sizes: 8
    """)
    argv = ["--model_name=mlp", f"--model_base_path={base}", "--enable_batching",
            f"--batching_parameters_file={params}"]
    with flag_server(argv + [f"--grpc_server_mode={mode}"], wait_for={"mlp": 1}) as server:
        channel, stub = stub_for(server)
        before = batching_stats(server, "mlp")
        images = _images(200, 21)
        scores = _scores(stub.Predict(predict_request("mlp", {"images": images}), timeout=30))
        channel.close()
        assert scores.shape == (21, 10)
        np.testing.assert_allclose(scores, mlp_reference(images), rtol=1e-4, atol=1e-6)
        after = batching_stats(server, "mlp")
        # 21 rows -> pieces of 8, 8, 5 (the last padded to 8): three model calls of <= 8 rows.
        assert after.batches - before.batches == 3
        assert after.rows - before.rows == 21
        assert after.padded_rows - before.padded_rows == 24


def _rest_predict(port: int, model: str, instances: list) -> tuple[int, dict]:
    body = json.dumps({"instances": instances}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/{model}:predict", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_queue_full_is_unavailable_grpc_and_503_rest(tmp_path, slow_export, mode) -> None:
    base = str(tmp_path / "slow")
    place_version(slow_export, base, 1)
    # One thread, batches of 1 row, one batch may wait: a third concurrent request is refused.
    params = write_params(tmp_path, """
        max_batch_size { value: 1 }
        batch_timeout_micros { value: 0 }
        max_enqueued_batches { value: 1 }
        num_batch_threads { value: 1 }
    """)
    argv = ["--model_name=slow", f"--model_base_path={base}", "--enable_batching",
            f"--batching_parameters_file={params}"]
    with flag_server(argv + [f"--grpc_server_mode={mode}"], rest=True, wait_for={"slow": 1}) as server:
        channel, stub = stub_for(server)
        x = np.array([1.0], dtype=np.float32)
        futures = [stub.Predict.future(predict_request("slow", {"x": x}), timeout=30) for _ in range(6)]
        codes = []
        for future in futures:
            try:
                response = future.result()
                codes.append(grpc.StatusCode.OK)
                import tensorflow as tf

                assert tf.make_ndarray(response.outputs["y"]).tolist() == [2.5]
            except grpc.RpcError as error:
                codes.append(error.code())
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
                assert "The batch scheduling queue to which this task was submitted is full" in error.details()
        assert codes.count(grpc.StatusCode.OK) >= 1
        assert codes.count(grpc.StatusCode.UNAVAILABLE) >= 1

        # REST: keep the batch thread busy and the queue full, then a REST request gets 503.
        # Timing on a loaded machine varies (the running batch may finish first), so retry
        # the whole scene until the REST request meets a full queue.
        def rest_meets_full_queue():
            # One request running on the batch thread, then one waiting in the queue (which
            # holds one batch): a REST request meanwhile finds the queue full. Steps are
            # taken one at a time, so a slow machine cannot submit them all before the
            # batch thread picks the first up; a scene that missed its window is retried.
            running = stub.Predict.future(predict_request("slow", {"x": x}), timeout=30)
            wait_until(lambda: _queue_running(server, "slow") >= 1, timeout=10, message="running batch")
            queued = stub.Predict.future(predict_request("slow", {"x": x}), timeout=30)
            deadline = time.monotonic() + 5
            while _queue_tasks(server, "slow") < 1 and not queued.done() and time.monotonic() < deadline:
                time.sleep(0.002)
            answer = _rest_predict(server.rest_port, "slow", [1.0]) if not queued.done() else (0, {})
            for future in (running, queued):
                future.exception()
            return answer if answer[0] == 503 else None

        status, body = wait_until(rest_meets_full_queue, timeout=90, message="REST 503 on a full queue")
        channel.close()
        assert status == 503, body
        assert "queue to which this task was submitted is full" in body["error"]


def _queue_running(server, model: str) -> int:
    """Batches of ``model`` running on a batch thread now."""
    from servable.core.ids import ServableRequest

    with server.core.manager.get_handle(ServableRequest.latest(model)) as handle:
        return sum(queue._in_flight for queue in handle.servable._queues.values())


def _queue_tasks(server, model: str) -> int:
    from servable.core.ids import ServableRequest

    with server.core.manager.get_handle(ServableRequest.latest(model)) as handle:
        return sum(queue.num_enqueued_tasks for queue in handle.servable._queues.values())


def test_per_model_batching_params_file(tmp_path, mlp_export) -> None:
    """Only versions with their own batching_params.pbtxt are batched (TF Serving's rule)."""
    from servable.core.ids import ServableRequest

    loose, strict = str(tmp_path / "loose"), str(tmp_path / "strict")
    place_version(mlp_export, loose, 1)
    place_version(mlp_export, strict, 1, params="max_batch_size { value: 2 }\nbatch_timeout_micros { value: 0 }\n")
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "loose" base_path: "{loose}" model_platform: "tensorflow" }}\n'
        f'  config {{ name: "strict" base_path: "{strict}" model_platform: "tensorflow" }}\n'
        "}\n"
    )
    # The global file's max_batch_size would refuse 3 rows: "loose", with no file of its own, is not batched.
    params = write_params(tmp_path, "max_batch_size { value: 2 }\nbatch_timeout_micros { value: 0 }\n")
    argv = [f"--model_config_file={config}", "--enable_batching", f"--batching_parameters_file={params}",
            "--enable_per_model_batching_parameters"]
    with flag_server(argv, wait_for={"loose": 1, "strict": 1}) as server:
        channel, stub = stub_for(server)
        images = _images(300, 3)
        scores = _scores(stub.Predict(predict_request("loose", {"images": images}), timeout=30))
        np.testing.assert_allclose(scores, mlp_reference(images), rtol=1e-4, atol=1e-6)
        for name, batched in (("loose", False), ("strict", True)):
            with server.core.manager.get_handle(ServableRequest.latest(name)) as handle:
                assert (getattr(handle.servable, "predict_submit", None) is not None) is batched, name
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(predict_request("strict", {"images": images}), timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Task size 3 is larger than maximum input batch size 2" in error.value.details()
        two = _images(301, 2)
        np.testing.assert_allclose(_scores(stub.Predict(predict_request("strict", {"images": two}), timeout=30)),
                                   mlp_reference(two), rtol=1e-4, atol=1e-6)
        channel.close()


def test_invalid_per_model_params_fail_that_version(tmp_path, mlp_export) -> None:
    base = str(tmp_path / "mlp")
    place_version(mlp_export, base, 1)
    params = write_params(tmp_path, "max_batch_size { value: 8 }\n")
    argv = ["--model_name=mlp", f"--model_base_path={base}", "--enable_batching",
            f"--batching_parameters_file={params}", "--enable_per_model_batching_parameters"]
    with flag_server(argv, wait_for={"mlp": 1}) as server:
        place_version(mlp_export, base, 2, params="max_batch_size { value: 4 }\nallowed_batch_sizes: 3\n")
        from servable.core.states import ManagerState
        from servable.core.ids import ServableId

        state = server.core.monitor.wait_for_state(ServableId("mlp", 2), [ManagerState.END], timeout=30)
        assert state is not None and state.error is not None
        assert "Last entry in allowed_batch_sizes must match max_batch_size" in state.error.message
        assert server.core.manager.available_versions("mlp") == [1]


def test_rest_requests_are_batched_and_get_their_own_rows(tmp_path, mlp_export) -> None:
    """Small REST bodies are queued from the event loop (no worker parked per request)."""
    base = str(tmp_path / "mlp")
    place_version(mlp_export, base, 1)
    params = write_params(tmp_path, """
        max_batch_size { value: 32 }
        batch_timeout_micros { value: 5000 }
        max_enqueued_batches { value: 100 }
        num_batch_threads { value: 1 }
    """)
    argv = ["--model_name=mlp", f"--model_base_path={base}", "--enable_batching",
            f"--batching_parameters_file={params}"]
    with flag_server(argv, rest=True, wait_for={"mlp": 1}) as server:
        before = batching_stats(server, "mlp")
        sizes = [(1, 3, 5)[i % 3] for i in range(32)]
        inputs = [_images(100 + i, rows) for i, rows in enumerate(sizes)]
        barrier = threading.Barrier(32)

        def call(i: int) -> tuple[int, dict]:
            barrier.wait(10)
            return _rest_predict(server.rest_port, "mlp", inputs[i].tolist())

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(call, range(32)))
        for i, (status, body) in enumerate(answers):
            assert status == 200, body
            np.testing.assert_allclose(np.array(body["predictions"]), mlp_reference(inputs[i]), rtol=1e-4, atol=1e-6)
        after = batching_stats(server, "mlp")
        assert after.tasks - before.tasks == 32 and after.rows - before.rows == sum(sizes)


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_deadline_while_queued_gives_deadline_exceeded_and_server_keeps_serving(tmp_path, slow_export, mode) -> None:
    base = str(tmp_path / "slow")
    place_version(slow_export, base, 1)
    params = write_params(tmp_path, """
        max_batch_size { value: 1 }
        batch_timeout_micros { value: 0 }
        max_enqueued_batches { value: 10 }
        num_batch_threads { value: 1 }
    """)
    argv = ["--model_name=slow", f"--model_base_path={base}", "--enable_batching",
            f"--batching_parameters_file={params}"]
    with flag_server(argv + [f"--grpc_server_mode={mode}"], wait_for={"slow": 1}) as server:
        channel, stub = stub_for(server)
        x = np.array([1.0], dtype=np.float32)
        busy = stub.Predict.future(predict_request("slow", {"x": x}), timeout=30)  # holds the batch thread
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(predict_request("slow", {"x": x}), timeout=0.1)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        busy.result()
        import tensorflow as tf

        response = stub.Predict(predict_request("slow", {"x": x}), timeout=30)
        assert tf.make_ndarray(response.outputs["y"]).tolist() == [2.5]
        channel.close()


ROW_SUM_MODEL = '''
import threading
import time
import numpy as np
from servable.python_model import PythonModel, tensor


class RowSum(PythonModel):
    """Each row's sum, slowly (so requests queue behind a call); records each call's rows."""

    inputs = {"x": tensor("float32", [-1, 4])}
    outputs = {"total": tensor("float32", [-1])}

    def __init__(self, path):
        super().__init__(path)
        self.calls = []
        self.lock = threading.Lock()

    def run(self, inputs):
        with self.lock:
            self.calls.append(len(inputs["x"]))
        time.sleep(0.05)
        return {"total": inputs["x"].sum(axis=1)}


def load(path):
    return RowSum(path)
'''


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_python_models_are_batched_too(tmp_path, mode) -> None:
    """``--enable_batching`` wraps a ``model_platform: "python"`` version like a SavedModel."""
    folder = tmp_path / "rowsum" / "1"
    folder.mkdir(parents=True)
    (folder / "servable.py").write_text(ROW_SUM_MODEL)
    config = tmp_path / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "rowsum" base_path: "{folder.parent}" '
                      f'model_platform: "python" }} }}')
    params = write_params(tmp_path, """
        max_batch_size { value: 32 }
        batch_timeout_micros { value: 20000 }
        num_batch_threads { value: 1 }
    """)
    argv = [f"--model_config_file={config}", "--enable_batching", f"--batching_parameters_file={params}",
            f"--grpc_server_mode={mode}"]
    with flag_server(argv, wait_for={"rowsum": 1}) as server:
        channel, stub = stub_for(server)
        inputs = [np.full((1 + i % 2, 4), i, np.float32) for i in range(24)]
        barrier = threading.Barrier(len(inputs))

        def call(i: int) -> np.ndarray:
            import tensorflow as tf

            request = predict_request("rowsum", {"x": inputs[i]})
            barrier.wait(10)
            return tf.make_ndarray(stub.Predict(request, timeout=30).outputs["total"])

        with concurrent.futures.ThreadPoolExecutor(len(inputs)) as pool:
            results = list(pool.map(call, range(len(inputs))))
        channel.close()
        for i, total in enumerate(results):
            np.testing.assert_array_equal(total, inputs[i].sum(axis=1))
        stats = batching_stats(server, "rowsum")
        assert stats.tasks == len(inputs) and stats.rows == sum(len(x) for x in inputs)
        assert stats.batches < len(inputs), "concurrent requests were never merged"
        from servable.core.ids import ServableRequest

        with server.core.manager.get_handle(ServableRequest.latest("rowsum")) as handle:
            calls = list(handle.servable.inner.calls)
        assert max(calls) > 2 and sum(calls) == stats.rows
