"""The built-in demo model served when the server starts with no model flags.

half_plus_two (y = 0.5 * x + 2, TF Serving's canonical test model) is exported on first
start into a cache folder, then served like any other model. The export goes to a
temporary name and is renamed into place, so an interrupted first start never leaves a
half-written version behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile

DEMO_MODEL_NAME = "half_plus_two"


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "servable", "demo")


def ensure_demo_model(root: str | None = None) -> str:
    """Return the demo model's base path, exporting version 1 there if missing."""
    base_path = os.path.join(root or cache_dir(), DEMO_MODEL_NAME)
    version_dir = os.path.join(base_path, "1")
    if os.path.exists(os.path.join(version_dir, "saved_model.pb")):
        return base_path
    os.makedirs(base_path, exist_ok=True)
    from servable.tf.testing_models import export_half_plus_two

    staging = tempfile.mkdtemp(prefix=".incoming-", dir=base_path)
    try:
        target = os.path.join(staging, "model")
        export_half_plus_two(target)
        if os.path.exists(version_dir):
            shutil.rmtree(version_dir)
        os.rename(target, version_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return base_path


def usage_hint(grpc_port: int, rest_port: int) -> str:
    return (
        f"Serving the demo model '{DEMO_MODEL_NAME}' (y = 0.5 * x + 2).\n"
        f"  REST: curl -d '{{\"instances\": [1.0, 2.0, 5.0]}}' "
        f"http://localhost:{rest_port}/v1/models/{DEMO_MODEL_NAME}:predict\n"
        f"        -> {{\"predictions\":[2.5,3.0,4.5]}}\n"
        f"  gRPC: localhost:{grpc_port}, tensorflow.serving.PredictionService/Predict, "
        f"model_spec.name='{DEMO_MODEL_NAME}', input 'x'\n"
        "Serve your own model with --model_name=NAME --model_base_path=/abs/path/NAME "
        "(version folders 1/, 2/, ... holding SavedModels), or --model_config_file=FILE."
    )
