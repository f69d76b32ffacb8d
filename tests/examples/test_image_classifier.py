"""The image-classifier walk-through: the JPEG-bytes signature and the gRPC client."""

from __future__ import annotations

import json
import os

import numpy as np

from tests.examples.conftest import run_example


def test_export_decodes_jpeg_bytes_in_the_graph(image_base_path: str, jpeg_path: str) -> None:
    import tensorflow as tf

    model = tf.saved_model.load(os.path.join(image_base_path, "1"))
    serve = model.signatures["serving_default"]
    assert set(serve.structured_input_signature[1]) == {"image_bytes"}
    with open(jpeg_path, "rb") as f:
        photo = f.read()
    answer = serve(image_bytes=tf.constant([photo, photo]))
    classes, scores = answer["classes"].numpy(), answer["scores"].numpy()
    assert classes.shape == scores.shape == (2, 3)
    assert all(label.startswith(b"class_") for label in classes.reshape(-1))
    assert scores.dtype == np.float32 and np.all(np.diff(scores, axis=1) <= 0)
    np.testing.assert_array_equal(scores[0], scores[1])  # deterministic
    again = serve(image_bytes=tf.constant([photo]))["scores"].numpy()
    np.testing.assert_allclose(again[0], scores[0], rtol=1e-6)


def test_client_prints_top_k_json(image_base_path: str, jpeg_path: str) -> None:
    from tests.serverutil import model, running_server

    with running_server([model("tiny_classifier", image_base_path)]) as server:
        result = run_example("examples.image_classifier.client", f"--server=127.0.0.1:{server.grpc_port}",
                             "--model_name=tiny_classifier", jpeg_path)
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    assert answer["model_name"] == "tiny_classifier" and answer["model_version"] == 1
    [prediction] = answer["predictions"]
    assert prediction["file"] == "gradient.jpg"
    assert len(prediction["classes"]) == 3
    assert all(c["label"].startswith("class_") and 0.0 <= c["score"] <= 1.0 for c in prediction["classes"])


def test_client_reports_an_unreachable_server(jpeg_path: str) -> None:
    from tests.conftest import free_port

    result = run_example("examples.image_classifier.client", f"--server=127.0.0.1:{free_port()}", jpeg_path)
    assert result.returncode == 1
    assert json.loads(result.stderr.strip().splitlines()[-1])["code"] == "UNAVAILABLE"
