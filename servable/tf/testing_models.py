"""Small SavedModels for tests, benchmarks and the demo, exported in well under a second.

Each ``export_*`` writes one version folder's content (saved_model.pb, variables/) at
``path`` (created; must not exist yet or be empty). Callers: tests (session fixtures),
``servable.demo`` (half_plus_two), benchmarks.

- ``export_half_plus_two``: TF Serving's saved_model_half_plus_two_cpu rebuilt the way its
  generator builds it (a TF1 graph; ``x`` is an Identity on the parsed tf.Example, so the
  predict feed accepts any shape). Signatures and values: tfserving.md §10.2/§10.3.
- ``export_half_plus_three``: the same graph with b=3 plus TF Serving's signature named
  literally ``tensorflow/serving/regress``.
- ``export_mlp``: 784-128-10 dense softmax ("images" -> "scores") plus a classify
  signature over tf.Examples with an "images" float feature.
- ``export_slow_model``: y = 0.5 * x + 2 after ``delay_s`` seconds per call (TF2).
- ``export_string_model``: a TF2 string model with an output alias ending in ``_bytes``.
- ``write_warmup_file``: ``assets.extra/tf_serving_warmup_requests`` from requests or logs.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

import numpy as np
import tensorflow as tf

from servable._proto.tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)

PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


def _quiet() -> Any:
    """Silence TF's deprecation warnings for the TF1 APIs used on purpose here."""
    from tensorflow.python.util import deprecation

    return deprecation.silence()


def _save_v1(path: str, build: Any) -> None:
    """Build a TF1 graph with ``build() -> signature_def_map`` and save it with tag "serve"."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with _quiet(), graph.as_default():
        signatures = build()
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(
                session, [tf.saved_model.SERVING], signature_def_map=signatures, strip_default_attrs=True
            )
            builder.save()


def _info(tensor: Any) -> Any:
    return tf.compat.v1.saved_model.utils.build_tensor_info(tensor)


def _signature(inputs: dict[str, Any], outputs: dict[str, Any], method: str) -> Any:
    return tf.compat.v1.saved_model.signature_def_utils.build_signature_def(
        {k: _info(v) for k, v in inputs.items()}, {k: _info(v) for k, v in outputs.items()}, method
    )


def _half_plus_graph(a: float, b: float, c: float = 3.0, a2: float = 0.5, c2: float = 3.0) -> dict[str, Any]:
    v1 = tf.compat.v1
    var_a = v1.Variable(a, name="a")
    var_b = v1.Variable(b, name="b")
    var_c = v1.Variable(c, name="c")
    var_a2 = v1.Variable(a2, name="a2")
    var_c2 = v1.Variable(c2, name="c2")
    serialized = v1.placeholder(tf.string, name="tf_example")
    features = v1.parse_example(
        serialized,
        {
            "x": v1.FixedLenFeature([1], tf.float32),
            "x2": v1.FixedLenFeature([1], tf.float32, default_value=[0.0]),
        },
    )
    x = tf.identity(features["x"], name="x")
    x2 = tf.identity(features["x2"], name="x2")
    x.set_shape([None, 1])  # TF1's ParseExample inferred this; ParseExampleV2 leaves it unknown
    x2.set_shape([None, 1])
    y = tf.add(tf.multiply(var_a, x), var_b, name="y")
    y2 = tf.add(tf.multiply(var_a, x), var_c, name="y2")
    y3 = tf.add(tf.multiply(var_a2, x2), var_c2, name="y3")
    return {
        "serving_default": _signature({"x": x}, {"y": y}, PREDICT),
        "classify_x_to_y": _signature({"inputs": serialized}, {"scores": y}, CLASSIFY),
        "regress_x_to_y": _signature({"inputs": serialized}, {"outputs": y}, REGRESS),
        "regress_x_to_y2": _signature({"inputs": serialized}, {"outputs": y2}, REGRESS),
        "regress_x2_to_y3": _signature({"inputs": x2}, {"outputs": y3}, REGRESS),
        "classify_x2_to_y3": _signature({"inputs": x2}, {"scores": y3}, CLASSIFY),
    }


def export_half_plus_two(path: str, a: float = 0.5, b: float = 2.0) -> str:
    """y = a·x + b (default 0.5·x + 2); y2 = a·x + 3; y3 = 0.5·x2 + 3. Returns ``path``."""
    _save_v1(path, lambda: _half_plus_graph(a, b))
    return path


def export_half_plus_three(path: str) -> str:
    """half_plus_two with b=3 (y = 0.5·x + 3), plus a "tensorflow/serving/regress" signature."""

    def build() -> dict[str, Any]:
        signatures = _half_plus_graph(0.5, 3.0)
        graph = tf.compat.v1.get_default_graph()
        signatures["tensorflow/serving/regress"] = _signature(
            {"inputs": graph.get_tensor_by_name("tf_example:0")}, {"outputs": graph.get_tensor_by_name("y:0")}, REGRESS
        )
        return signatures

    _save_v1(path, build)
    return path


MLP_LABELS = [str(i).encode() for i in range(10)]


def mlp_weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The deterministic weights ``export_mlp(seed=...)`` uses (for reference outputs)."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((784, 128)) * 0.05).astype(np.float32)
    b1 = (rng.standard_normal(128) * 0.01).astype(np.float32)
    w2 = (rng.standard_normal((128, 10)) * 0.1).astype(np.float32)
    b2 = (rng.standard_normal(10) * 0.01).astype(np.float32)
    return w1, b1, w2, b2


def mlp_reference(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """The MLP's scores computed with numpy (softmax(relu(x·w1+b1)·w2+b2))."""
    w1, b1, w2, b2 = mlp_weights(seed)
    hidden = np.maximum(images.astype(np.float32) @ w1 + b1, 0)
    logits = hidden @ w2 + b2
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def export_mlp(path: str, seed: int = 0) -> str:
    """784-128-10 relu/softmax MLP. serving_default: "images" float [-1,784] -> "scores"
    float [-1,10]; "classify": tf.Example feature "images" (784 floats) -> "classes"
    (b"0".."9") and "scores"."""
    w1, b1, w2, b2 = mlp_weights(seed)

    def build() -> dict[str, Any]:
        v1 = tf.compat.v1
        weights = [v1.Variable(value, name=name) for value, name in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]

        def network(images: Any) -> Any:
            hidden = tf.nn.relu(tf.matmul(images, weights[0]) + weights[1])
            return tf.nn.softmax(tf.matmul(hidden, weights[2]) + weights[3])

        images = v1.placeholder(tf.float32, [None, 784], name="images")
        scores = tf.identity(network(images), name="scores")
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        parsed = v1.parse_example(serialized, {"images": v1.FixedLenFeature([784], tf.float32)})
        example_scores = tf.identity(network(parsed["images"]), name="example_scores")
        classes = tf.tile(tf.constant([MLP_LABELS]), [tf.shape(serialized)[0], 1], name="classes")
        return {
            "serving_default": _signature({"images": images}, {"scores": scores}, PREDICT),
            "classify": _signature({"inputs": serialized}, {"classes": classes, "scores": example_scores}, CLASSIFY),
        }

    _save_v1(path, build)
    return path


