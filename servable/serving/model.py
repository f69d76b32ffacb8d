"""The protocol every servable model implements, whatever produced it.

``SavedModelServable`` (servable/tf) implements it for TensorFlow; a Python class with
the same methods can be served too. The serving layer depends only on this protocol,
so batching or other wrappers can stand between it and the model.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class ModelServable(Protocol):
    """What the request path calls on a loaded version.

    Every method may be called concurrently from many worker threads, never from an
    event loop thread. Errors a client should see are raised as ``ServingError``.
    """

    signatures: Mapping[str, Any]  # key -> servable.tf.signatures.SignatureInfo

    def signature_defs(self) -> dict[str, bytes]:
        """Serialized ``tensorflow.SignatureDef`` per signature key, as stored on disk."""

    def predict(
        self, signature_key: str, inputs: dict[str, np.ndarray], output_filter: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        """Run one signature; return the requested outputs (all when the filter is empty)."""

    def classify(self, signature_key: str, examples: list[bytes]) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Classes ([n, k] bytes, or None) and scores ([n, k] float32, or None)."""

    def regress(self, signature_key: str, examples: list[bytes]) -> np.ndarray:
        """One float32 value per example."""
