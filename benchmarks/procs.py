"""Child processes: start, wait for readiness, read RSS/CPU, stop by PID.

Used from the orchestrator's main thread only. Every process the suite starts goes through
``Child``; ``Child.stop`` sends SIGTERM to that PID, waits, then SIGKILLs that PID. Nothing is
ever stopped by name or by process group.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` from /proc (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def http_get(host: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def http_post(host: str, port: int, path: str, body: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def tfs_version_states(port: int, model: str) -> dict[int, str]:
    """``GET /v1/models/{model}`` on a TF-Serving-compatible REST port -> {version: state}."""
    try:
        status, body = http_get("127.0.0.1", port, f"/v1/models/{model}")
    except OSError:
        return {}
    if status != 200:
        return {}
    return {int(v["version"]): v["state"] for v in json.loads(body).get("model_version_status", [])}


class Child:
    """One started process; its output goes to ``log``."""

    def __init__(self, name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        self.name = name
        self.cmd = cmd
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(log, "ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                     stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, probe: Callable[[], Any], timeout: float) -> float:
        """Poll ``probe`` (every 10 ms) until truthy; return seconds since start.

        Raises ``RuntimeError`` with the log tail if the process exits or the deadline passes.
        """
        deadline = self.started + timeout
        while True:
            try:
                if probe():
                    return time.monotonic() - self.started
            except OSError:
                pass
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before ready: {self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready within {timeout:.0f} s: {self.tail()}")
            time.sleep(0.01)

    def tail(self, chars: int = 1500) -> str:
        try:
            return self.log.read_bytes()[-chars:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM this PID, wait up to ``timeout``, then SIGKILL it. Returns the exit code."""
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._log_file.close()
        return self.proc.returncode
