"""Latency of back-to-back requests while versions are hot-swapped (not a test).

Run: .venv/bin/python benchmarks/swap_pauses.py [--swaps 5]

Exports the 784-128-10 MLP, starts ``python -m servable.server`` on it
(``--file_system_poll_wait_seconds=1``), and sends 1-row Predicts back to back from one
official-client thread while new version folders appear; each swap waits until the new
version is AVAILABLE and the old one reached END. Prints p50, p99, p99.9 and the maximum
latency, and how many requests took over 50 ms: what a client sees of loads and
unloads (a full ``gc.collect()`` at unload used to stop every thread for ~300 ms; see
``servable.server._freeze_startup_objects``).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.procs import Child, free_port, tfs_version_states  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swaps", type=int, default=5)
    args = parser.parse_args(argv)
    import grpc
    import numpy as np
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from servable.tf.testing_models import export_mlp

    with tempfile.TemporaryDirectory(prefix="swap-pauses-") as directory:
        tmp = pathlib.Path(directory)
        export_mlp(str(tmp / "export"))
        base = tmp / "mnist"
        shutil.copytree(tmp / "export", base / "1")
        grpc_port, rest_port = free_port(), free_port()
        child = Child("servable", [sys.executable, "-m", "servable.server", f"--port={grpc_port}",
                                   f"--rest_api_port={rest_port}", "--grpc_address=127.0.0.1", "--rest_api_address=127.0.0.1",
                                   "--model_name=mnist", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1",
                                   "--log_level=warning"],
                      tmp / "server.log", env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=str(ROOT))
        try:
            child.wait_ready(lambda: tfs_version_states(rest_port, "mnist").get(1) == "AVAILABLE", timeout=180)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "mnist"
            tensor = request.inputs["images"]
            tensor.dtype = 1
            tensor.tensor_shape.dim.add().size = 1
            tensor.tensor_shape.dim.add().size = 784
            tensor.tensor_content = np.zeros((1, 784), np.float32).tobytes()
            latencies: list[float] = []
            stop = threading.Event()
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

                def client() -> None:
                    while not stop.is_set():
                        start = time.perf_counter()
                        stub.Predict(request, timeout=30)
                        latencies.append(time.perf_counter() - start)

                thread = threading.Thread(target=client)
                thread.start()
                try:
                    # Steady traffic before the first swap and after each: counted requests, not a clock.
                    _wait(lambda: len(latencies) >= 500, 120, "steady-state requests")
                    for version in range(2, 2 + args.swaps):
                        shutil.copytree(tmp / "export", base / str(version))
                        _wait(lambda: tfs_version_states(rest_port, "mnist").get(version) == "AVAILABLE", 120, f"version {version}")
                        _wait(lambda: tfs_version_states(rest_port, "mnist").get(version - 1) == "END", 120, f"version {version - 1} unloaded")
                        settled = len(latencies) + 100
                        _wait(lambda: len(latencies) >= settled, 120, "requests after the swap")
                finally:
                    stop.set()
                    thread.join()
        finally:
            child.stop()
    ordered = sorted(latencies)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1e3, 2)

    print(json.dumps({
        "command": " ".join([".venv/bin/python", "benchmarks/swap_pauses.py", *(argv or sys.argv[1:])]),
        "swaps": args.swaps, "requests": len(ordered), "p50_ms": pick(0.5), "p99_ms": pick(0.99),
        "p999_ms": pick(0.999), "max_ms": round(ordered[-1] * 1e3, 1),
        "over_50ms": sum(1 for value in ordered if value > 0.05),
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
