"""The server's side of the model worker process: start it, lend channels, proxy servables.

``ModelProcess`` is built once per server by ``servable.settings`` when
``--tensorflow_worker_process`` is on, and handed to every SavedModel loader
(``LoaderOptions.model_process``). The first ``load()`` starts the worker (one TensorFlow
import, a few seconds, on that manager load thread); later loads only send the folder.
``close()`` is called once at shutdown, after the manager unloaded every version.

Any thread may call ``load`` or a ``RemoteSavedModel``'s methods at the same time: each
call borrows an idle channel (a new socket pair when none is idle), so the worker runs
concurrent calls on as many of its threads. A call blocks its thread in a socket read,
which releases the GIL.

If the worker dies, every call in flight and every later one raises UNAVAILABLE naming
its exit status; the versions it held stay listed until the next reload or restart,
since their folders are still valid (``docs/performance.md``, "A model worker process").
"""

from __future__ import annotations

import atexit
import itertools
import logging
import socket
import subprocess
import sys
import threading
from typing import Any, Sequence

from servable.core.status import Code, ServingError, unavailable
from servable.tf.worker.wire import Channel, ChannelClosed

log = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0


class ModelProcess:
    """One model worker process and the channels to it; see the module docstring."""

    def __init__(self, *, intra_op: int = 0, inter_op: int = 0, log_level: str = "info") -> None:
        self._argv_options = ["--intra-op", str(intra_op), "--inter-op", str(inter_op), "--log-level", log_level]
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._control: socket.socket | None = None
        self._idle: list[Channel] = []
        self._ids = itertools.count(1)
        self._closed = False
        self._dead_reason = ""

    # -- lifecycle --------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the worker and wait until it has imported TensorFlow (idempotent)."""
        with self._lock:
            if self._closed:
                raise unavailable("the model worker process has been shut down")
            if self._process is not None:
                return
            ours, theirs = socket.socketpair()
            command = [sys.executable, "-m", "servable.tf.worker.main", "--control-fd", str(theirs.fileno()),
                       *self._argv_options]
            try:
                process = subprocess.Popen(command, stdin=subprocess.PIPE, pass_fds=[theirs.fileno()],
                                           close_fds=True)
            finally:
                theirs.close()
            ours.settimeout(START_TIMEOUT_S)
            try:
                ready = ours.recv(16)
            except OSError:
                ready = b""
            if ready != b"ready":
                process.kill()
                process.wait()
                ours.close()
                raise unavailable(f"the model worker process did not start (exit status {process.returncode})")
            ours.settimeout(None)
            self._process, self._control = process, ours
            atexit.register(self.close)
            log.info("model worker process %d started", process.pid)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker: close its stdin and channels, wait, then kill (idempotent)."""
        with self._lock:
            self._closed = True
            process, control, idle = self._process, self._control, self._idle
            self._idle = []
        for channel in idle:
            channel.close()
        if process is None:
            return
        if control is not None:
            control.close()
        try:
            if process.stdin is not None:
                process.stdin.close()
            process.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()

    # -- calls ------------------------------------------------------------------------

    def call(self, op: str, *args: Any) -> Any:
        """Run ``op`` in the worker and return its result; raises its ``ServingError``."""
        channel = self._borrow()
        try:
            channel.send((op, args))
            reply = channel.recv()
        except (ChannelClosed, OSError):
            channel.close()
            raise self._died() from None
        self._give_back(channel)
        if reply[0] == "ok":
            return reply[1]
        raise ServingError(Code(reply[1]), reply[2])

    def load(self, path: str, tags: Sequence[str], model_signatures: Any, *, method_name_check: bool = False,
             single_threaded_executor: bool = True) -> "RemoteSavedModel":
        """Load a version folder in the worker; the proxy to serve in its place."""
        self.start()
        model_id = next(self._ids)
        self.call("load", model_id, path, tuple(tags), method_name_check, single_threaded_executor)
        return RemoteSavedModel(self, model_id, model_signatures, path)

    def _borrow(self) -> Channel:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            control = self._control
            if control is None or self._closed:
                raise unavailable("the model worker process is not running")
            ours, theirs = socket.socketpair()
            try:
                socket.send_fds(control, [b"c"], [theirs.fileno()])
            except OSError:
                ours.close()
                raise self._died() from None
            finally:
                theirs.close()
            return Channel(ours)

    def _give_back(self, channel: Channel) -> None:
        with self._lock:
            if self._closed:
                channel.close()
            else:
                self._idle.append(channel)

    def _died(self) -> ServingError:
        process = self._process
        status = process.poll() if process is not None else None
        if not self._dead_reason and status is not None:
            self._dead_reason = f"exit status {status}"
            log.error("the model worker process %d exited (%s); restart the server to serve its models",
                      process.pid, self._dead_reason)
        reason = self._dead_reason or "its channel closed"
        return unavailable(f"the model worker process is gone ({reason}); the server must be restarted")


class RemoteSavedModel:
    """A SavedModel version loaded in the worker; implements ``ModelServable``.

    Signatures are read from ``saved_model.pb`` here (metadata and routing need no
    call); inputs are validated in the worker by the same ``SavedModelServable`` code,
    so every error text is the in-process one.
    """

    def __init__(self, process: ModelProcess, model_id: int, model_signatures: Any, path: str) -> None:
        self.path = path
        self.warmup_records = 0
        self.signatures = dict(model_signatures.infos)
        self._serialized = dict(model_signatures.serialized)
        self._process = process
        self._model_id = model_id

    def signature_defs(self) -> dict[str, bytes]:
        return dict(self._serialized)

    def predict(self, signature_key: str, inputs: dict, output_filter: Sequence[str] = ()) -> dict:
        return self._process.call("predict", self._model_id, signature_key, inputs, tuple(output_filter))

    def classify(self, signature_key: str, examples: list[bytes]) -> tuple:
        return self._process.call("classify", self._model_id, signature_key, examples)

    def regress(self, signature_key: str, examples: list[bytes]) -> Any:
        return self._process.call("regress", self._model_id, signature_key, examples)

    def close(self) -> None:
        """Unload in the worker (the loader's ``unload()``); a dead worker has nothing to free."""
        try:
            self._process.call("unload", self._model_id)
        except ServingError as error:
            if error.code != Code.UNAVAILABLE:
                raise
