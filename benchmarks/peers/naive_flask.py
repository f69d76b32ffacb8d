"""The naive REST server, written the way a user would: Flask + tf.saved_model.load.

``python benchmarks/peers/naive_flask.py PORT NAME=SAVED_MODEL_DIR [...]`` (run with the
``naive`` venv: Flask pinned, TensorFlow shared from the main venv). Serves TF Serving's row
format on ``POST /v1/models/<name>:predict`` (``{"instances": [...]}`` -> ``{"predictions":
[...]}``; ``{"b64": ...}`` strings for JPEG models) and ``GET /v1/models/<name>``; it loads
every model before it listens.
Flask's built-in threaded Werkzeug server, stdlib json: no tuning on purpose.
"""

from __future__ import annotations

import base64
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from flask import Flask, jsonify, request  # noqa: E402

port = int(sys.argv[1])
models = {}
for arg in sys.argv[2:]:
    name, path = arg.split("=", 1)
    signature = tf.saved_model.load(path).signatures["serving_default"]
    models[name] = (signature, list(signature.structured_input_signature[1])[0])
app = Flask(__name__)


@app.get("/v1/models/<name>")
def status(name):
    if name not in models:
        return jsonify({"error": "not found"}), 404
    return jsonify({"model_version_status": [{"version": "1", "state": "AVAILABLE"}]})


@app.post("/v1/models/<name>:predict")
def predict(name):
    signature, input_name = models[name]
    instances = request.get_json()["instances"]
    if instances and isinstance(instances[0], dict) and "b64" in instances[0]:
        batch = tf.constant([base64.b64decode(i["b64"]) for i in instances])
    else:
        batch = tf.constant(np.asarray(instances, dtype=np.float32))
    outputs = signature(**{input_name: batch})
    if len(outputs) == 1:
        predictions = next(iter(outputs.values())).numpy().tolist()
    else:
        columns = {k: v.numpy().tolist() for k, v in outputs.items()}
        predictions = [dict(zip(columns, row)) for row in zip(*columns.values())]
    return jsonify({"predictions": predictions})


if __name__ == "__main__":
    print(f"LISTENING {port}", flush=True)
    app.run(host="127.0.0.1", port=port, threaded=True)