def _sleep_transformation(microseconds: Any) -> Any:
    # tf.data's test-only sleep transformation (SleepDataset op); not in the public API.
    from tensorflow.python.data.experimental.ops import testing

    return testing.sleep(microseconds)


class _SlowModel(tf.Module):
    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = tf.constant(float(delay_s), tf.float64)

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="x")])
    def serve(self, x: Any) -> dict[str, Any]:
        # Wait on the clock inside the graph (no Python ops survive a SavedModel); a
        # sleep dataset keeps the CPU idle instead of spinning.
        deadline = tf.timestamp() + self.delay_s
        remaining_us = tf.cast(tf.maximum(deadline - tf.timestamp(), 0.0) * 1e6, tf.int64)
        # take(1): get_single_element's second GetNext must not sleep again.
        slept = tf.data.Dataset.from_tensors(x).apply(_sleep_transformation(remaining_us)).take(1)
        x = slept.get_single_element()
        return {"y": x * 0.5 + 2.0}


def export_slow_model(path: str, delay_s: float) -> str:
    """serving_default "x" (float, any shape) -> "y" = 0.5·x + 2, taking ``delay_s`` per call."""
    module = _SlowModel(delay_s)
    with _quiet():
        tf.saved_model.save(module, path, signatures={"serving_default": module.serve.get_concrete_function()})
    return path


class _StringModel(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text: Any) -> dict[str, Any]:
        return {
            "upper": tf.strings.upper(text),
            "length": tf.strings.length(text),
            "echo_bytes": tf.identity(text),
        }


def export_string_model(path: str) -> str:
    """TF2 string model. serving_default: "text" string [-1] -> "upper" (string),
    "length" (int32, bytes per element) and "echo_bytes" (the input, for REST b64)."""
    module = _StringModel()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve.get_concrete_function()})
    return path


def _as_prediction_log(request: Any) -> prediction_log_pb2.PredictionLog:
    if isinstance(request, prediction_log_pb2.PredictionLog):
        return request
    if isinstance(request, bytes):
        return prediction_log_pb2.PredictionLog.FromString(request)
    record = prediction_log_pb2.PredictionLog()
    if isinstance(request, predict_pb2.PredictRequest):
        record.predict_log.request.CopyFrom(request)
    elif isinstance(request, classification_pb2.ClassificationRequest):
        record.classify_log.request.CopyFrom(request)
    elif isinstance(request, regression_pb2.RegressionRequest):
        record.regress_log.request.CopyFrom(request)
    elif isinstance(request, inference_pb2.MultiInferenceRequest):
        record.multi_inference_log.request.CopyFrom(request)
    else:
        raise TypeError(f"not a PredictionLog or a servable._proto request: {type(request).__name__}")
    return record


def write_warmup_file(export_path: str, requests: Iterable[Any]) -> str:
    """Write ``<export_path>/assets.extra/tf_serving_warmup_requests``; returns its path.

    ``requests``: ``PredictionLog``s, serialized PredictionLogs, or Predict/
    Classification/Regression/MultiInference requests (wrapped in a PredictionLog).
    All protos are servable._proto's.
    """
    folder = os.path.join(export_path, "assets.extra")
    os.makedirs(folder, exist_ok=True)
    file_path = os.path.join(folder, "tf_serving_warmup_requests")
    with tf.io.TFRecordWriter(file_path) as writer:
        for request in requests:
            writer.write(_as_prediction_log(request).SerializeToString())
    return file_path
