"""Export a Keras ImageNet application behind a signature that takes encoded image bytes.

    python -m examples.image_classifier.export --model inception_v3 --weights imagenet /tmp/models/inception/1
    python -m examples.image_classifier.export --model mobilenet_v2 --alpha 0.35 --image_size 96 --weights none /tmp/models/tiny/1

The ``serving_default`` signature (``tensorflow/serving/predict``):

- input ``image_bytes``: tf.string ``[-1]``, each a whole JPEG (PNG, GIF and BMP work too);
  decoding, resizing to the network's square input and the application's own
  ``preprocess_input`` all run inside the graph, so clients send files untouched.
- outputs ``classes``: tf.string ``[-1, k]`` class names, best first; ``scores``: float32
  ``[-1, k]`` softmax probabilities; ``class_ids``: int32 ``[-1, k]``.

Class names: ImageNet's (Keras's ``imagenet_class_index.json``, downloaded once) with
``--weights imagenet``, a ``--labels`` file (one name per line) when given, otherwise
``class_0`` .. ``class_999``. Bytes that are not an image make the model raise
``InvalidArgumentError``, which the server answers with INVALID_ARGUMENT.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Sequence

import tensorflow as tf

CLASS_INDEX_URL = "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json"
NUM_CLASSES = 1000


@dataclass(frozen=True)
class Application:
    """How to build one Keras application and preprocess its input."""

    builder: str  # attribute of keras.applications
    module: str  # keras.applications submodule holding preprocess_input
    default_size: int


APPLICATIONS = {
    "inception_v3": Application("InceptionV3", "inception_v3", 299),
    "mobilenet_v2": Application("MobileNetV2", "mobilenet_v2", 224),
}


def build_model(name: str = "inception_v3", weights: str | None = "imagenet", image_size: int | None = None,
                alpha: float = 1.0) -> tuple[tf.keras.Model, int]:
    """Return ``(model, image_size)``; ``weights`` None gives random weights (no download)."""
    import keras

    if name not in APPLICATIONS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(APPLICATIONS)}")
    app = APPLICATIONS[name]
    size = image_size or app.default_size
    kwargs = {"alpha": alpha} if name == "mobilenet_v2" else {}
    builder = getattr(keras.applications, app.builder)
    model = builder(weights=weights, input_shape=(size, size, 3), classes=NUM_CLASSES, **kwargs)
    return model, size


def load_class_names(weights: str | None, labels_path: str | None = None) -> list[str]:
    """ImageNet names (downloaded) for imagenet weights, a labels file, or ``class_N`` placeholders."""
    if labels_path:
        with open(labels_path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        if len(names) != NUM_CLASSES:
            raise ValueError(f"{labels_path} has {len(names)} labels, expected {NUM_CLASSES}")
        return names
    if weights == "imagenet":
        import keras

        path = keras.utils.get_file("imagenet_class_index.json", CLASS_INDEX_URL, cache_subdir="models")
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
        return [index[str(i)][1] for i in range(NUM_CLASSES)]
    return [f"class_{i}" for i in range(NUM_CLASSES)]


class ImageClassifier(tf.Module):
    """The saved object: model + class names + the bytes-in signature."""

    def __init__(self, model: tf.keras.Model, model_name: str, image_size: int, class_names: Sequence[str],
                 top_k: int = 5) -> None:
        super().__init__()
        import importlib

        self.model = model
        self.class_names = tf.constant(list(class_names))
        self._size = image_size
        self._top_k = top_k
        self._preprocess = importlib.import_module(f"keras.applications.{APPLICATIONS[model_name].module}").preprocess_input

    def _decode(self, image_bytes: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), [self._size, self._size])
        return tf.ensure_shape(image, [self._size, self._size, 3])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        images = tf.map_fn(self._decode, image_bytes, fn_output_signature=tf.TensorSpec([self._size, self._size, 3], tf.float32))
        probabilities = self.model(self._preprocess(images), training=False)
        scores, indices = tf.math.top_k(probabilities, self._top_k)
        return {"classes": tf.gather(self.class_names, indices), "scores": scores, "class_ids": indices}


def export(export_dir: str, model_name: str = "inception_v3", weights: str | None = "imagenet",
           image_size: int | None = None, alpha: float = 1.0, top_k: int = 5, labels_path: str | None = None) -> str:
    """Build and save one version folder (temp name, then rename); returns ``export_dir``."""
    tf.keras.utils.set_random_seed(0)
    model, size = build_model(model_name, weights, image_size, alpha)
    module = ImageClassifier(model, model_name, size, load_class_names(weights, labels_path), top_k)
    parent = os.path.dirname(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".incoming-", dir=parent)
    try:
        tf.saved_model.save(module, staging, signatures={"serving_default": module.serve.get_concrete_function()})
        if os.path.exists(export_dir):
            shutil.rmtree(export_dir)
        os.rename(staging, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return export_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a Keras image classifier taking JPEG bytes.")
    parser.add_argument("export_dir", help="the version folder to write, e.g. /tmp/models/inception/1")
    parser.add_argument("--model", choices=sorted(APPLICATIONS), default="inception_v3")
    parser.add_argument("--weights", choices=("imagenet", "none"), default="imagenet",
                        help="imagenet downloads trained weights; none gives random weights (offline)")
    parser.add_argument("--image_size", type=int, default=None, help="square input size (default: the model's own)")
    parser.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width multiplier")
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--labels", default=None, help="text file with 1000 class names, one a line")
    args = parser.parse_args(argv)
    weights = None if args.weights == "none" else args.weights
    export(args.export_dir, args.model, weights, args.image_size, args.alpha, args.top_k, args.labels)
    print(f"exported {args.model} ({args.weights} weights) to {args.export_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
