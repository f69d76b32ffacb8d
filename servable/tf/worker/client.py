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

If the worker dies (a crash, the kernel's OOM killer), the calls in flight raise
UNAVAILABLE naming its exit status, and a restart thread starts a new worker and loads
again every version the old one held; until it is done, calls answer UNAVAILABLE at once
(a status clients retry). Versions stay AVAILABLE meanwhile: their folders are as valid
as before. Restarts back off (0.5 s doubling to 30 s) while workers keep dying young, so
a model that crashes the worker cannot make it spin (``docs/performance.md``, "A model
worker process").
"""

from __future__ import annotations

import atexit
import itertools
import logging
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Sequence

from servable.core.status import Code, ServingError, unavailable
from servable.tf.worker.wire import Channel, ChannelClosed

log = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0
RESTART_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
HEALTHY_LIFETIME_S = 60.0  # a worker that lived this long resets the restart back-off


class ModelProcess:
    """One model worker process and the channels to it; see the module docstring."""

    def __init__(self, *, intra_op: int = 0, inter_op: int = 0, log_level: str = "info") -> None:
        self._argv_options = ["--intra-op", str(intra_op), "--inter-op", str(inter_op), "--log-level", log_level]
        self._lock = threading.Lock()  # state: process, channels, loads
        self._start_lock = threading.Lock()  # one start at a time
        self._atexit_registered = False
        self._process: subprocess.Popen | None = None
        self._control: socket.socket | None = None
        self._idle: list[Channel] = []
        self._ids = itertools.count(1)
        self._closed = False
        self._loads: dict[int, tuple] = {}  # model_id -> load arguments, replayed after a restart
        self._started_at = 0.0
        self._restarting = False
        self._quick_deaths = 0
        self.restarts = 0

    # -- lifecycle --------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the worker and wait until it has imported TensorFlow (idempotent).

        Only ``_start_lock`` is held while the worker starts, so calls meanwhile fail
        fast with UNAVAILABLE instead of queueing behind a TensorFlow import.
        """
        with self._start_lock:
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
            with self._lock:
                closed = self._closed
                if ready == b"ready" and not closed:
                    ours.settimeout(None)
                    self._process, self._control = process, ours
                    self._started_at = time.monotonic()
            if ready != b"ready" or closed:
                process.kill()
                process.wait()
                ours.close()
                if closed:
                    raise unavailable("the model worker process has been shut down")
                raise unavailable(f"the model worker process did not start (exit status {process.returncode})")
            if not self._atexit_registered:
                atexit.register(self.close)
                self._atexit_registered = True
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
        if not self._restarting:
            self.start()
        model_id = next(self._ids)
        arguments = (path, tuple(tags), method_name_check, single_threaded_executor)
        self.call("load", model_id, *arguments)
        with self._lock:
            self._loads[model_id] = arguments
        return RemoteSavedModel(self, model_id, model_signatures, path)

    def unload(self, model_id: int) -> None:
        """Free a version in the worker; nothing to free in a dead or restarting one."""
        with self._lock:
            self._loads.pop(model_id, None)
        try:
            self.call("unload", model_id)
        except ServingError as error:
            if error.code != Code.UNAVAILABLE:
                raise

    def _borrow(self) -> Channel:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            control = self._control
            if self._closed:
                raise unavailable("the model worker process has been shut down")
            if control is None:
                raise unavailable("the model worker process is restarting; retry shortly"
                                  if self._restarting else "the model worker process is not running")
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
        """A channel broke: the worker is dead (or dying). Start the restart once."""
        with self._lock:
            process, control, idle = self._process, self._control, self._idle
            if process is None or self._closed:
                return unavailable("the model worker process is restarting; retry shortly")
            self._process = self._control = None
            self._idle = []
            self._restarting = True
            lived = time.monotonic() - self._started_at
            self._quick_deaths = 0 if lived >= HEALTHY_LIFETIME_S else self._quick_deaths + 1
        for channel in idle:
            channel.close()
        if control is not None:
            control.close()
        try:
            status = process.wait(1.0)
        except subprocess.TimeoutExpired:  # a broken channel in a live worker: replace it too
            process.kill()
            status = process.wait()
        log.error("the model worker process %d exited (status %s); restarting it and loading its %d "
                  "version(s) again", process.pid, status, len(self._loads))
        threading.Thread(target=self._restart, name="model-worker-restart", daemon=True).start()
        return unavailable(f"the model worker process exited (status {status}); it is being restarted")

    def _restart(self) -> None:
        """Start a new worker and load every version again (restart thread)."""
        attempt = self._quick_deaths
        while True:
            time.sleep(RESTART_DELAYS_S[min(max(attempt - 1, 0), len(RESTART_DELAYS_S) - 1)] if attempt else 0.0)
            if self._closed:
                return
            try:
                self.start()
            except ServingError as error:
                log.error("model worker restart failed: %s", error.message)
                attempt += 1
                continue
            break
        with self._lock:
            loads = list(self._loads.items())
        reloaded = 0
        for model_id, arguments in loads:
            try:
                self.call("load", model_id, *arguments)
                reloaded += 1
            except ServingError as error:
                log.error("model worker restart: %s could not be loaded again: %s", arguments[0], error.message)
                if self._process is None:
                    return  # died again: that death started the next restart
        with self._lock:
            self.restarts += 1
            self._restarting = False
        log.info("model worker process %s restarted; %d of %d version(s) loaded again", self.pid, reloaded,
                 len(loads))


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
        self._process.unload(self._model_id)
