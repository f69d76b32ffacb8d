"""C load generators: h2load (gRPC over HTTP/2) and wrk (REST over HTTP/1.1).

Called by the orchestrator's main thread; each run is a child process with a hard
timeout and is killed by its PID if it overruns (nghttp2 1.52's h2load can spin after a
run). They cost 0.05-0.2 cores, so they show the server's own capacity better than a
Python client. Results use the same keys as ``loadgen.py`` runs.

- gRPC: ``h2load -c 1 -m C`` (one connection with C streams, like one gRPC channel) posting a
  pre-encoded, length-prefixed PredictRequest / ModelInferRequest; latencies from
  ``--log-file``. h2load does not read ``grpc-status`` trailers, so every contender is first
  checked with the Python client, and any non-200 status counts as an error.
- REST: ``wrk -t1 -c C`` with a Lua script that posts the body file and prints percentiles.
  wrk has no warm-up flag, so a short unrecorded run goes first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

WRK_LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = f:read("*all")
f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\":%d,\"duration_us\":%d,\"status_errors\":%d,\"socket_errors\":%d," ..
    "\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d,\"mean_us\":%f}\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


def available() -> dict[str, str | None]:
    """Paths of the C tools (None when missing: those cells are skipped with a note)."""
    return {"h2load": shutil.which("h2load"), "wrk": shutil.which("wrk")}


def tool_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for tool, flag in (("h2load", "--version"), ("wrk", "-v")):
        if shutil.which(tool):
            proc = subprocess.run([tool, flag], capture_output=True, text=True, timeout=10)
            text = (proc.stdout + proc.stderr).strip().splitlines()
            versions[tool] = text[0] if text else "?"
    return versions


def _run_bounded(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise RuntimeError(f"{cmd[0]} overran {timeout:.0f} s and was killed: {out[-500:]}")
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {out[-800:]}")
    return out


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def h2load_grpc(target: str, method: str, body_file: Path, concurrency: int, duration: float, warmup: float,
                rows: int) -> dict:
    """Closed-loop gRPC load with ``concurrency`` streams on one HTTP/2 connection."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "requests.tsv"
        cmd = ["h2load", "-c", "1", "-m", str(concurrency), "-t", "1",
               "-D", f"{max(1, round(duration))}",
               "-d", str(body_file), "-H", "content-type: application/grpc", "-H", "te: trailers",
               "--log-file", str(log), f"http://{target}{method}"]
        if warmup > 0:  # h2load takes whole seconds only
            cmd[1:1] = ["--warm-up-time", f"{max(1, round(warmup))}"]
        started = time.monotonic()
        out = _run_bounded(cmd, timeout=duration + warmup + 30)
        lines = log.read_text().splitlines() if log.exists() else []
    latencies = []
    non_200 = 0
    for line in lines:
        parts = line.split("\t")
        if len(parts) >= 3:
            if parts[1] != "200":
                non_200 += 1
            latencies.append(int(parts[2]) / 1e6)
    latencies.sort()
    match = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    failed = int(match.group(5)) + int(match.group(6)) if match else 0
    rps = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    req_per_s = float(rps.group(3)) if rps else len(latencies) / max(duration, 1e-9)
    return {"concurrency": concurrency, "rows_per_request": rows, "requests": len(latencies),
            "errors": failed + non_200, "req_per_s": req_per_s, "rows_per_s": req_per_s * rows,
            "p50_ms": _percentile(latencies, 50) * 1e3, "p90_ms": _percentile(latencies, 90) * 1e3,
            "p99_ms": _percentile(latencies, 99) * 1e3, "wall_s": round(time.monotonic() - started, 3)}


def wrk_rest(url: str, body_file: Path, concurrency: int, duration: float, warmup: float, rows: int) -> dict:
    """Closed-loop HTTP/1.1 POSTs on ``concurrency`` keep-alive connections, one wrk thread."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_LUA)
        env = {**os.environ, "BENCH_BODY": str(body_file)}
        base = ["wrk", "-t", "1", "-c", str(concurrency), "--timeout", "30s", "-s", str(script)]
        if warmup > 0:
            _run_bounded(base + ["-d", f"{max(1, round(warmup))}s", url], timeout=warmup + 30, env=env)
        started = time.monotonic()
        out = _run_bounded(base + ["-d", f"{max(1, round(duration))}s", url], timeout=duration + 30, env=env)
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {out[-500:]}")
    data = json.loads(line[len("WRKJSON "):])
    seconds = data["duration_us"] / 1e6
    req_per_s = data["requests"] / seconds if seconds else 0.0
    return {"concurrency": concurrency, "rows_per_request": rows, "requests": data["requests"],
            "errors": data["status_errors"] + data["socket_errors"], "req_per_s": req_per_s,
            "rows_per_s": req_per_s * rows, "p50_ms": data["p50_us"] / 1e3, "p90_ms": data["p90_us"] / 1e3,
            "p99_ms": data["p99_us"] / 1e3, "wall_s": round(time.monotonic() - started, 3)}
