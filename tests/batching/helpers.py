"""Plain numpy servables for the batching tests (no TensorFlow)."""

from __future__ import annotations

import threading
from typing import Sequence

import numpy as np


class AffineServable:
    """``y = 2 * x + 1`` and ``id`` echoed back; records the batch sizes it saw.

    ``gate`` (an Event) makes every call wait until set; ``started`` is set on entry.
    """

    signatures = {"serving_default": object(), "other": object()}

    def __init__(self, gate: threading.Event | None = None, delay: float = 0.0) -> None:
        self.gate = gate
        self.delay = delay
        self.started = threading.Event()
        self.batch_sizes: list[int] = []
        self.seen_inputs: list[dict[str, np.ndarray]] = []
        self.calls = 0
        self._lock = threading.Lock()

    def signature_defs(self) -> dict[str, bytes]:
        return {key: b"" for key in self.signatures}

    def predict(
        self, signature_key: str, inputs: dict[str, np.ndarray], output_filter: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        with self._lock:
            self.calls += 1
            self.batch_sizes.append(int(next(iter(inputs.values())).shape[0]))
            self.seen_inputs.append(inputs)
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.delay:
            threading.Event().wait(self.delay)
        outputs = {"y": 2 * inputs["x"] + 1}
        if "id" in inputs:
            outputs["id"] = inputs["id"].copy()
        if output_filter:
            outputs = {name: outputs[name] for name in output_filter}
        return outputs

    def classify(self, signature_key: str, examples: list[bytes]):
        return None, np.zeros((len(examples), 1), np.float32)

    def regress(self, signature_key: str, examples: list[bytes]) -> np.ndarray:
        return np.full(len(examples), 7.0, np.float32)


def request(request_id: int, rows: int, width: int = 2) -> dict[str, np.ndarray]:
    """Rows whose values identify the request and the row."""
    x = np.arange(rows * width, dtype=np.float32).reshape(rows, width) + 1000.0 * request_id
    return {"x": x, "id": np.full(rows, request_id, np.int64)}
