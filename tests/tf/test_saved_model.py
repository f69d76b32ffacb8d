"""SavedModelServable: TF Serving's half_plus_two values, validation errors, concurrency."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from servable._proto.tensorflow.core.protobuf import meta_graph_pb2
from servable.core.status import Code, ServingError
from servable.serving.model import ModelServable
from servable.tf.testing_models import mlp_reference
from tests.tf.conftest import example


def f32(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def error_of(fn, *args) -> ServingError:
    with pytest.raises(ServingError) as raised:
        fn(*args)
    return raised.value


# -------------------------------------------------------------------- predict


def test_implements_the_servable_protocol(half_plus_two):
    assert isinstance(half_plus_two, ModelServable)


@pytest.mark.parametrize(
    "x, y",
    [
        ([1.0, 2.0, 5.0], [2.5, 3.0, 4.5]),
        ([[1.0], [2.0]], [[2.5], [3.0]]),
        ([[1.0, 2.0], [3.0, 4.0]], [[2.5, 3.0], [3.5, 4.0]]),  # shape not enforced, like TF Serving
        (2.0, 3.0),  # a scalar in, a scalar out
    ],
)
def test_predict_half_plus_two(half_plus_two, x, y):
    outputs = half_plus_two.predict("serving_default", {"x": f32(x)}, ())
    assert list(outputs) == ["y"]
    assert outputs["y"].dtype == np.float32
    np.testing.assert_array_equal(outputs["y"], f32(y))


def test_predict_with_output_filter(half_plus_two):
    outputs = half_plus_two.predict("serving_default", {"x": f32([2.0])}, ["y"])
    np.testing.assert_array_equal(outputs["y"], f32([3.0]))


def test_predict_x2_signatures(half_plus_two):
    regress = half_plus_two.predict("regress_x2_to_y3", {"inputs": f32([[2.0]])}, ())
    np.testing.assert_array_equal(regress["outputs"], f32([[4.0]]))
    classify = half_plus_two.predict("classify_x2_to_y3", {"inputs": f32([[2.0]])}, ())
    np.testing.assert_array_equal(classify["scores"], f32([[4.0]]))


def test_predict_tf_example_signature(half_plus_two):
    serialized = np.array([example(x=2.0), example(x=10.0)], dtype=object)
    outputs = half_plus_two.predict("regress_x_to_y2", {"inputs": serialized}, ())
    np.testing.assert_array_equal(outputs["outputs"], f32([[4.0], [8.0]]))


def test_predict_strings_come_back_as_bytes_objects(string_model):
    outputs = string_model.predict("serving_default", {"text": np.array([b"ab", b"xyz"], dtype=object)}, ())
    assert outputs["upper"].dtype == object
    assert outputs["upper"].tolist() == [b"AB", b"XYZ"]
    assert outputs["echo_bytes"].tolist() == [b"ab", b"xyz"]
    assert outputs["length"].tolist() == [2, 3]


def test_predict_mlp_matches_numpy(mlp):
    images = np.random.default_rng(1).random((4, 784), dtype=np.float32)
    scores = mlp.predict("serving_default", {"images": images}, ())["scores"]
    assert scores.shape == (4, 10)
    np.testing.assert_allclose(scores, mlp_reference(images), rtol=1e-4, atol=1e-6)


# -------------------------------------------------------------------- predict errors


def test_unknown_signature_is_failed_precondition(half_plus_two):
    error = error_of(half_plus_two.predict, "nope", {"x": f32([1.0])}, ())
    assert (error.code, error.message) == (Code.FAILED_PRECONDITION, 'Serving signature key "nope" not found.')


def test_extra_input_is_invalid_argument(half_plus_two):
    error = error_of(half_plus_two.predict, "serving_default", {"x": f32([1.0]), "z": f32([1.0])}, ())
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message == (
        "input size does not match signature: 2!=1 len({x,z}) != len({x}). Sent extra: {z}. Missing but required: {}."
    )


def test_missing_input_is_invalid_argument(half_plus_two):
    error = error_of(half_plus_two.predict, "serving_default", {}, ())
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message.startswith("input size does not match signature: 0!=1")
    assert "Missing but required: {x}." in error.message


def test_wrong_alias_is_invalid_argument(half_plus_two):
    error = error_of(half_plus_two.predict, "serving_default", {"q": f32([1.0])}, ())
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message.startswith("Signature input alias: x(feed name: x:0) not found in request")


@pytest.mark.parametrize(
    "array, provided",
    [
        (np.array([b"a"], dtype=object), "string"),
        (np.array([1.0], dtype=np.float64), "double"),
        (np.array([1], dtype=np.int32), "int32"),
    ],
)
def test_dtype_mismatch_is_never_cast(half_plus_two, array, provided):
    error = error_of(half_plus_two.predict, "serving_default", {"x": array}, ())
    assert (error.code, error.message) == (Code.INVALID_ARGUMENT, f"Expects arg[0] to be float but {provided} is provided")


def test_unknown_output_filter(half_plus_two):
    error = error_of(half_plus_two.predict, "serving_default", {"x": f32([1.0])}, ["z"])
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message == "output tensor alias not found in signature: z Outputs expected to be in the set {y}."


def test_duplicate_output_filter(half_plus_two):
    error = error_of(half_plus_two.predict, "serving_default", {"x": f32([1.0])}, ["y", "y"])
    assert (error.code, error.message) == (Code.INVALID_ARGUMENT, "duplicate output tensor alias: y")


def test_tf2_shape_mismatch_is_invalid_argument(string_model):
    error = error_of(string_model.predict, "serving_default", {"text": np.array([[b"a"]], dtype=object)}, ())
    assert error.code == Code.INVALID_ARGUMENT


def test_model_error_carries_the_tf_message_only(half_plus_two):
    serialized = np.array([example(x2=1.0)], dtype=object)
    error = error_of(half_plus_two.predict, "regress_x_to_y", {"inputs": serialized}, ())
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message.startswith("Name: <unknown>, Feature: x (data type: float) is required but could not be found.")
    assert "Detected at node" not in error.message and "[Op:" not in error.message


# -------------------------------------------------------------------- classify / regress


@pytest.mark.parametrize("x, score", [(2.0, 3.0), (20.0, 12.0), (10.0, 7.0)])
def test_classify_x_to_y(half_plus_two, x, score):
    classes, scores = half_plus_two.classify("classify_x_to_y", [example(x=x)])
    assert classes is None
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(scores, f32([[score]]))


@pytest.mark.parametrize("key, x, value", [("regress_x_to_y", 2.0, 3.0), ("regress_x_to_y", 80.0, 42.0), ("regress_x_to_y2", 2.0, 4.0)])
def test_regress(half_plus_two, key, x, value):
    values = half_plus_two.regress(key, [example(x=x)])
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, f32([value]))


def test_regress_batch(half_plus_two):
    values = half_plus_two.regress("regress_x_to_y", [example(x=1.0), example(x=2.0), example(x=5.0)])
    np.testing.assert_array_equal(values, f32([2.5, 3.0, 4.5]))


def test_classify_with_classes_and_scores(mlp):
    images = np.random.default_rng(2).random((2, 784), dtype=np.float32)
    classes, scores = mlp.classify("classify", [example(images=list(map(float, row))) for row in images])
    assert classes.shape == scores.shape == (2, 10)
    assert classes[0].tolist() == [str(i).encode() for i in range(10)]
    np.testing.assert_allclose(scores, mlp_reference(images), rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def half_plus_two_checked(half_plus_two_export: str):
    """half_plus_two loaded with --enable_signature_method_name_check."""
    from servable.tf.loaders import LoaderOptions
    from servable.tf.saved_model import SavedModelLoader

    loader = SavedModelLoader(half_plus_two_export, options=LoaderOptions(enable_model_warmup=False, method_name_check=True))
    loader.load()
    yield loader.servable()
    loader.unload()


def test_classify_on_regress_signature_checks_structure_by_default(half_plus_two):
    # TF Serving's default (--enable_signature_method_name_check=false): the method name is
    # not looked at, the signature's outputs are.
    error = error_of(half_plus_two.classify, "regress_x_to_y", [example(x=1.0)])
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message.startswith(
        'Expected classification signature outputs to contain at least one of "classes" or "scores".'
    )


def test_classify_on_regress_signature_with_method_name_check(half_plus_two_checked):
    error = error_of(half_plus_two_checked.classify, "regress_x_to_y", [example(x=1.0)])
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message == (
        "Expected classification signature method_name to be tensorflow/serving/classify. Was: tensorflow/serving/regress"
    )


def test_regress_on_predict_signature_with_method_name_check(half_plus_two_checked):
    error = error_of(half_plus_two_checked.regress, "serving_default", [example(x=1.0)])
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message == (
        "Expected regression signature method_name to be tensorflow/serving/regress. Was: tensorflow/serving/predict"
    )


def test_predict_on_unknown_method_with_method_name_check(half_plus_two_checked, monkeypatch):
    import dataclasses

    info = half_plus_two_checked.signatures["serving_default"]
    monkeypatch.setitem(
        half_plus_two_checked.signatures, "serving_default", dataclasses.replace(info, method_name="custom/method")
    )
    error = error_of(half_plus_two_checked.predict, "serving_default", {"x": np.array([1.0], np.float32)})
    assert error.code == Code.INTERNAL
    assert error.message == (
        "Expected prediction signature method_name to be one of {tensorflow/serving/predict, "
        "tensorflow/serving/classify, tensorflow/serving/regress}. Was: custom/method"
    )


def test_classify_and_regress_run_tf2_signatures_marked_predict(tmp_path):
    """A TF2 export marks every signature tensorflow/serving/predict; TF Serving's default
    still classifies and regresses with those whose inputs and outputs fit."""
    import tensorflow as tf

    from servable.tf.loaders import LoaderOptions
    from servable.tf.saved_model import SavedModelLoader

    class Model(tf.Module):
        def _x(self, serialized):
            return tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            return {"outputs": 0.5 * self._x(inputs) + 2.0}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            return {"scores": 0.5 * self._x(inputs) + 2.0}

    model = Model()
    path = str(tmp_path / "1")
    tf.saved_model.save(model, path, signatures={"regress_x_to_y": model.regress, "classify_x_to_y": model.classify})
    loader = SavedModelLoader(path, options=LoaderOptions(enable_model_warmup=False))
    loader.load()
    try:
        servable = loader.servable()
        assert servable.signatures["regress_x_to_y"].method_name == "tensorflow/serving/predict"
        values = servable.regress("regress_x_to_y", [example(x=1.0), example(x=4.0)])
        np.testing.assert_allclose(values, [2.5, 4.0])
        classes, scores = servable.classify("classify_x_to_y", [example(x=2.0)])
        assert classes is None
        np.testing.assert_allclose(scores, [[3.0]])
    finally:
        loader.unload()


def test_regress_on_float_input_signature(half_plus_two):
    error = error_of(half_plus_two.regress, "regress_x2_to_y3", [example(x2=1.0)])
    assert (error.code, error.message) == (Code.INVALID_ARGUMENT, "Expects arg[0] to be float but string is provided")


def test_empty_examples(half_plus_two):
    error = error_of(half_plus_two.regress, "regress_x_to_y", [])
    assert (error.code, error.message) == (Code.INVALID_ARGUMENT, "Input is empty.")


# -------------------------------------------------------------------- metadata and threads


def test_signature_defs_parse_back(half_plus_two):
    defs = half_plus_two.signature_defs()
    assert set(defs) == set(half_plus_two.signatures)
    proto = meta_graph_pb2.SignatureDef.FromString(defs["classify_x_to_y"])
    assert proto.method_name == "tensorflow/serving/classify"
    assert proto.inputs["inputs"].name == "tf_example:0"
    assert proto.outputs["scores"].name == "y:0"


def test_concurrent_predicts_are_correct(half_plus_two):
    failures: list[str] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(50):
            x = rng.random((int(rng.integers(1, 8)), 1), dtype=np.float32)
            y = half_plus_two.predict("serving_default", {"x": x}, ())["y"]
            if not np.array_equal(y, x * np.float32(0.5) + np.float32(2.0)):
                failures.append(f"{x} -> {y}")

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_half_plus_three(half_plus_three_export):
    from servable.tf.loaders import LoaderOptions
    from servable.tf.saved_model import SavedModelLoader

    loader = SavedModelLoader(half_plus_three_export, options=LoaderOptions(enable_model_warmup=False))
    loader.load()
    try:
        model = loader.servable()
        y = model.predict("serving_default", {"x": f32([1.0, 2.0, 5.0])}, ())["y"]
        np.testing.assert_array_equal(y, f32([3.5, 4.0, 5.5]))
        values = model.regress("tensorflow/serving/regress", [example(x=1.0), example(x=2.0)])
        np.testing.assert_array_equal(values, f32([3.5, 4.0]))
    finally:
        loader.unload()
