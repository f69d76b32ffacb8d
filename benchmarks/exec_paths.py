"""Which way of calling a SavedModel signature is fastest? (issue 5; results in docs/performance.md)

Measures, on the 784-128-10 MLP (``servable.tf.testing_models.export_mlp``), per call from
Python with numpy in and numpy out, back to back on one thread (p50 and mean, µs) and with
two threads calling at once (throughput), for 1-row and 32-row inputs:

- ``public``: ``loaded.signatures[key](images=tf.constant(x))`` then ``.numpy()``;
- ``call_flat``: ``ConcreteFunction._call_flat`` on TensorFlow's default executor;
- ``call_flat_single_threaded``: the same on the ``SINGLE_THREADED_EXECUTOR`` (what
  ``_SignatureRunner`` does, see ``servable.tf.function_executor``);
- ``servable``: ``SavedModelServable.predict`` end to end (validation + call_flat + numpy),
  single-threaded executor (the default); ``servable_default_executor``: the same with
  ``--tensorflow_single_threaded_executor=false``;
- ``tf_function``: a ``tf.function`` with a fixed ``input_signature`` around the signature;
- ``session``: TF1 ``Session.make_callable`` on the same SavedModel (graph mode).

TensorFlow fixes its thread pools when the runtime starts, so every
``--tensorflow_intra_op_parallelism``/``--tensorflow_inter_op_parallelism`` setting runs in
its own child process. Then, through a real server (subprocess, official gRPC client, c=1):
p50 with batching on vs off, and the first request after a load vs steady state.

    .venv/bin/python benchmarks/exec_paths.py            # about 1-2 minutes on 2 cores
    .venv/bin/python benchmarks/exec_paths.py --quick    # fewer calls
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

THREAD_CONFIGS = [(0, 0), (1, 1), (2, 1), (1, 2), (2, 2)]


# ----------------------------------------------------------------------------- child

def _time_rounds(paths: dict[str, Callable[[], Any]], n: int, rounds: int = 10) -> dict[str, tuple[float, float]]:
    """Per path (p50, mean) in µs of ``n`` back-to-back calls, taken in ``rounds``
    interleaved slices so that load from other processes hits every path alike."""
    for fn in paths.values():
        for _ in range(50):
            fn()
    times: dict[str, list[float]] = {name: [] for name in paths}
    per_round = max(1, n // rounds)
    for _ in range(rounds):
        for name, fn in paths.items():
            bucket = times[name]
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                bucket.append(time.perf_counter() - t0)
    return {name: (statistics.median(v) * 1e6, statistics.fmean(v) * 1e6) for name, v in times.items()}


def _threaded_rate(fn: Callable[[], Any], threads: int, seconds: float) -> float:
    """Calls per second with ``threads`` threads calling ``fn`` in a loop."""
    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            fn()
            counts[i] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / seconds


def child(model_dir: str, intra: int, inter: int, n: int, seconds: float) -> dict[str, Any]:
    import numpy as np
    import tensorflow as tf

    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    from servable.tf import function_executor
    from servable.tf.loaders import LoaderOptions
    from servable.tf.saved_model import SavedModelLoader

    loader = SavedModelLoader(model_dir)
    loader.load()
    servable = loader.servable()
    default_loader = SavedModelLoader(model_dir, options=LoaderOptions(single_threaded_executor=False))
    default_loader.load()
    servable_default = default_loader.servable()
    single = function_executor.SINGLE_THREADED
    function = servable.loaded.signatures["serving_default"]
    captured = function.captured_inputs
    wrapped = tf.function(
        lambda images: function(images=images), input_signature=[tf.TensorSpec([None, 784], tf.float32)]
    )
    # TF1 session on the same SavedModel.
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], model_dir)
    sig = meta.signature_def["serving_default"]
    feed = graph.get_tensor_by_name(sig.inputs["images"].name)
    fetch = graph.get_tensor_by_name(sig.outputs["scores"].name)
    callable_ = session.make_callable(fetch, [feed])

    results: dict[str, Any] = {"intra": intra, "inter": inter, "paths": {}}
    for rows in (1, 32):
        x = np.random.default_rng(rows).random((rows, 784), dtype=np.float32)
        paths: dict[str, Callable[[], Any]] = {
            "public": lambda: function(images=tf.constant(x))["scores"].numpy(),
            "call_flat": lambda: function._call_flat([tf.constant(x)], captured)["scores"].numpy(),
            "call_flat_single_threaded": lambda: function_executor.call_with(
                single, lambda: function._call_flat([tf.constant(x)], captured)["scores"].numpy()),
            "servable": lambda: servable.predict("serving_default", {"images": x}),
            "servable_default_executor": lambda: servable_default.predict("serving_default", {"images": x}),
            "tf_function": lambda: wrapped(tf.constant(x))["scores"].numpy(),
            "session": lambda: callable_(x),
        }
        reference = paths["session"]()
        for name, fn in paths.items():
            out = fn()
            out = out["scores"] if isinstance(out, dict) else out
            if not np.allclose(out, reference, atol=1e-5):
                raise SystemExit(f"path {name} disagrees with the session's output")
        timed = _time_rounds(paths, n)
        for name, fn in paths.items():
            p50, mean = timed[name]
            rate2 = _threaded_rate(fn, 2, seconds)
            results["paths"].setdefault(name, {})[rows] = {
                "p50_us": round(p50, 1), "mean_us": round(mean, 1), "rows_per_s_2threads": round(rate2 * rows),
            }
    return results


# ----------------------------------------------------------------------------- server

def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_latency(base_path: str, extra: list[str], n: int, params_file: str | None) -> dict[str, float]:
    """Start ``python -m servable.server`` on the MLP; c=1 p50 (ms), first request (ms)."""
    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import (
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    port = _free_port()
    argv = [sys.executable, "-m", "servable.server", f"--port={port}", "--grpc_address=127.0.0.1",
            "--model_name=mlp", f"--model_base_path={base_path}", *extra]
    if params_file:
        argv += ["--enable_batching", f"--batching_parameters_file={params_file}"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mlp"
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 784), np.float32)))
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "mlp"
        model_stub = model_service_pb2_grpc.ModelServiceStub(channel)
        deadline = time.monotonic() + 60
        while True:  # channel connected and version AVAILABLE: no Predict has run yet
            try:
                states = model_stub.GetModelStatus(status, timeout=5).model_version_status
                if any(s.state == 30 for s in states):
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("server did not come up")
            time.sleep(0.05)
        t0 = time.perf_counter()
        stub.Predict(request, timeout=10)
        first = time.perf_counter() - t0
        times = []
        for i in range(n + 100):
            t0 = time.perf_counter()
            stub.Predict(request, timeout=10)
            if i >= 100:
                times.append(time.perf_counter() - t0)
        channel.close()
        return {"first_ms": round(first * 1e3, 3), "p50_ms": round(statistics.median(times) * 1e3, 3)}
    finally:
        proc.terminate()
        proc.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="")
    parser.add_argument("--intra", type=int, default=0)
    parser.add_argument("--inter", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, seconds = (300, 0.5) if args.quick else (2000, 2.0)
    if args.child:
        print(json.dumps(child(args.model, args.intra, args.inter, n, seconds)))
        return

    from servable.tf.testing_models import export_mlp

    work = tempfile.mkdtemp(prefix="exec_paths_")
    base = os.path.join(work, "mlp")
    model_dir = export_mlp(os.path.join(base, "1"))
    report: dict[str, Any] = {"in_process": []}
    for intra, inter in THREAD_CONFIGS:
        out = subprocess.run(
            [sys.executable, __file__, "--child", f"--model={model_dir}", f"--intra={intra}", f"--inter={inter}"]
            + (["--quick"] if args.quick else []),
            check=True, capture_output=True, text=True,
        ).stdout
        result = json.loads(out.strip().splitlines()[-1])
        report["in_process"].append(result)
        print(f"intra={intra} inter={inter}", file=sys.stderr)
        for name, by_rows in result["paths"].items():
            cells = "  ".join(
                f"b{rows}: p50 {v['p50_us']:7.1f}us mean {v['mean_us']:7.1f}us 2thr {v['rows_per_s_2threads']:7d} rows/s"
                for rows, v in by_rows.items()
            )
            print(f"  {name:26s} {cells}", file=sys.stderr)

    params = os.path.join(work, "batching.pbtxt")
    with open(params, "w") as handle:
        handle.write("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 2000 }\n"
                     "max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 2 }\n")
    calls = 300 if args.quick else 1500
    off = server_latency(base, [], calls, None)
    on = server_latency(base, [], calls, params)
    report["server"] = {"batching_off": off, "batching_on": on,
                        "lone_request_ratio_on_off": round(on["p50_ms"] / off["p50_ms"], 3),
                        "first_over_steady_off": round(off["first_ms"] / off["p50_ms"], 2),
                        "first_over_steady_on": round(on["first_ms"] / on["p50_ms"], 2)}
    print(f"server c=1: off {off}  on {on}", file=sys.stderr)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
