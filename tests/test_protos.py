"""Our generated protobuf modules match the official ones and coexist with them.

Every file compiled from protos/ that the official packages (tensorflow-serving-api,
tensorflow) also ship is compared message by message and field by field: names, numbers,
types, labels, type names, oneof membership and JSON names. All of them are imported
into one process with TensorFlow and the official client, which protobuf's default pool
would refuse if our modules registered conflicting files there.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import servable._proto as ours_root
from servable._proto import POOL


def _our_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(ours_root.__path__, "servable._proto."):
        if info.name.endswith("_pb2"):
            names.append(info.name)
    return sorted(names)


OUR_MODULES = _our_modules()
HAND_WRITTEN = {
    "tensorflow_serving/config/monitoring_config.proto",
    "tensorflow_serving/config/ssl_config.proto",
    "tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
}


def _official(module_name: str):
    official_name = module_name.removeprefix("servable._proto.")
    try:
        return importlib.import_module(official_name)
    except ImportError:
        return None


def _field_signature(field) -> tuple:
    return (
        field.name,
        field.number,
        field.type,
        field.label if hasattr(field, "label") else None,
        field.message_type.full_name if field.message_type else None,
        field.enum_type.full_name if field.enum_type else None,
        field.containing_oneof.name if field.containing_oneof and not field.containing_oneof.name.startswith("_") else None,
        field.json_name,
    )


def _compare_message(ours, theirs) -> None:
    assert ours.full_name == theirs.full_name
    assert sorted(_field_signature(f) for f in ours.fields) == sorted(_field_signature(f) for f in theirs.fields), ours.full_name
    assert sorted(n.name for n in ours.nested_types) == sorted(n.name for n in theirs.nested_types), ours.full_name
    for nested in ours.nested_types:
        _compare_message(nested, theirs.nested_types_by_name[nested.name])
    for enum in ours.enum_types:
        other = theirs.enum_types_by_name[enum.name]
        assert [(v.name, v.number) for v in enum.values] == [(v.name, v.number) for v in other.values]


def test_generated_modules_import_with_tensorflow_and_official_client():
    import tensorflow  # noqa: F401  (registers tensorflow/... in the default pool)
    import tensorflow_serving.apis.prediction_service_pb2  # noqa: F401

    for name in OUR_MODULES:
        importlib.import_module(name)
    assert POOL.FindMessageTypeByName("tensorflow.serving.PredictRequest")


@pytest.mark.parametrize("module_name", OUR_MODULES)
def test_descriptors_match_official(module_name):
    ours = importlib.import_module(module_name)
    theirs = _official(module_name)
    if ours.DESCRIPTOR.name in HAND_WRITTEN:
        pytest.skip("not shipped by the official wheels; written from TF Serving's documented fields")
    if theirs is None:
        pytest.skip("no official module of that name installed")
    assert ours.DESCRIPTOR.name == theirs.DESCRIPTOR.name
    assert ours.DESCRIPTOR.package == theirs.DESCRIPTOR.package
    assert sorted(ours.DESCRIPTOR.message_types_by_name) == sorted(theirs.DESCRIPTOR.message_types_by_name)
    for name, message in ours.DESCRIPTOR.message_types_by_name.items():
        _compare_message(message, theirs.DESCRIPTOR.message_types_by_name[name])
    for name, service in ours.DESCRIPTOR.services_by_name.items():
        other = theirs.DESCRIPTOR.services_by_name[name]
        assert [(m.name, m.input_type.full_name, m.output_type.full_name) for m in service.methods] == [
            (m.name, m.input_type.full_name, m.output_type.full_name) for m in other.methods
        ]


def test_wire_compatibility_round_trip():
    from tensorflow_serving.apis import predict_pb2 as official

    from servable._proto.tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.model_spec.version.value = 7
    request.inputs["x"].dtype = 1
    request.inputs["x"].float_val.extend([1.5, 2.5])
    request.output_filter.append("y")
    parsed = official.PredictRequest.FromString(request.SerializeToString())
    assert parsed.model_spec.version.value == 7 and list(parsed.inputs["x"].float_val) == [1.5, 2.5]
    assert predict_pb2.PredictRequest.FromString(parsed.SerializeToString()) == request
