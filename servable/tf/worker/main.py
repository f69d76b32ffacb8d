"""The model worker process: loads SavedModels and runs their signatures for the server.

Started by ``servable.tf.worker.client.ModelProcess`` as ``python -m
servable.tf.worker.main --control-fd N [--intra-op K --inter-op K --log-level L]``, never
by hand. Why a process: TensorFlow's Python dispatch (``tf.constant``, ``_call_flat``)
holds the GIL for hundreds of microseconds per call; here it holds this process's GIL,
not the one the server's event loop and gRPC need (docs/performance.md, "A model worker
process").

Protocol, over the control socket (a ``socketpair`` end inherited as fd N):
- the worker sends ``b"ready"`` once TensorFlow is imported and its thread pools are set;
- each later message from the server carries one socket fd (``socket.send_fds``): a new
  ``wire.Channel``, served on a thread of its own until the server closes it. On each
  channel, requests ``(op, args)`` are answered in order with ``("ok", result)`` or
  ``("err", code, message)``, codes being ``servable.core.status.Code`` values.

Ops: ``load(model_id, path, tags, method_name_check, single_threaded_executor)``,
``unload(model_id)``, ``predict(model_id, key, inputs, output_filter)``,
``classify(model_id, key, examples)``, ``regress(model_id, key, examples)``, ``ping()``
(``{"pid", "models"}``).

The worker exits when its stdin reaches end of file: the server closed it, or died, so
no orphan keeps a model's memory.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import socket
import sys
import threading
from typing import Any, Callable

log = logging.getLogger("servable.tf.worker")


class Worker:
    """The worker's models and the ops that act on them. Thread-safe."""

    def __init__(self) -> None:
        self._models: dict[int, Any] = {}
        self._lock = threading.Lock()
        self.ops: dict[str, Callable[..., Any]] = {
            "load": self.load, "unload": self.unload, "predict": self.predict,
            "classify": self.classify, "regress": self.regress, "ping": self.ping,
        }

    def load(self, model_id: int, path: str, tags: tuple[str, ...], method_name_check: bool,
             single_threaded_executor: bool) -> None:
        from servable.tf.saved_model import open_saved_model
        from servable.tf.signatures import read_signatures

        model = open_saved_model(path, tags, read_signatures(path, tags), method_name_check=method_name_check,
                                 single_threaded_executor=single_threaded_executor)
        with self._lock:
            self._models[model_id] = model

    def unload(self, model_id: int) -> None:
        with self._lock:
            model = self._models.pop(model_id, None)
        if model is not None:
            model.close()
            del model
            gc.collect()

    def _model(self, model_id: int) -> Any:
        model = self._models.get(model_id)
        if model is None:
            from servable.core.status import unavailable

            raise unavailable(f"model {model_id} is not loaded in the model worker process")
        return model

    def predict(self, model_id: int, key: str, inputs: dict, output_filter: tuple[str, ...]) -> dict:
        return self._model(model_id).predict(key, inputs, output_filter)

    def classify(self, model_id: int, key: str, examples: list[bytes]) -> tuple:
        return self._model(model_id).classify(key, examples)

    def regress(self, model_id: int, key: str, examples: list[bytes]) -> Any:
        return self._model(model_id).regress(key, examples)

    def ping(self) -> dict:
        with self._lock:
            return {"pid": os.getpid(), "models": len(self._models)}


def serve_channel(worker: Worker, sock: socket.socket) -> None:
    """Answer one channel's requests in order until the server closes it (own thread)."""
    from servable.core.status import Code, ServingError
    from servable.tf.worker.wire import Channel, ChannelClosed

    channel = Channel(sock)
    try:
        while True:
            try:
                op, args = channel.recv()
            except ChannelClosed:
                return
            try:
                reply: tuple = ("ok", worker.ops[op](*args))
            except ServingError as error:
                reply = ("err", int(error.code), error.message)
            except Exception as error:  # noqa: BLE001 - the server must learn every outcome
                log.exception("model worker op %s failed", op)
                reply = ("err", int(Code.INTERNAL), f"{type(error).__name__}: {error}")
            channel.send(reply)
    except ChannelClosed:
        return
    finally:
        channel.close()


def _exit_when_stdin_closes() -> None:
    try:
        while os.read(0, 65536):
            pass
    finally:
        logging.shutdown()
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="servable's model worker process (started by the server)")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--intra-op", type=int, default=0)
    parser.add_argument("--inter-op", type=int, default=0)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s model-worker[%(process)d] %(levelname)s %(name)s: %(message)s")
    threading.Thread(target=_exit_when_stdin_closes, name="stdin-watch", daemon=True).start()
    control = socket.socket(fileno=args.control_fd)

    from servable.tf.loaders import configure_threading

    configure_threading(args.intra_op, args.inter_op)
    import servable.tf.saved_model  # noqa: F401 - TensorFlow's import, paid before "ready"

    worker = Worker()
    control.sendall(b"ready")
    while True:
        try:
            _message, fds, _flags, _address = socket.recv_fds(control, 16, 4)
        except OSError:
            break
        if not _message and not fds:
            break  # the server closed the control socket
        for fd in fds:
            threading.Thread(target=serve_channel, args=(worker, socket.socket(fileno=fd)),
                             name="model-channel", daemon=True).start()
    logging.shutdown()
    os._exit(0)  # not sys.exit: the daemon threads still block in reads (stdin, channels)


if __name__ == "__main__":
    sys.exit(main())
