"""Model warmup through a real server: replay before AVAILABLE, broken files, no-file priming."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tensorflow as tf

from servable._proto.tensorflow_serving.apis import predict_pb2
from servable.core.ids import ServableId
from servable.core.states import ManagerState
from servable.tf.testing_models import mlp_reference
from tests.batching_e2e.conftest import batching_stats, flag_server, place_version, predict_request, stub_for, write_params


def _warmup_request(rows: int, dtype: type = np.float32) -> predict_pb2.PredictRequest:
    """A servable._proto PredictRequest for the MLP (what write_warmup_file takes)."""
    from servable.tf.tensors import ndarray_to_tensor_proto

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mlp"
    request.model_spec.signature_name = "serving_default"
    request.inputs["images"].CopyFrom(ndarray_to_tensor_proto(np.zeros((rows, 784), dtype=dtype)))
    return request


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def _metric_value(server, name: str, model: str, status: str) -> float | None:
    prefix = f'{name}{{model_name="{model}",status="{status}"}}'
    for line in server.metrics.render().decode().splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return None


def test_warmup_file_is_replayed_before_available(tmp_path, mlp_export, caplog) -> None:
    caplog.set_level(logging.INFO)
    base = str(tmp_path / "mlp")
    place_version(mlp_export, base, 1, warmup=[_warmup_request(1), _warmup_request(3), _warmup_request(5)])
    argv = ["--model_name=mlp", f"--model_base_path={base}", "--num_request_iterations_for_warmup=2"]
    with flag_server(argv, wait_for={"mlp": 1}) as server:
        messages = _messages(caplog)
        replayed = [i for i, m in enumerate(messages) if "warmup: replayed 3 records for mlp version 1" in m]
        available = [i for i, m in enumerate(messages) if "model mlp version 1: AVAILABLE" in m]
        assert replayed and available, messages
        assert replayed[0] < available[0], "warmup must finish before the version is AVAILABLE"
        channel, stub = stub_for(server)
        images = np.random.default_rng(1).random((2, 784), dtype=np.float32)
        scores = tf.make_ndarray(stub.Predict(predict_request("mlp", {"images": images}), timeout=30).outputs["scores"])
        channel.close()
        np.testing.assert_allclose(scores, mlp_reference(images), rtol=1e-4, atol=1e-6)


def test_warmup_records_metric(tmp_path, mlp_export) -> None:
    base = str(tmp_path / "mlp")
    place_version(mlp_export, base, 1, warmup=[_warmup_request(1), _warmup_request(2)])
    with flag_server(["--model_name=mlp", f"--model_base_path={base}"], wait_for={"mlp": 1}) as server:
        assert _metric_value(server, "servable_model_warmup_records_total", "mlp", "OK") == 2


def test_warmup_through_the_batching_wrapper(tmp_path, mlp_export) -> None:
    base = str(tmp_path / "mlp")
    place_version(mlp_export, base, 1, warmup=[_warmup_request(3)])
    params = write_params(tmp_path, "max_batch_size { value: 8 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 8\n")
    argv = ["--model_name=mlp", f"--model_base_path={base}", "--enable_batching", f"--batching_parameters_file={params}"]
    with flag_server(argv, wait_for={"mlp": 1}) as server:
        stats = batching_stats(server, "mlp")
        assert (stats.batches, stats.rows, stats.padded_rows) == (1, 3, 4)


def test_no_warmup_file_traces_each_allowed_batch_size(tmp_path, mlp_export, caplog) -> None:
    caplog.set_level(logging.INFO)
    base = str(tmp_path / "mlp")
    place_version(mlp_export, base, 1)
    params = write_params(tmp_path, "max_batch_size { value: 16 }\nallowed_batch_sizes: 2\nallowed_batch_sizes: 8\n"
                                    "allowed_batch_sizes: 16\n")
    argv = ["--model_name=mlp", f"--model_base_path={base}", "--enable_batching", f"--batching_parameters_file={params}"]
    with flag_server(argv, wait_for={"mlp": 1}) as server:
        stats = batching_stats(server, "mlp")
        # serving_default once per allowed size; the classify signature (needs a real
        # "images" feature) rejects made-up inputs and is skipped, not a load failure.
        assert stats.batches == 3 and stats.padded_rows == 2 + 8 + 16
        assert any("warmup: skipped signature classify" in m for m in _messages(caplog))


def test_no_warmup_file_without_batching_primes_signatures(tmp_path, mlp_export, caplog) -> None:
    caplog.set_level(logging.INFO)
    base = str(tmp_path / "mlp")
    place_version(mlp_export, base, 1)
    with flag_server(["--model_name=mlp", f"--model_base_path={base}"], wait_for={"mlp": 1}):
        messages = _messages(caplog)
        assert any("No warmup data file found at" in m for m in messages)
        assert any("warmup: replayed 0 records for mlp version 1" in m for m in messages)


@pytest.mark.parametrize("kind", ["wrong_dtype", "corrupt_file"])
def test_broken_warmup_fails_version_previous_keeps_serving(tmp_path, mlp_export, kind) -> None:
    base = str(tmp_path / "mlp")
    place_version(mlp_export, base, 1)
    with flag_server(["--model_name=mlp", f"--model_base_path={base}"], wait_for={"mlp": 1}) as server:
        if kind == "wrong_dtype":
            place_version(mlp_export, base, 2, warmup=[_warmup_request(1), _warmup_request(1, np.float64)])
            expected = "Expects arg[0] to be float but double is provided"
        else:
            place_version(mlp_export, base, 2, broken_warmup=b"\x07not a tfrecord at all, just bytes")
            expected = "Please verify your warmup data is in TFRecord format."
        state = server.core.monitor.wait_for_state(ServableId("mlp", 2), [ManagerState.END], timeout=30)
        assert state is not None and state.error is not None, state
        assert expected in state.error.message
        assert server.core.manager.available_versions("mlp") == [1]
        channel, stub = stub_for(server)
        images = np.random.default_rng(2).random((1, 784), dtype=np.float32)
        response = stub.Predict(predict_request("mlp", {"images": images}), timeout=30)
        channel.close()
        assert response.model_spec.version.value == 1
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["scores"]), mlp_reference(images), rtol=1e-4, atol=1e-6)
