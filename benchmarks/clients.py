"""Long-lived Python load clients, one per venv (``loadgen.py --serve`` children).

The orchestrator sends one JSON job per line and reads one JSON line back, so each client
pays its imports (TensorFlow for the official TF Serving stubs, kserve's V2 stubs) once per
suite. ``submit``/``result`` split a job so the orchestrator can act while load runs (hot
swap). Each client is stopped by its PID in ``close``.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks import venvs
from benchmarks.contenders import MAIN_PYTHON

LOADGEN = str(Path(__file__).resolve().parent / "loadgen.py")


class LoadClient:
    def __init__(self, venv: str, log: Path, start_timeout: float = 120.0) -> None:
        python = MAIN_PYTHON if venv == "main" else str(venvs.SPECS[venv].python)
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["TF_CPP_MIN_LOG_LEVEL"] = "3"
        self.proc = subprocess.Popen([python, LOADGEN, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, env=env, cwd=str(log.parent))
        self.pid = self.proc.pid
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)
        self._read(start_timeout)

    def _read(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"load client {self.pid} gave no answer within {timeout:.0f} s")
            if self._selector.select(timeout=min(remaining, 1.0)):
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"load client {self.pid} exited ({self.proc.poll()})")
                return json.loads(line)
            if self.proc.poll() is not None:
                raise RuntimeError(f"load client {self.pid} exited ({self.proc.returncode})")

    def submit(self, job: dict[str, Any]) -> None:
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        answer = self._read(timeout)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def run(self, job: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.submit(job)
        return self.result(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, OSError):
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


class ClientPool:
    """Lazily started ``LoadClient`` per venv key."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.clients: dict[str, LoadClient] = {}

    def get(self, venv: str) -> LoadClient:
        client = self.clients.get(venv)
        if client is None or client.proc.poll() is not None:
            client = self.clients[venv] = LoadClient(venv, self.logdir / f"loadgen-{venv}.log")
        return client

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.clients.clear()
