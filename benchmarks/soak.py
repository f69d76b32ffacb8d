"""Soak: a server under mixed gRPC + REST load while versions come and go and the config reloads.

    .venv/bin/python -m benchmarks.soak --minutes 3 [--grpc-clients 12] [--rest-clients 12] [--json out.json]

Loopback only. Starts ``python -m servable.server`` as a child process with a
``--model_config_file`` serving ``hp`` (a SavedModel; a new version is copied in every
``--swap-seconds`` and old version folders are deleted, so requests keep crossing hot
swaps), ``py`` (a python-platform model) and, in every other config reload, ``extra``
(added and removed by rewriting the config file, which the server polls). Client threads
call Predict (gRPC) and :predict (REST) on every model as fast as they can.

Failures are classified: a request for ``extra`` while the config does not list it
(NOT_FOUND / 404) is the client's fault; anything else that is not OK (an error on
``hp`` or ``py``, a timeout, a dropped connection, a 5xx) is counted as a server
failure. The report gives requests served, failures by kind, p50/p99 latency per
front door, and the server's RSS sampled over time (goal: flat after warm-up).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY_MODEL = '''
import numpy as np
from servable.python_model import PythonModel, tensor

class Model(PythonModel):
    inputs = {"x": tensor("float32", [-1])}
    outputs = {"y": tensor("float32", [-1])}

    def run(self, inputs):
        return {"y": inputs["x"] * 2}

def load(path):
    return Model(path)
'''


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Stats:
    """Thread-safe counters and latencies."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok = collections.Counter()
        self.client_faults = collections.Counter()
        self.server_failures = collections.Counter()
        self.examples: dict[str, str] = {}
        self.latency: dict[str, list[float]] = collections.defaultdict(list)

    def record(self, door: str, model: str, outcome: str, kind: str, seconds: float) -> None:
        with self.lock:
            if outcome == "ok":
                self.ok[door] += 1
                self.latency[door].append(seconds)
            elif outcome == "client":
                self.client_faults[f"{door}:{model}:{kind}"] += 1
            else:
                key = f"{door}:{model}:{kind}"
                self.server_failures[key] += 1
                self.examples.setdefault(key, kind)


class Operator:
    """Adds/removes versions of ``hp`` and rewrites the config file (toggling ``extra``)."""

    def __init__(self, root: Path, exports: list[str], swap_s: float, reload_s: float) -> None:
        self.root = root
        self.exports = exports
        self.swap_s = swap_s
        self.reload_s = reload_s
        self.version = 1
        self.extra_listed = True
        self.extra_changed_at = 0.0
        self.swaps = 0
        self.reloads = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def config_text(self, extra: bool) -> str:
        entries = [
            f'  config {{ name: "hp" base_path: "{self.root / "hp"}" model_platform: "tensorflow" }}',
            f'  config {{ name: "py" base_path: "{self.root / "py"}" model_platform: "python" }}',
        ]
        if extra:
            entries.append(f'  config {{ name: "extra" base_path: "{self.root / "extra"}" model_platform: "python" }}')
        return "model_config_list {\n" + "\n".join(entries) + "\n}\n"

    def write_config(self, extra: bool) -> None:
        path = self.root / "models.config"
        staging = self.root / "models.config.tmp"
        staging.write_text(self.config_text(extra))
        os.replace(staging, path)
        with self.lock:
            self.extra_listed = extra
            self.extra_changed_at = time.monotonic()

    def extra_expected(self) -> tuple[bool, float]:
        with self.lock:
            return self.extra_listed, self.extra_changed_at

    def add_version(self) -> None:
        self.version += 1
        base = self.root / "hp"
        staging = base / f".incoming-{self.version}"
        shutil.copytree(self.exports[self.version % len(self.exports)], staging)
        os.rename(staging, base / str(self.version))
        for old in sorted(int(p.name) for p in base.iterdir() if p.name.isdigit()):
            if old < self.version - 1:  # keep the serving one and the new one
                shutil.rmtree(base / str(old), ignore_errors=True)
        self.swaps += 1

    def run(self) -> None:
        next_swap = time.monotonic() + self.swap_s
        next_reload = time.monotonic() + self.reload_s
        while not self.stop.wait(0.2):
            now = time.monotonic()
            if now >= next_swap:
                self.add_version()
                next_swap = now + self.swap_s
            if now >= next_reload:
                listed, _ = self.extra_expected()
                self.write_config(not listed)
                self.reloads += 1
                next_reload = now + self.reload_s


