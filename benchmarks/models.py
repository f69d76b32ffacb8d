"""Export the benchmark models and their request payloads (run in a subprocess).

``python -m benchmarks.models OUTDIR [--image-size N]`` writes::

    OUTDIR/half_plus_two/1/      servable.tf.testing_models.export_half_plus_two
    OUTDIR/mnist/1/              servable.tf.testing_models.export_mlp (784-128-10, "images")
    OUTDIR/jpeg_mobilenet/1/     MobileNetV2 (random weights) behind JPEG decode + resize
    OUTDIR/image.jpg             one JPEG (random noise, 320x240) used as the request payload
    OUTDIR/models.json           name -> {path, input, dtype, export_s}

The orchestrator calls this in a child process so it never imports TensorFlow itself
(its threads would compete with the contenders for the 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MOBILENET_FULL_SIZE = 224
MOBILENET_QUICK_SIZE = 96


def export_jpeg_mobilenet(path: str, image_size: int = MOBILENET_FULL_SIZE, seed: int = 0) -> str:
    """MobileNetV2 (weights=None, seeded) taking JPEG bytes.

    serving_default: ``image_bytes`` string[-1] -> ``classes`` int32[-1,5], ``scores`` float[-1,5];
    decode and resize to ``image_size`` happen in the graph (``tf.map_fn``).
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    net = keras.applications.MobileNetV2(weights=None, input_shape=(image_size, image_size, 3))

    class JpegClassifier(tf.Module):
        def __init__(self, model: keras.Model) -> None:
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
            def decode(data: tf.Tensor) -> tf.Tensor:
                image = tf.io.decode_jpeg(data, channels=3)
                return tf.image.resize(image, [image_size, image_size])

            images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32))
            probs = self.model(keras.applications.mobilenet_v2.preprocess_input(images), training=False)
            top = tf.math.top_k(probs, 5)
            return {"classes": top.indices, "scores": top.values}

    module = JpegClassifier(net)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def write_jpeg(path: str, width: int = 320, height: int = 240, seed: int = 0) -> str:
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Path(path).write_bytes(tf.io.encode_jpeg(pixels, quality=90).numpy())
    return path


def export_all(outdir: Path, image_size: int) -> dict[str, dict]:
    from servable.tf.testing_models import export_half_plus_two, export_mlp

    outdir.mkdir(parents=True, exist_ok=True)
    plan = {
        "half_plus_two": (lambda p: export_half_plus_two(p), "x", "float32"),
        "mnist": (lambda p: export_mlp(p), "images", "float32"),
        "jpeg_mobilenet": (lambda p: export_jpeg_mobilenet(p, image_size), "image_bytes", "string"),
    }
    info: dict[str, dict] = {}
    for name, (export, input_name, dtype) in plan.items():
        path = outdir / name / "1"
        started = time.monotonic()
        if not (path / "saved_model.pb").exists():
            export(str(path))
        info[name] = {"path": str(path), "base_path": str(path.parent), "input": input_name, "dtype": dtype,
                      "export_s": round(time.monotonic() - started, 3)}
    info["jpeg_mobilenet"]["image_size"] = image_size
    info["image"] = {"path": write_jpeg(str(outdir / "image.jpg"))}
    (outdir / "models.json").write_text(json.dumps(info, indent=2))
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--image-size", type=int, default=MOBILENET_FULL_SIZE)
    args = parser.parse_args(argv)
    print(json.dumps(export_all(args.outdir, args.image_size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
