"""Seldon MLServer runtime wrapping a benchmark SavedModel (V2 inference protocol).

Used by ``mlserver start <folder>`` from the ``mlserver`` venv; the orchestrator writes
``settings.json`` (127.0.0.1, ``parallel_workers: 0`` because the default worker pool dies
under uvloop 0.23, see peers.md) and one ``model-settings.json`` per model with
``"implementation": "mlserver_runtime.TFSavedModel"``, ``parameters.uri`` = the version
folder and, for the batching variant, ``max_batch_size`` / ``max_batch_time`` (MLServer's
adaptive batching). ``PYTHONPATH`` points at this folder so the class imports.
The runtime is the documented pattern: ``NumpyCodec`` in, the signature call, ``NumpyCodec`` out.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402
from mlserver import MLModel  # noqa: E402
from mlserver.codecs import NumpyCodec  # noqa: E402
from mlserver.types import InferenceRequest, InferenceResponse  # noqa: E402


class TFSavedModel(MLModel):
    async def load(self) -> bool:
        self._signature = tf.saved_model.load(self.settings.parameters.uri).signatures["serving_default"]
        self._input = list(self._signature.structured_input_signature[1])[0]
        self.ready = True
        return self.ready

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        array = NumpyCodec.decode_input(payload.inputs[0])
        outputs = self._signature(**{self._input: tf.constant(array)})
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(name, value.numpy()) for name, value in outputs.items()],
        )
