"""TF Serving's gRPC API through the official client (tensorflow-serving-api), unchanged.

The server runs in this process, so these tests also prove that our generated modules
coexist with TensorFlow's and the official package's in one descriptor pool world.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tensorflow.core.example import example_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from tests.serverutil import copy_version, model, running_server


@pytest.fixture(scope="module", params=["threads", "asyncio", "asyncio+worker process"])
def server(request, tmp_path_factory, half_plus_two_export, half_plus_three_export):
    """Both gRPC front doors (``--grpc_server_mode``) answer every test the same, and so
    do SavedModels run in the model worker process (``--tensorflow_worker_process``)."""
    from servable.server import default_loader_factories
    from servable.tf.loaders import LoaderOptions
    from servable.tf.worker import ModelProcess

    root = tmp_path_factory.mktemp("grpc_models")
    copy_version(half_plus_two_export, str(root / "default"), "00000123")
    copy_version(half_plus_three_export, str(root / "half_plus_three"), 1)
    models = [model("default", root / "default"), model("half_plus_three", root / "half_plus_three")]
    mode, _, worker = request.param.partition("+")
    extra = {}
    if worker:
        process = ModelProcess()
        extra = {"model_process": process,
                 "loader_factories": default_loader_factories(options=LoaderOptions(model_process=process))}
    with running_server(models, rest=False, grpc_server_mode=mode, **extra) as srv:
        yield srv


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(values, name="default", signature="", shape=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if signature:
        request.model_spec.signature_name = signature
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray(values, dtype=np.float32), shape=shape))
    return request


def example(**features):
    ex = example_pb2.Example()
    for key, value in features.items():
        ex.features.feature[key].float_list.value.append(value)
    return ex


def test_predict_half_plus_two(stub):
    response = stub.Predict(predict_request([1.0, 2.0, 5.0]), timeout=10)
    assert np.allclose(tf.make_ndarray(response.outputs["y"]).reshape(-1), [2.5, 3.0, 4.5])
    assert response.model_spec.name == "default"
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "serving_default"


def test_predict_tensor_content_and_shape(stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0], [3.0]], np.float32)))
    assert request.inputs["x"].tensor_content  # make_tensor_proto packs arrays as bytes
    response = stub.Predict(request, timeout=10)
    out = tf.make_ndarray(response.outputs["y"])
    assert out.shape == (2, 1)
    assert np.allclose(out.reshape(-1), [2.5, 3.5])


def test_predict_output_filter_and_version(stub):
    request = predict_request([2.0])
    request.model_spec.version.value = 123
    request.output_filter.append("y")
    response = stub.Predict(request, timeout=10)
    assert list(response.outputs) == ["y"]
    assert np.allclose(tf.make_ndarray(response.outputs["y"]), [3.0])


def test_predict_other_model(stub):
    response = stub.Predict(predict_request([1.0, 2.0, 5.0], name="half_plus_three"), timeout=10)
    assert np.allclose(tf.make_ndarray(response.outputs["y"]).reshape(-1), [3.5, 4.0, 5.5])


def test_predict_regress_signature_by_alias(stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x2_to_y3"
    request.inputs["inputs"].CopyFrom(tf.make_tensor_proto(np.array([2.0], np.float32)))
    response = stub.Predict(request, timeout=10)
    assert np.allclose(tf.make_ndarray(response.outputs["outputs"]), [4.0])


@pytest.mark.parametrize(
    "mutate, code, text",
    [
        (lambda r: r.model_spec.__setattr__("name", "foo"), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(foo)"),
        (lambda r: r.model_spec.version.__setattr__("value", 99), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(default, 99)"),
        (lambda r: r.model_spec.__setattr__("version_label", "nope"), grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: nope"),
        (lambda r: r.model_spec.__setattr__("signature_name", "nope"), grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.'),
        (lambda r: r.model_spec.__setattr__("name", ""), grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
        (lambda r: r.output_filter.append("nope"), grpc.StatusCode.INVALID_ARGUMENT, "output tensor alias not found in signature: nope"),
        (lambda r: r.ClearField("model_spec"), grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
        # TF Serving hands the number to Specific(): a negative version is simply not found.
        (lambda r: r.model_spec.version.__setattr__("value", -1), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(default, -1)"),
    ],
)
def test_predict_errors(stub, mutate, code, text):
    request = predict_request([1.0])
    mutate(request)
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=10)
    assert info.value.code() == code
    assert text in info.value.details()


def test_predict_wrong_dtype_is_invalid_argument(stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(["a", "b"]))
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1, 2], np.int32)))
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_predict_wrong_input_name(stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["z"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_classify(stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.example_list.examples.append(example(x=2.0))
    response = stub.Classify(request, timeout=10)
    classes = response.result.classifications[0].classes
    assert len(classes) == 1 and classes[0].label == "" and classes[0].score == pytest.approx(3.0)
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "classify_x_to_y"


def test_regress_with_and_without_context(stub):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    request.input.example_list.examples.append(example(x=2.0))
    response = stub.Regress(request, timeout=10)
    assert response.result.regressions[0].value == pytest.approx(3.0)

    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    ctx = request.input.example_list_with_context
    ctx.context.CopyFrom(example(x=100.0))
    ctx.examples.append(example(x=2.0))  # the example's feature wins over the context's
    ctx.examples.append(example())  # falls back to the context's x
    response = stub.Regress(request, timeout=10)
    assert [r.value for r in response.result.regressions] == pytest.approx([3.0, 52.0])


def test_classify_regress_errors(stub):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    with pytest.raises(grpc.RpcError) as info:
        stub.Regress(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Input is empty" in info.value.details()
    request.input.example_list.examples.append(example(x=2.0))
    request.model_spec.signature_name = "nope"
    with pytest.raises(grpc.RpcError) as info:
        stub.Regress(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_multi_inference(stub):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in [("regress_x_to_y", "tensorflow/serving/regress"), ("classify_x_to_y", "tensorflow/serving/classify")]:
        task = request.tasks.add()
        task.model_spec.name = "default"
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.example_list.examples.append(example(x=2.0))
    response = stub.MultiInference(request, timeout=10)
    assert response.results[0].regression_result.regressions[0].value == pytest.approx(3.0)
    assert response.results[1].classification_result.classifications[0].classes[0].score == pytest.approx(3.0)
    assert response.results[0].model_spec.signature_name == "regress_x_to_y"
    assert response.results[1].model_spec.version.value == 123


def test_get_model_metadata(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, timeout=10)
    assert response.model_spec.name == "default" and response.model_spec.version.value == 123
    assert list(response.metadata) == ["signature_def"]
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    defs = signature_map.signature_def
    assert defs["serving_default"].method_name == "tensorflow/serving/predict"
    assert defs["classify_x_to_y"].method_name == "tensorflow/serving/classify"
    assert defs["regress_x_to_y"].method_name == "tensorflow/serving/regress"
    assert defs["serving_default"].inputs["x"].dtype == tf.float32.as_datatype_enum
    assert isinstance(defs["serving_default"], meta_graph_pb2.SignatureDef)

    request.ClearField("metadata_field")
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModelMetadata(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    request.metadata_field.append("nope")
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModelMetadata(request, timeout=10)
    assert "Metadata field nope is not supported" in info.value.details()


def test_get_model_status(model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    response = model_stub.GetModelStatus(request, timeout=10)
    assert len(response.model_version_status) == 1
    status = response.model_version_status[0]
    assert status.version == 123
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0
    assert status.HasField("status")  # TF Serving always writes it, "status {}" when OK

    request.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as info:
        model_stub.GetModelStatus(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "Could not find any versions of model nope" in info.value.details()
    request.model_spec.name = "default"
    request.model_spec.version.value = 7
    with pytest.raises(grpc.RpcError) as info:
        model_stub.GetModelStatus(request, timeout=10)
    assert "Could not find version 7 of model default" in info.value.details()


def test_health_service(channel):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService", "PredictionService", "ModelService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    "method",
    [
        "/tensorflow.serving.PredictionService/Predict",
        "/tensorflow.serving.PredictionService/Classify",
        "/tensorflow.serving.ModelService/GetModelStatus",
        "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
    ],
)
def test_unparsable_request_is_invalid_argument_without_python_internals(channel, stub, method):
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as info:
        call(b"\xff\xff\xff", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("Failed to parse the request as a tensorflow.serving.")
    assert "DecodeError" not in info.value.details()
    assert stub.Predict(predict_request([1.0]), timeout=10).model_spec.version.value == 123  # still serving


def test_multi_inference_needs_one_input_tensor_for_all_tasks(stub):
    request = inference_pb2.MultiInferenceRequest()
    for signature in ("regress_x_to_y", "regress_x2_to_y3"):  # examples vs a float feed
        task = request.tasks.add()
        task.model_spec.name = "default"
        task.model_spec.signature_name = signature
        task.method_name = "tensorflow/serving/regress"
    request.input.example_list.examples.append(example(x=2.0))
    with pytest.raises(grpc.RpcError) as info:
        stub.MultiInference(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "Input tensor must be the same for all Signatures."


def test_threads_is_the_default_mode_with_or_without_batching() -> None:
    from servable.grpc_api.server import GrpcFrontDoor, GrpcOptions
    from servable.grpc_api.threaded import ThreadedGrpcFrontDoor
    from servable.model_server import ServerSettings, make_grpc_front_door

    def door(**settings):
        return make_grpc_front_door(ServerSettings(models=[], grpc=GrpcOptions(), **settings), service=None, reload_config=None)

    assert isinstance(door(), ThreadedGrpcFrontDoor)
    assert isinstance(door(batch_scheduler=object()), ThreadedGrpcFrontDoor)
    assert isinstance(door(grpc_server_mode="asyncio"), GrpcFrontDoor)
    assert door(num_request_threads=3).num_threads == 3
    with pytest.raises(ValueError, match="expected threads or asyncio"):
        door(grpc_server_mode="auto")
