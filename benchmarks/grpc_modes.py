"""gRPC front doors compared: ``--grpc_server_mode=threads`` vs ``asyncio``, batching off and on.

Run: .venv/bin/python benchmarks/grpc_modes.py [--rounds 3] [--seconds 4]
Not a test. Exports the 784-128-10 MLP (``servable.tf.testing_models.export_mlp``) to a
temp dir, then per round starts, one at a time, the bare grpc.aio echo server (the
floor) and ``python -m servable.server`` in each mode, and drives each with h2load (one
HTTP/2 connection, C streams; Debian ``nghttp2-client``): 1-row requests at c=1 and c=64,
32-row requests at c=1 and c=16, TF Serving PredictRequests with ``tensor_content`` built
by the official stubs. Prints medians over the rounds (p50 ms, req/s) as JSON, plus the
ratios to the echo floor, and the command line.

The ``zero-cost model`` variants serve, under the same name and signature, a Python model
(``model_platform: "python"``) that answers zeros without computing: what the server's
own request path (routing, batching, metrics, log lines) costs with the model taken away,
i.e. the ceiling any model can reach through it. The ``worker-process model`` variant
serves the same MLP run in a worker process (``benchmarks/peers/worker_process_model.py``):
threads against processes for the model call, as the ``worker process`` variants do with
``--tensorflow_worker_process`` (the server's own worker). Batching variants use the suite's parameters
(``max_batch_size`` 64, a 1 ms window, one batch thread), except ``20 ms window``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import struct
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.cload import h2load_grpc  # noqa: E402
from benchmarks.procs import Child, free_port, tfs_version_states  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
METHOD = "/tensorflow.serving.PredictionService/Predict"
LOADS = (("b1", 1, 1), ("b1", 1, 64), ("b32", 32, 1), ("b32", 32, 16))
VARIANTS = {
    "echo": None,
    "threads": ["--grpc_server_mode=threads"],
    "asyncio": ["--grpc_server_mode=asyncio"],
    "threads+batching": ["--grpc_server_mode=threads", "--enable_batching"],
    "asyncio+batching": ["--grpc_server_mode=asyncio", "--enable_batching"],
    "asyncio+batching+20 ms window": ["--grpc_server_mode=asyncio", "--enable_batching"],
    "threads+zero-cost model": ["--grpc_server_mode=threads"],
    "asyncio+batching+zero-cost model": ["--grpc_server_mode=asyncio", "--enable_batching"],
    "threads+batching+worker-process model": ["--grpc_server_mode=threads", "--enable_batching"],
    "asyncio+batching+worker-process model": ["--grpc_server_mode=asyncio", "--enable_batching"],
    "threads+worker process": ["--grpc_server_mode=threads", "--tensorflow_worker_process"],
    "threads+batching+worker process": ["--grpc_server_mode=threads", "--enable_batching",
                                        "--tensorflow_worker_process"],
    "asyncio+batching+worker process": ["--grpc_server_mode=asyncio", "--enable_batching",
                                        "--tensorflow_worker_process"],
    "threads+default executor": ["--grpc_server_mode=threads", "--tensorflow_single_threaded_executor=false"],
    "asyncio+batching+default executor": ["--grpc_server_mode=asyncio", "--enable_batching",
                                          "--tensorflow_single_threaded_executor=false"],
}
ZERO_COST_MODEL = '''import numpy as np
from servable.python_model import PythonModel, tensor


class ZeroCost(PythonModel):
    inputs = {"images": tensor("float32", [-1, 784])}
    outputs = {"scores": tensor("float32", [-1, 10])}

    def run(self, inputs):
        return {"scores": np.zeros((len(inputs["images"]), 10), np.float32)}


def load(path):
    return ZeroCost(path)
'''


def _bodies(tmp: pathlib.Path) -> dict[str, pathlib.Path]:
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    paths = {}
    for name, rows in (("b1", 1), ("b32", 32)):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mnist"
        array = np.random.default_rng(0).random((rows, 784), dtype=np.float32)
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(array))
        body = request.SerializeToString()
        paths[name] = tmp / f"{name}.bin"
        paths[name].write_bytes(struct.pack(">BI", 0, len(body)) + body)
    return paths


def _start(variant: str, model_base: str, tmp: pathlib.Path, batching_file: pathlib.Path) -> tuple[Child, int]:
    port = free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    log = tmp / f"{variant}.log"
    if VARIANTS[variant] is None:
        child = Child(variant, [sys.executable, str(ROOT / "benchmarks/peers/echo_server.py"), str(port)], log, env=env)
        child.wait_ready(lambda: "LISTENING" in log.read_text(), timeout=120)
        return child, port
    rest = free_port()
    python_model = {"zero-cost model": ZERO_COST_MODEL,
                    "worker-process model": (ROOT / "benchmarks/peers/worker_process_model.py").read_text()}
    kind = next((k for k in python_model if variant.endswith(k)), None)
    if kind is not None:
        folder = tmp / kind.replace(" ", "-")
        (folder / "1").mkdir(parents=True, exist_ok=True)
        (folder / "1" / "servable.py").write_text(python_model[kind])
        config = tmp / f"{folder.name}.config"
        config.write_text(f'model_config_list {{ config {{ name: "mnist" base_path: "{folder}" '
                          'model_platform: "python" } }\n')
        model = [f"--model_config_file={config}"]
        env["WORKER_MODEL"] = f"{model_base}/1"
    else:
        model = ["--model_name=mnist", f"--model_base_path={model_base}"]
    flags = [f"--port={port}", f"--rest_api_port={rest}", "--grpc_address=127.0.0.1", "--rest_api_address=127.0.0.1",
             *model, "--log_level=warning", *VARIANTS[variant]]
    if "--enable_batching" in flags:
        if variant.endswith("20 ms window"):
            batching_file = batching_file.with_name("batching-20ms.config")
            batching_file.write_text(batching_file.with_name("batching.config").read_text().replace(
                "batch_timeout_micros { value: 1000 }", "batch_timeout_micros { value: 20000 }"))
        flags.append(f"--batching_parameters_file={batching_file}")
    child = Child(variant, [sys.executable, "-m", "servable.server", *flags], log, env=env, cwd=str(ROOT))
    child.wait_ready(lambda: tfs_version_states(rest, "mnist").get(1) == "AVAILABLE", timeout=180)
    return child, port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--only", default="", help="comma-separated variants (default: all)")
    args = parser.parse_args(argv)
    variants = [v for v in VARIANTS if not args.only or v in args.only.split(",")]
    from servable.tf.testing_models import export_mlp

    results: dict[str, dict[str, list[dict]]] = {v: {} for v in variants}
    with tempfile.TemporaryDirectory(prefix="grpc-modes-") as directory:
        tmp = pathlib.Path(directory)
        export_mlp(str(tmp / "mnist" / "1"))
        bodies = _bodies(tmp)
        batching_file = tmp / "batching.config"
        batching_file.write_text(
            "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 1000 }\n"
            "max_enqueued_batches { value: 1000 }\nnum_batch_threads { value: 1 }\n"
        )
        for round_index in range(args.rounds):
            for variant in variants:
                child, port = _start(variant, str(tmp / "mnist"), tmp, batching_file)
                try:
                    for body, rows, concurrency in LOADS:
                        run = h2load_grpc(f"127.0.0.1:{port}", METHOD, bodies[body], concurrency,
                                          args.seconds, 1.0, rows)
                        if not run["requests"]:  # h2load connected before the server accepted: once more
                            run = h2load_grpc(f"127.0.0.1:{port}", METHOD, bodies[body], concurrency,
                                              args.seconds, 1.0, rows)
                        results[variant].setdefault(f"{body}_c{concurrency}", []).append(run)
                        print(f"round {round_index + 1} {variant} {body} c={concurrency}: "
                              f"p50 {run['p50_ms']:.3f} ms, {run['req_per_s']:.0f} req/s, errors {run['errors']}",
                              file=sys.stderr, flush=True)
                finally:
                    child.stop()
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for variant, loads in results.items():
        summary[variant] = {
            load: {"p50_ms": round(statistics.median([r["p50_ms"] for r in runs if r["p50_ms"] == r["p50_ms"]] or [float("nan")]), 3),
                   "req_per_s": round(statistics.median(r["req_per_s"] for r in runs), 1),
                   "errors": sum(r["errors"] for r in runs)}
            for load, runs in loads.items()
        }
    report = {"command": " ".join([".venv/bin/python", "benchmarks/grpc_modes.py", *(argv or sys.argv[1:])]),
              "medians": summary}
    if "echo" in summary:
        report["over_echo"] = {
            variant: {load: {"p50": round(v["p50_ms"] / summary["echo"][load]["p50_ms"], 2),
                             "req_per_s": round(v["req_per_s"] / (summary["echo"][load]["req_per_s"] or float("nan")), 2)}
                      for load, v in loads.items()}
            for variant, loads in summary.items() if variant != "echo"
        }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
