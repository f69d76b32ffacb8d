"""The MLP run in a worker process: what moving TensorFlow out of the server process buys.

Two halves in one file:

- ``python benchmarks/peers/worker_process_model.py SAVEDMODEL_DIR`` is the worker: it
  loads the SavedModel and answers length-prefixed float32 ``[n, 784]`` arrays on stdin
  with the ``scores`` array on stdout, one at a time.
- As a version folder's ``servable.py`` (``model_platform: "python"``, with
  ``SAVEDMODEL_DIR`` in the environment variable ``WORKER_MODEL``), it is a Python model
  that starts the worker at load and forwards each call (a whole batch, when batching
  is on) over the pipes, under a lock.

Used by ``benchmarks/grpc_modes.py`` (variant ``threads+batching+worker-process model``)
to compare against the same model called in-process; issue 5 asks to choose between
thread pools and worker processes by measurement (see docs/performance.md).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading

import numpy as np

_HEADER = struct.Struct("<I")


def _read_exactly(stream, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise EOFError("worker pipe closed")
        data += chunk
    return bytes(data)


def worker_main(path: str) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    signature = tf.saved_model.load(path).signatures["serving_default"]
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    sink.write(b"RDY!")
    sink.flush()
    while True:
        head = source.read(_HEADER.size)
        if not head:
            return
        images = np.frombuffer(_read_exactly(source, _HEADER.unpack(head)[0]), np.float32).reshape(-1, 784)
        scores = signature(images=tf.constant(images))["scores"].numpy().tobytes()
        sink.write(_HEADER.pack(len(scores)) + scores)
        sink.flush()


if __name__ == "__main__":
    worker_main(sys.argv[1])
else:
    from servable.python_model import PythonModel, tensor

    class WorkerProcessModel(PythonModel):
        inputs = {"images": tensor("float32", [-1, 784])}
        outputs = {"scores": tensor("float32", [-1, 10])}

        def __init__(self, path: str) -> None:
            super().__init__(path)
            self._worker = subprocess.Popen([sys.executable, __file__, os.environ["WORKER_MODEL"]],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
            if _read_exactly(self._worker.stdout, 4) != b"RDY!":
                raise RuntimeError("worker did not start")
            self._lock = threading.Lock()

        def run(self, inputs):
            images = np.ascontiguousarray(inputs["images"], np.float32).tobytes()
            with self._lock:
                self._worker.stdin.write(_HEADER.pack(len(images)) + images)
                size = _HEADER.unpack(_read_exactly(self._worker.stdout, _HEADER.size))[0]
                scores = _read_exactly(self._worker.stdout, size)
            return {"scores": np.frombuffer(scores, np.float32).reshape(-1, 10)}

        def close(self) -> None:
            self._worker.kill()
            self._worker.wait()

    def load(path: str) -> WorkerProcessModel:
        return WorkerProcessModel(path)
