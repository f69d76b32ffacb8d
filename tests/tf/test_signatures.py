"""Reading signatures from saved_model.pb with servable's protos."""

from __future__ import annotations

import os
import shutil

import pytest

from servable._proto.tensorflow.core.protobuf import meta_graph_pb2
from servable.core.status import Code, ServingError
from servable.tf.signatures import INIT_OP_SIGNATURE_KEY, TensorInfo, read_signatures

DT_FLOAT, DT_STRING = 1, 7


def test_half_plus_two_signatures_match_tf_serving(half_plus_two_export):
    signatures = read_signatures(half_plus_two_export, ("serve",))
    infos = signatures.infos
    assert set(infos) == {
        "serving_default", "classify_x_to_y", "regress_x_to_y", "regress_x_to_y2", "regress_x2_to_y3", "classify_x2_to_y3",
    }
    default = infos["serving_default"]
    assert default.method_name == "tensorflow/serving/predict"
    assert default.inputs == {"x": TensorInfo("x:0", DT_FLOAT, (-1, 1))}
    assert default.outputs == {"y": TensorInfo("y:0", DT_FLOAT, (-1, 1))}
    classify = infos["classify_x_to_y"]
    assert classify.method_name == "tensorflow/serving/classify"
    assert classify.inputs == {"inputs": TensorInfo("tf_example:0", DT_STRING, None)}
    assert classify.outputs == {"scores": TensorInfo("y:0", DT_FLOAT, (-1, 1))}
    assert infos["regress_x_to_y2"].outputs["outputs"].name == "y2:0"
    assert infos["regress_x2_to_y3"].inputs["inputs"] == TensorInfo("x2:0", DT_FLOAT, (-1, 1))


def test_serialized_signature_defs_parse_back(half_plus_two_export):
    signatures = read_signatures(half_plus_two_export)
    assert set(signatures.serialized) == set(signatures.infos)
    for key, data in signatures.serialized.items():
        proto = meta_graph_pb2.SignatureDef.FromString(data)
        assert proto.method_name == signatures.infos[key].method_name
        assert set(proto.inputs) == set(signatures.infos[key].inputs)


def test_tf2_model_keeps_init_op_only_in_serialized(string_model_export):
    signatures = read_signatures(string_model_export)
    assert INIT_OP_SIGNATURE_KEY in signatures.serialized
    assert INIT_OP_SIGNATURE_KEY not in signatures.infos
    info = signatures.infos["serving_default"]
    assert info.inputs["text"].dtype == DT_STRING
    assert info.inputs["text"].shape == (-1,)
    assert set(info.outputs) == {"upper", "length", "echo_bytes"}


def test_missing_tags_is_not_found_with_tf_message(half_plus_two_export):
    with pytest.raises(ServingError) as raised:
        read_signatures(half_plus_two_export, ("serve", "gpu"))
    assert raised.value.code == Code.NOT_FOUND
    assert raised.value.message.startswith("Could not find meta graph def matching supplied tags: { serve gpu }.")


def test_missing_saved_model_is_not_found(tmp_path):
    with pytest.raises(ServingError) as raised:
        read_signatures(str(tmp_path))
    assert raised.value.code == Code.NOT_FOUND
    assert "Could not find SavedModel .pb or .pbtxt" in raised.value.message


def test_corrupt_saved_model_is_data_loss(tmp_path, half_plus_two_export):
    target = tmp_path / "broken"
    shutil.copytree(half_plus_two_export, target)
    with open(os.path.join(target, "saved_model.pb"), "wb") as handle:
        handle.write(b"\x12\xff\xff\xff\x0fgarbage")
    with pytest.raises(ServingError) as raised:
        read_signatures(str(target))
    assert raised.value.code == Code.DATA_LOSS
