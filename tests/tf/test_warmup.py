"""Warmup: replaying assets.extra/tf_serving_warmup_requests, limits, errors, no-file priming."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest

from servable._proto.tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)
from servable.core.status import Code, ServingError
from servable.tf.loaders import LoaderOptions
from servable.tf.saved_model import SavedModelLoader
from servable.tf.testing_models import write_warmup_file
from servable.tf.warmup import examples_from_input, run_warmup, warm_up_signatures, warmup_file_path
from tests.tf.test_loaders import Wrapper


def predict_request(values, signature="serving_default", dtype=1):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "ignored"
    request.model_spec.signature_name = signature
    tensor = request.inputs["x"]
    tensor.dtype = dtype
    tensor.tensor_shape.dim.add().size = len(values)
    if dtype == 7:
        tensor.string_val.extend(values)
    else:
        tensor.float_val.extend(values)
    return request


def add_example(input_proto, **features):
    example = input_proto.example_list.examples.add()
    for name, value in features.items():
        example.features.feature[name].float_list.value.append(value)


@pytest.fixture
def export(tmp_path, half_plus_two_export):
    target = str(tmp_path / "1")
    shutil.copytree(half_plus_two_export, target)
    return target


def all_kinds():
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.signature_name = "classify_x_to_y"
    add_example(classify.input, x=2.0)
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.signature_name = "regress_x_to_y"
    add_example(regress.input, x=2.0)
    multi = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", "tensorflow/serving/regress"), ("classify_x_to_y", "tensorflow/serving/classify")):
        task = multi.tasks.add()
        task.model_spec.signature_name = signature
        task.method_name = method
    add_example(multi.input, x=2.0)
    return [predict_request([1.0, 2.0]), classify, regress, multi]


def test_replays_every_kind_of_record(export, half_plus_two):
    write_warmup_file(export, all_kinds() + [prediction_log_pb2.PredictionLog()])  # last: no log_type, skipped
    assert run_warmup(half_plus_two, export) == 4


def test_iterations_repeat_each_record(export, half_plus_two):
    write_warmup_file(export, [predict_request([1.0]), predict_request([2.0])])
    wrapper = Wrapper(half_plus_two, export)
    assert run_warmup(wrapper, export, iterations=3) == 2
    assert wrapper.predicts == 6


def test_loader_replays_and_logs_the_count(export, caplog):
    write_warmup_file(export, all_kinds())
    loader = SavedModelLoader(export, options=LoaderOptions(num_request_iterations_for_warmup=2), name="hp2", version=1)
    with caplog.at_level(logging.INFO, logger="servable.tf.saved_model"):
        loader.load()
    try:
        assert loader.warmup_records == 4
        assert loader.servable().warmup_records == 4
        assert "warmup: replayed 4 records" in caplog.text
    finally:
        loader.unload()


def test_warmup_disabled_skips_the_file(export):
    write_warmup_file(export, [predict_request([b"bad"], dtype=7)])
    loader = SavedModelLoader(export, options=LoaderOptions(enable_model_warmup=False))
    loader.load()
    assert loader.warmup_records == 0
    loader.unload()


def test_failing_record_fails_the_load(export):
    write_warmup_file(export, [predict_request([1.0]), predict_request([b"oops"], dtype=7)])
    loader = SavedModelLoader(export)
    with pytest.raises(ServingError) as raised:
        loader.load()
    assert (raised.value.code, raised.value.message) == (Code.INVALID_ARGUMENT, "Expects arg[0] to be float but string is provided")


def test_unknown_signature_record_fails(export, half_plus_two):
    write_warmup_file(export, [predict_request([1.0], signature="missing")])
    with pytest.raises(ServingError) as raised:
        run_warmup(half_plus_two, export)
    assert raised.value.code == Code.FAILED_PRECONDITION


def test_unsupported_log_type(export, half_plus_two):
    record = prediction_log_pb2.PredictionLog()
    record.session_run_log.SetInParent()
    write_warmup_file(export, [record])
    with pytest.raises(ServingError) as raised:
        run_warmup(half_plus_two, export)
    assert (raised.value.code, raised.value.message) == (Code.UNIMPLEMENTED, "Unsupported log_type for warmup: 5")


def test_too_many_records(export, half_plus_two):
    write_warmup_file(export, [predict_request([1.0])] * 1001)
    with pytest.raises(ServingError) as raised:
        run_warmup(half_plus_two, export)
    assert raised.value.code == Code.INVALID_ARGUMENT
    assert raised.value.message.startswith("Number of warmup records exceeds the maximum (1000) at ")


def test_corrupt_file_is_data_loss(export, half_plus_two):
    path = warmup_file_path(export)
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as handle:
        handle.write(b"\x10\x00\x00\x00\x00\x00\x00\x00garbage-garbage-garbage")
    with pytest.raises(ServingError) as raised:
        run_warmup(half_plus_two, export)
    assert raised.value.code == Code.DATA_LOSS
    assert raised.value.message.endswith("Please verify your warmup data is in TFRecord format.")
    # The record reader's own text, without TensorFlow's Python-side decoration.
    assert "{{function_node" not in raised.value.message and "[Op:" not in raised.value.message
    assert "name:" not in raised.value.message


def test_clean_tf_message_strips_function_node_and_op_name_decoration():
    from servable.tf.saved_model import clean_tf_message

    assert clean_tf_message(
        "{{function_node __wrapped__IteratorGetNext_output_types_1_device_/job:localhost/replica:0/task:0/device:CPU:0}}"
        " corrupted record at 0 (Is this even a TFRecord file?) [Op:IteratorGetNext] name: "
    ) == "corrupted record at 0 (Is this even a TFRecord file?)"
    assert clean_tf_message("Graph execution error:\n\nbad input [Op:__inference_f_12]") == "bad input"


def test_without_file_every_signature_that_accepts_made_up_inputs_is_called(export, half_plus_two, caplog):
    with caplog.at_level(logging.INFO, logger="servable.tf.warmup"):
        warmed = warm_up_signatures(half_plus_two, batch_sizes=(1, 4))
    # Float-input signatures run; tf.Example parsers reject an empty Example (x is required).
    assert sorted(warmed) == ["classify_x2_to_y3", "regress_x2_to_y3", "serving_default"]
    assert "skipped signature classify_x_to_y" in caplog.text
    assert run_warmup(half_plus_two, export) == 0


def test_no_file_warmup_primes_string_and_tf2_models(string_model):
    assert warm_up_signatures(string_model, batch_sizes=(2,)) == ["serving_default"]


def test_examples_from_input_merges_context():
    from servable._proto.tensorflow.core.example import example_pb2
    from servable._proto.tensorflow_serving.apis import input_pb2

    input_proto = input_pb2.Input()
    with_context = input_proto.example_list_with_context
    with_context.context.features.feature["shared"].float_list.value.append(7.0)
    with_context.context.features.feature["x"].float_list.value.append(1.0)
    with_context.examples.add().features.feature["x"].float_list.value.append(2.0)
    (serialized,) = examples_from_input(input_proto)
    merged = example_pb2.Example.FromString(serialized)
    assert merged.features.feature["shared"].float_list.value == [7.0]
    assert merged.features.feature["x"].float_list.value == [2.0]


def _export_counter(path: str) -> str:
    """A model with state: ``incr`` adds one to a variable, ``get`` reads it."""
    import tensorflow as tf

    class Counter(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.count = tf.Variable(0.0)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def incr(self, x):
            self.count.assign_add(1.0)
            return {"count": tf.fill(tf.shape(x), self.count)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def get(self, x):
            return {"count": tf.fill(tf.shape(x), self.count)}

    counter = Counter()
    tf.saved_model.save(counter, path, signatures={"incr": counter.incr, "serving_default": counter.get})
    return path


@pytest.mark.parametrize("synthetic, expected", [(True, None), (False, 0.0)])
def test_synthetic_warmup_can_be_turned_off_for_stateful_models(tmp_path, synthetic, expected):
    path = _export_counter(str(tmp_path / "1"))
    loader = SavedModelLoader(path, options=LoaderOptions(warmup_signatures_without_file=synthetic))
    loader.load()
    try:
        count = float(loader.servable().predict("serving_default", {"x": np.array([0.0], np.float32)})["count"][0])
        if expected is None:
            assert count >= 1.0  # made-up inputs went through "incr" before AVAILABLE
        else:
            assert count == expected  # untouched, as TF Serving leaves a model without a warmup file
    finally:
        loader.unload()