def _grpc_client(port: int, stats: Stats, operator: Operator, stop: threading.Event, index: int) -> None:
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    models = ["hp", "py", "hp", "extra"]
    count = index
    while not stop.is_set():
        name = models[count % len(models)]
        count += 1
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        tensor = request.inputs["x"]
        tensor.dtype = 1
        tensor.tensor_shape.dim.add().size = 3
        tensor.float_val.extend([1.0, 2.0, 3.0])
        listed, changed = operator.extra_expected()
        start = time.perf_counter()
        try:
            stub.Predict(request, timeout=10)
            stats.record("grpc", name, "ok", "", time.perf_counter() - start)
        except grpc.RpcError as error:
            code = error.code().name
            settling = time.monotonic() - changed < 5.0  # the config poll has not caught up yet
            client = name == "extra" and code == "NOT_FOUND" and (not listed or settling)
            stats.record("grpc", name, "client" if client else "server", f"{code}: {error.details()}"[:200],
                         time.perf_counter() - start)
    channel.close()


def _rest_client(port: int, stats: Stats, operator: Operator, stop: threading.Event, index: int) -> None:
    models = ["hp", "py", "hp", "extra"]
    body = json.dumps({"instances": [1.0, 2.0, 3.0]}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    count = index
    while not stop.is_set():
        name = models[count % len(models)]
        count += 1
        listed, changed = operator.extra_expected()
        start = time.perf_counter()
        try:
            connection.request("POST", f"/v1/models/{name}:predict", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            stats.record("rest", name, "server", f"{type(error).__name__}: {error}"[:200], time.perf_counter() - start)
            continue
        seconds = time.perf_counter() - start
        if status == 200:
            stats.record("rest", name, "ok", "", seconds)
        else:
            settling = time.monotonic() - changed < 5.0
            client = name == "extra" and status == 404 and (not listed or settling)
            stats.record("rest", name, "client" if client else "server", f"{status}: {data[:150]!r}", seconds)
    connection.close()


def _wait_serving(grpc_port: int, process: subprocess.Popen, timeout: float = 180.0) -> None:
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", grpc_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    while time.monotonic() < deadline:
        try:
            for name in ("hp", "py", "extra"):
                request = predict_pb2.PredictRequest()
                request.model_spec.name = name
                request.inputs["x"].dtype = 1
                request.inputs["x"].tensor_shape.dim.add().size = 1
                request.inputs["x"].float_val.append(1.0)
                stub.Predict(request, timeout=5)
            channel.close()
            return
        except grpc.RpcError:
            time.sleep(0.2)
    raise SystemExit("server did not start serving in time")


def run(minutes: float, grpc_clients: int, rest_clients: int, swap_s: float, reload_s: float,
        sample_s: float, workdir: Path) -> dict[str, Any]:
    from servable.tf.testing_models import export_half_plus_three, export_half_plus_two

    exports = [str(workdir / "exports" / "hp2"), str(workdir / "exports" / "hp3")]
    export_half_plus_two(exports[0])
    export_half_plus_three(exports[1])
    shutil.copytree(exports[1], workdir / "hp" / "1")
    for name in ("py", "extra"):
        (workdir / name / "1").mkdir(parents=True)
        (workdir / name / "1" / "servable.py").write_text(PY_MODEL)
    operator = Operator(workdir, exports, swap_s, reload_s)
    operator.write_config(True)
    grpc_port, rest_port = _free_port(), _free_port()
    log_path = workdir / "server.log"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "servable.server", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
             "--grpc_address=127.0.0.1", "--rest_api_address=127.0.0.1", f"--model_config_file={workdir / 'models.config'}",
             "--model_config_file_poll_wait_seconds=1", "--file_system_poll_wait_seconds=1", "--log_level=warning"],
            cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        _wait_serving(grpc_port, process)
        stats = Stats()
        stop = threading.Event()
        threads = [threading.Thread(target=_grpc_client, args=(grpc_port, stats, operator, stop, i), daemon=True)
                   for i in range(grpc_clients)]
        threads += [threading.Thread(target=_rest_client, args=(rest_port, stats, operator, stop, i), daemon=True)
                    for i in range(rest_clients)]
        operator_thread = threading.Thread(target=operator.run, daemon=True)
        rss: list[tuple[float, float | None]] = []
        started = time.monotonic()
        for thread in threads:
            thread.start()
        operator_thread.start()
        end = started + minutes * 60
        while time.monotonic() < end and process.poll() is None:
            rss.append((round(time.monotonic() - started, 1), _rss_mb(process.pid)))
            served = sum(stats.ok.values())
            print(f"  t={rss[-1][0]:7.1f}s rss={rss[-1][1]:.1f}MB served={served} "
                  f"server_failures={sum(stats.server_failures.values())} swaps={operator.swaps} reloads={operator.reloads}",
                  flush=True)
            time.sleep(min(sample_s, max(0.0, end - time.monotonic())))
        rss.append((round(time.monotonic() - started, 1), _rss_mb(process.pid)))
        stop.set()
        operator.stop.set()
        for thread in threads:
            thread.join(15)
        elapsed = time.monotonic() - started
        alive = process.poll() is None
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    warm = [mb for t, mb in rss if mb is not None and t >= min(30.0, elapsed / 3)]
    report = {
        "minutes": minutes,
        "elapsed_s": round(elapsed, 1),
        "grpc_clients": grpc_clients,
        "rest_clients": rest_clients,
        "server_alive_at_end": alive,
        "server_exit_code_after_sigterm": process.returncode,
        "served": dict(stats.ok),
        "served_total": sum(stats.ok.values()),
        "throughput_rps": round(sum(stats.ok.values()) / elapsed, 1),
        "client_faults": dict(stats.client_faults),
        "server_failures": dict(stats.server_failures),
        "server_failures_total": sum(stats.server_failures.values()),
        "latency_ms": {
            door: {"p50": round(_percentile(v, 0.5) * 1e3, 2), "p99": round(_percentile(v, 0.99) * 1e3, 2),
                   "max": round(max(v) * 1e3, 2)}
            for door, v in stats.latency.items()
        },
        "version_swaps": operator.swaps,
        "config_reloads": operator.reloads,
        "rss_mb": rss,
        "rss_mb_start_end": [rss[0][1], rss[-1][1]],
        "rss_mb_after_warmup_min_max": [min(warm), max(warm)] if warm else None,
        "server_log": str(log_path),
    }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--grpc-clients", type=int, default=12)
    parser.add_argument("--rest-clients", type=int, default=12)
    parser.add_argument("--swap-seconds", type=float, default=5.0, help="a new hp version this often")
    parser.add_argument("--reload-seconds", type=float, default=12.0, help="rewrite the config file this often")
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="RSS sample period")
    parser.add_argument("--workdir", help="keep models and the server log here (default: a temp dir, removed)")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    temp = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        temp = tempfile.mkdtemp(prefix="servable-soak-")
        workdir = Path(temp)
    try:
        report = run(args.minutes, args.grpc_clients, args.rest_clients, args.swap_seconds, args.reload_seconds,
                     args.sample_seconds, workdir)
    finally:
        if temp is not None and not args.workdir:
            pass  # removed below, after the report names the log
    summary = {k: v for k, v in report.items() if k != "rss_mb"}
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if temp is not None:
        if report["server_failures_total"]:
            print(f"server log kept at {report['server_log']}")
        else:
            shutil.rmtree(temp, ignore_errors=True)
    return 0 if report["server_failures_total"] == 0 and report["server_alive_at_end"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
