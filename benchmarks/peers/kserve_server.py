"""KServe's Python model server (``kserve`` from PyPI) wrapping the benchmark SavedModels.

``<kserve venv>/bin/python benchmarks/peers/kserve_server.py HTTP_PORT GRPC_PORT NAME=DIR [NAME=DIR ...]``

One ``kserve.Model`` per SavedModel, written as KServe's docs show (a synchronous
``predict`` that calls the ``serving_default`` signature), serving V1 ``:predict`` (TF
Serving's row format, ``{"b64": ...}`` strings) and V2 ``/infer`` over REST and gRPC.
KServe hard-codes ``0.0.0.0`` / ``[::]``; two patches below make it bind 127.0.0.1 only
(``uvicorn.Config`` host and the ``add_insecure_port`` address). Everything else is KServe's
defaults (one process, latency logging on).
"""

from __future__ import annotations

import base64
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HTTP_PORT, GRPC_PORT = int(sys.argv[1]), int(sys.argv[2])
MODELS = dict(arg.split("=", 1) for arg in sys.argv[3:])
sys.argv = sys.argv[:1]  # kserve parses sys.argv when imported

import grpc.aio  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import uvicorn  # noqa: E402

_config_init = uvicorn.Config.__init__


def _loopback_config(self, *args, **kwargs):  # type: ignore[no-untyped-def]
    kwargs["host"] = "127.0.0.1"
    _config_init(self, *args, **kwargs)


uvicorn.Config.__init__ = _loopback_config

import kserve  # noqa: E402
import kserve.protocol.grpc.server as kserve_grpc_server  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse  # noqa: E402

_aio_server = grpc.aio.server


def _loopback_aio_server(*args, **kwargs):  # type: ignore[no-untyped-def]
    server = _aio_server(*args, **kwargs)
    add_port = server.add_insecure_port
    server.add_insecure_port = lambda address: add_port("127.0.0.1:" + address.rsplit(":", 1)[1])
    return server


kserve_grpc_server.aio.server = _loopback_aio_server


class SavedModel(kserve.Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.signature = None
        self.input_name = ""
        self.load()

    def load(self) -> bool:
        self.signature = tf.saved_model.load(self.path).signatures["serving_default"]
        self.input_name = list(self.signature.structured_input_signature[1])[0]
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None, response_headers=None):  # type: ignore[no-untyped-def]
        if isinstance(payload, InferRequest):
            array = payload.inputs[0].as_numpy()
            outputs = self.signature(**{self.input_name: tf.constant(array)})
            infer_outputs = []
            for name, value in outputs.items():
                value = value.numpy()
                output = InferOutput(name=name, shape=list(value.shape), datatype="FP32" if value.dtype == np.float32 else "INT32")
                output.set_data_from_numpy(value, binary_data=False)
                infer_outputs.append(output)
            return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=infer_outputs)
        instances = payload["instances"]
        if instances and isinstance(instances[0], dict) and "b64" in instances[0]:
            batch = tf.constant([base64.b64decode(i["b64"]) for i in instances])
        else:
            batch = tf.constant(np.asarray(instances, dtype=np.float32))
        outputs = self.signature(**{self.input_name: batch})
        if len(outputs) == 1:
            return {"predictions": next(iter(outputs.values())).numpy().tolist()}
        columns = {k: v.numpy().tolist() for k, v in outputs.items()}
        return {"predictions": [dict(zip(columns, row)) for row in zip(*columns.values())]}


if __name__ == "__main__":
    models = [SavedModel(name, path) for name, path in MODELS.items()]
    kserve.ModelServer(http_port=HTTP_PORT, grpc_port=GRPC_PORT).start(models)
