"""The MNIST walk-through: export (versions 1 and 2, both signatures) and the gRPC client."""

from __future__ import annotations

import os

import numpy as np
import pytest

from examples.mnist import data
from tests.examples.conftest import run_example


def _example(image: np.ndarray) -> bytes:
    import tensorflow as tf

    feature = tf.train.Feature(float_list=tf.train.FloatList(value=image.tolist()))
    return tf.train.Example(features=tf.train.Features(feature={"x": feature})).SerializeToString()


def test_digits_have_mnist_shape() -> None:
    split = data.load("digits")
    assert split.train_images.shape[1:] == (784,) and split.test_images.dtype == np.float32
    assert 0.0 <= split.test_images.min() and split.test_images.max() <= 1.0
    assert len(split.test_labels) == 360 and set(split.test_labels) == set(range(10))


def test_export_writes_two_versions_with_both_signatures(mnist_base_path: str) -> None:
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    assert sorted(os.listdir(mnist_base_path)) == ["1", "2"]
    split = data.load("digits")
    errors = {}
    for version in ("1", "2"):
        path = os.path.join(mnist_base_path, version)
        saved = saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            saved.ParseFromString(f.read())
        signatures = saved.meta_graphs[0].signature_def
        assert signatures["predict_images"].method_name == "tensorflow/serving/predict"
        assert list(signatures["predict_images"].inputs) == ["images"]
        assert signatures["serving_default"].method_name == "tensorflow/serving/classify"
        assert list(signatures["serving_default"].inputs) == ["inputs"]
        assert set(signatures["serving_default"].outputs) == {"classes", "scores"}

        model = tf.saved_model.load(path)
        scores = model.signatures["predict_images"](images=tf.constant(split.test_images))["scores"].numpy()
        assert scores.shape == (360, 10)
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
        errors[version] = float(np.mean(scores.argmax(axis=1) != split.test_labels))

        answer = model.signatures["serving_default"](inputs=tf.constant([_example(split.test_images[0])]))
        classes, class_scores = answer["classes"].numpy(), answer["scores"].numpy()
        assert classes.shape == class_scores.shape == (1, 10)
        assert sorted(classes[0]) == [str(i).encode() for i in range(10)]
        assert list(class_scores[0]) == sorted(class_scores[0], reverse=True)
        assert int(classes[0][0]) == scores[0].argmax()
    assert errors["2"] < 0.10, errors
    assert errors["1"] != errors["2"]  # trained for different numbers of steps


def test_export_rejects_decreasing_steps(tmp_path) -> None:
    from examples.mnist.train import train_and_export

    with pytest.raises(ValueError, match="increasing"):
        train_and_export(str(tmp_path), training_steps=(100, 50))


@pytest.mark.parametrize("api", ["predict", "classify"])
def test_client_error_rate_over_grpc(mnist_base_path: str, api: str) -> None:
    from examples.mnist.client import error_rate
    from tests.serverutil import model, running_server

    with running_server([model("mnist", mnist_base_path)]) as server:
        server_address = f"127.0.0.1:{server.grpc_port}"
        assert error_rate(server_address, "mnist", api=api) < 0.10
        if api == "predict":
            # The command line the README gives, against the same server.
            result = run_example("examples.mnist.client", f"--server={server_address}", "--dataset=digits")
            assert result.returncode == 0, result.stdout + result.stderr
            rate = float(result.stdout.strip().rsplit(" ", 1)[-1].rstrip("%"))
            assert rate < 10.0, result.stdout
