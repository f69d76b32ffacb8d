"""Train an MNIST classifier and export it as numbered SavedModel versions.

The TensorFlow 2 counterpart of TF Serving's ``mnist_saved_model.py``::

    python -m examples.mnist.train --dataset digits --training_steps 50,400 /tmp/models/mnist

trains one model and exports a version after each listed step count (``1`` after 50
steps, ``2`` after 400), so the two versions really differ. Every version has two
signatures:

- ``predict_images`` (``tensorflow/serving/predict``): ``images`` float32 ``[-1, 784]`` ->
  ``scores`` float32 ``[-1, 10]`` (softmax).
- ``serving_default`` (``tensorflow/serving/classify``): ``inputs`` serialized
  ``tf.Example`` strings with a float feature ``x`` of 784 values -> ``classes`` (the
  digits ``"0"``..``"9"`` as strings, best first) and ``scores`` float32 ``[-1, 10]``.

TensorFlow 2's ``tf.saved_model.save`` marks every signature as a predict signature; the
classify method name is written into ``saved_model.pb`` afterwards (``set_method_name``),
which is exactly what the TF1 ``classification_signature_def`` helper produced.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from typing import Sequence

import numpy as np
import tensorflow as tf

from examples.mnist import data

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
NUM_CLASSES = 10


def build_model(kind: str = "softmax") -> tf.keras.Model:
    """A softmax regression (TF Serving's tutorial model) or a small CNN; outputs logits."""
    import keras

    if kind == "softmax":
        layers = [keras.layers.Dense(NUM_CLASSES)]
    elif kind == "cnn":
        layers = [
            keras.layers.Reshape((28, 28, 1)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(NUM_CLASSES),
        ]
    else:
        raise ValueError(f"unknown model kind {kind!r}; expected softmax or cnn")
    return keras.Sequential([keras.Input((data.IMAGE_PIXELS,)), *layers])


class Trainer:
    """Mini-batch Adam on sparse softmax cross-entropy; ``run(steps)`` continues training."""

    def __init__(self, model: tf.keras.Model, images: np.ndarray, labels: np.ndarray,
                 batch_size: int = 64, learning_rate: float = 0.01, seed: int = 0) -> None:
        import keras

        self.model = model
        self._optimizer = keras.optimizers.Adam(learning_rate)
        self._images = tf.constant(images, tf.float32)
        self._labels = tf.constant(labels, tf.int64)
        self._batch_size = batch_size
        self._rng = np.random.default_rng(seed)
        self.steps_done = 0

    @tf.function
    def _step(self, images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        grads = tape.gradient(loss, self.model.trainable_variables)
        self._optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return loss

    def run(self, steps: int) -> float:
        """Train ``steps`` more mini-batches; returns the last loss."""
        loss = float("nan")
        count = int(self._images.shape[0])
        for _ in range(steps):
            index = self._rng.integers(0, count, size=self._batch_size)
            loss = float(self._step(tf.gather(self._images, index), tf.gather(self._labels, index)))
        self.steps_done += steps
        return loss


class MnistModule(tf.Module):
    """What gets saved: the trained model behind the two serving signatures."""

    def __init__(self, model: tf.keras.Model) -> None:
        super().__init__()
        self.model = model
        self.class_names = tf.constant([str(i) for i in range(NUM_CLASSES)])

    @tf.function(input_signature=[tf.TensorSpec([None, data.IMAGE_PIXELS], tf.float32, name="images")])
    def predict_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"scores": tf.nn.softmax(self.model(images, training=False))}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        features = tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([data.IMAGE_PIXELS], tf.float32)})
        probabilities = tf.nn.softmax(self.model(features["x"], training=False))
        scores, indices = tf.math.top_k(probabilities, NUM_CLASSES)
        return {"classes": tf.gather(self.class_names, indices), "scores": scores}


def set_method_name(export_dir: str, signature_key: str, method_name: str) -> None:
    """Rewrite one signature's ``method_name`` in ``export_dir/saved_model.pb``."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if signature_key in meta_graph.signature_def:
            meta_graph.signature_def[signature_key].method_name = method_name
    with open(path, "wb") as f:
        f.write(saved_model.SerializeToString())


def export(model: tf.keras.Model, export_dir: str) -> None:
    """Save ``model`` as one SavedModel version folder (written to a temp name, then renamed).

    The rename matters when the server is already watching the base path: it must never
    see a half-written version.
    """
    module = MnistModule(model)
    parent = os.path.dirname(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".incoming-", dir=parent)
    try:
        tf.saved_model.save(module, staging, signatures={
            "predict_images": module.predict_images.get_concrete_function(),
            "serving_default": module.classify.get_concrete_function(),
        })
        set_method_name(staging, "serving_default", CLASSIFY_METHOD)
        if os.path.exists(export_dir):
            shutil.rmtree(export_dir)
        os.rename(staging, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def train_and_export(base_path: str, dataset: str = "digits", training_steps: Sequence[int] = (50, 400),
                     model_kind: str = "softmax", first_version: int = 1, seed: int = 0) -> list[str]:
    """Train once, exporting version ``first_version + i`` after ``training_steps[i]`` total steps.

    Returns the version folders written. ``training_steps`` must be increasing.
    """
    if list(training_steps) != sorted(set(training_steps)) or not training_steps or training_steps[0] < 0:
        raise ValueError(f"training_steps must be increasing non-negative numbers, got {list(training_steps)}")
    tf.keras.utils.set_random_seed(seed)
    dataset_split = data.load(dataset)
    trainer = Trainer(build_model(model_kind), dataset_split.train_images, dataset_split.train_labels, seed=seed)
    written = []
    for offset, steps in enumerate(training_steps):
        loss = trainer.run(steps - trainer.steps_done)
        version_dir = os.path.join(base_path, str(first_version + offset))
        export(trainer.model, version_dir)
        print(f"exported version {first_version + offset} after {steps} steps (loss {loss:.3f}) to {version_dir}")
        written.append(version_dir)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_path", help="model base path; versions are written to <base_path>/<n>")
    parser.add_argument("--dataset", choices=data.DATASETS, default="digits",
                        help="digits: scikit-learn's bundled digits (offline); mnist: real MNIST (downloads)")
    parser.add_argument("--training_steps", default="50,400",
                        help="comma-separated increasing step counts, one exported version each")
    parser.add_argument("--model", choices=("softmax", "cnn"), default="softmax")
    parser.add_argument("--model_version", type=int, default=1, help="number of the first exported version")
    args = parser.parse_args(argv)
    steps = [int(s) for s in args.training_steps.split(",") if s.strip()]
    train_and_export(args.base_path, args.dataset, steps, args.model, args.model_version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
