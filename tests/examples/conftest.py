"""Session fixtures for the examples: the exported MNIST and image-classifier models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MNIST_STEPS = (20, 300)


@pytest.fixture(scope="session")
def mnist_base_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``<tmp>/mnist`` holding versions 1 (20 steps) and 2 (300 steps), trained on digits."""
    from examples.mnist.train import train_and_export

    base = str(tmp_path_factory.mktemp("mnist_models") / "mnist")
    train_and_export(base, dataset="digits", training_steps=MNIST_STEPS)
    return base


@pytest.fixture(scope="session")
def image_base_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``<tmp>/tiny_classifier/1``: MobileNetV2 alpha 0.35 at 96x96, random weights, top 3."""
    from examples.image_classifier.export import export

    base = tmp_path_factory.mktemp("image_models") / "tiny_classifier"
    export(str(base / "1"), "mobilenet_v2", weights=None, image_size=96, alpha=0.35, top_k=3)
    return str(base)


@pytest.fixture(scope="session")
def jpeg_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A generated 64x48 JPEG (a colour gradient)."""
    import numpy as np
    import tensorflow as tf

    y, x = np.mgrid[0:48, 0:64]
    pixels = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)
    path = tmp_path_factory.mktemp("photos") / "gradient.jpg"
    path.write_bytes(tf.io.encode_jpeg(pixels).numpy())
    return str(path)


def run_example(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <args>`` from the repository root, as the READMEs tell users to."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
