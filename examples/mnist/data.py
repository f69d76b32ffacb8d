"""The MNIST-shaped data both ``train.py`` and ``client.py`` use.

Two sources, same shapes (images float32 ``[n, 784]`` in 0..1, labels int64 ``[n]``):

- ``mnist``: the real MNIST set through ``keras.datasets`` (downloads once; needs network).
- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, no network), each pixel
  blown up 3x3 to 24x24 and padded to 28x28 so the model has MNIST's input shape. The
  split is a fixed stratified 80/20, so the client sees exactly the images training did not.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

DATASETS = ("digits", "mnist")
IMAGE_PIXELS = 28 * 28


class Dataset(NamedTuple):
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def load(name: str = "digits") -> Dataset:
    """Return the train/test split of ``name`` (one of ``DATASETS``); raises ValueError otherwise."""
    if name == "digits":
        return _load_digits()
    if name == "mnist":
        return _load_mnist()
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def digits_to_mnist(images_8x8: np.ndarray) -> np.ndarray:
    """Map sklearn digits (``[n, 64]``, values 0..16) onto MNIST's ``[n, 784]`` 0..1 layout."""
    images = np.asarray(images_8x8, dtype=np.float32).reshape(-1, 8, 8) / 16.0
    big = np.kron(images, np.ones((1, 3, 3), dtype=np.float32))  # [n, 24, 24]
    padded = np.pad(big, ((0, 0), (2, 2), (2, 2)))
    return padded.reshape(-1, IMAGE_PIXELS)


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return Dataset(
        digits_to_mnist(x_train), y_train.astype(np.int64), digits_to_mnist(x_test), y_test.astype(np.int64)
    )


def _load_mnist() -> Dataset:
    import keras

    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()

    def flat(images: np.ndarray) -> np.ndarray:
        return images.reshape(-1, IMAGE_PIXELS).astype(np.float32) / 255.0

    return Dataset(flat(x_train), y_train.astype(np.int64), flat(x_test), y_test.astype(np.int64))
