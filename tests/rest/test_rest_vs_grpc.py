"""REST and gRPC give the same numbers for the same input (official gRPC client)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_service_pb2_grpc, regression_pb2


@pytest.fixture(scope="module")
def stub(rest_server):
    with grpc.insecure_channel(f"127.0.0.1:{rest_server.grpc_port}") as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def grpc_predict(stub, name: str, alias: str, array: np.ndarray) -> dict[str, np.ndarray]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(array))
    response = stub.Predict(request, timeout=30)
    return {key: tf.make_ndarray(value) for key, value in response.outputs.items()}


def test_mlp_predict_identical(client, stub):
    rng = np.random.default_rng(7)
    images = rng.random((32, 784), dtype=np.float32)
    via_grpc = grpc_predict(stub, "mlp", "images", images)["scores"]
    for body, key in (({"instances": images.tolist()}, "predictions"), ({"inputs": images.tolist()}, "outputs")):
        reply = client.post("/v1/models/mlp:predict", body)
        assert reply.status == 200, reply.body
        via_rest = np.array(reply.json()[key], dtype=np.float32)
        assert via_rest.shape == via_grpc.shape == (32, 10)
        assert np.array_equal(via_rest, via_grpc)  # bit for bit: float32 text round-trips


def test_half_plus_two_awkward_values_identical(client, stub):
    values = np.array([0.1, 1e-30, 3.4e38, -0.0, 16777215.0, 1 / 3], dtype=np.float32)
    via_grpc = grpc_predict(stub, "default", "x", values)["y"]
    reply = client.post("/v1/models/default:predict", {"inputs": [float(v) for v in values]})
    via_rest = np.array(reply.json()["outputs"], dtype=np.float32)
    assert np.array_equal(via_rest, via_grpc)


def test_classify_and_regress_identical(client, stub):
    from tensorflow.core.example import example_pb2

    xs = [0.5, 2.0, 1e6, -7.25]
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    for x in xs:
        example = example_pb2.Example()
        example.features.feature["x"].float_list.value.append(x)
        request.input.example_list.examples.add().CopyFrom(example)
    grpc_values = [r.value for r in stub.Regress(request, timeout=30).result.regressions]
    reply = client.post("/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": x} for x in xs]})
    assert np.array_equal(np.array(reply.json()["results"], np.float32), np.array(grpc_values, np.float32))

    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "default"
    classify.model_spec.signature_name = "classify_x_to_y"
    classify.input.example_list.CopyFrom(request.input.example_list)
    grpc_scores = [c.classes[0].score for c in stub.Classify(classify, timeout=30).result.classifications]
    reply = client.post("/v1/models/default:classify", {"signature_name": "classify_x_to_y", "examples": [{"x": x} for x in xs]})
    rest_scores = [row[0][1] for row in reply.json()["results"]]
    assert np.array_equal(np.array(rest_scores, np.float32), np.array(grpc_scores, np.float32))
