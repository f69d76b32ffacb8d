"""The asyncio gRPC door's own Python cost per Predict, with the transport taken away.

Run: .venv/bin/python benchmarks/handler_cost.py [--rounds 3] [--requests 200] [--concurrency 64]
Not a test. Starts a ``ModelServer`` in this process (``--grpc_server_mode=asyncio
--enable_batching``, the suite's batching parameters: ``max_batch_size`` 64, a 1 ms window,
one batch thread) on a temp export, then, on the server's own event loop, drives 64
coroutines that each await ``PredictionService.predict_async`` on an already-parsed 1-row
``PredictRequest`` back to back: decode, route, metrics, request log, enqueue, the batch
thread's call, encode. No gRPC, no sockets, no client: what is left is the server's
request path plus the model, so the figure moves with code changes far more than with the
VM's noise (h2load runs through ``benchmarks/grpc_modes.py`` swing 2-3x between phases).

Models: the ``zero-cost`` Python model of ``grpc_modes.py`` (answers zeros: the path's own
ceiling) and the 784-128-10 MLP SavedModel. Prints, per model, the median over rounds of
microseconds per request and req/s, the process CPU per request (every thread, user and
system), the mean batch (rows per model call, from the ``servable_batch_size`` metric),
as JSON with the command line. ``--concurrency 4`` gives batches of about 4 rows, the
size h2load's 64 streams actually produce through gRPC with the 1 ms window: the
per-batch costs (thread wake-ups, merge and split, metrics) then show.

Why it matters: at 64 concurrent 1-row gRPC requests the event loop is the bottleneck;
each microsecond here is one the loop cannot spend on grpc.aio's own per-RPC work (about
190-240 us per request in the bare echo server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.grpc_modes import ZERO_COST_MODEL  # noqa: E402
from benchmarks.procs import free_port  # noqa: E402

CONCURRENCY = 64
BATCHING = ("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 1000 }\n"
            "max_enqueued_batches { value: 1000 }\nnum_batch_threads { value: 1 }\n")


def _request(rows: int):  # type: ignore[no-untyped-def]
    import numpy as np

    from servable._proto.tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    proto = request.inputs["images"]
    proto.dtype = 1  # DT_FLOAT
    proto.tensor_shape.dim.add().size = rows
    proto.tensor_shape.dim.add().size = 784
    proto.tensor_content = np.random.default_rng(0).random((rows, 784), dtype=np.float32).tobytes()
    return request


def _batch_rows(server) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(count, sum) of the ``servable_batch_size`` histogram."""
    histogram = server.service.metrics.batch_size
    count = total = 0.0
    for family in histogram.collect():
        for sample in family.samples:
            if sample.name.endswith("_count"):
                count += sample.value
            elif sample.name.endswith("_sum"):
                total += sample.value
    return count, total


def measure(model: str, folder: pathlib.Path, rounds: int, requests: int, concurrency: int = CONCURRENCY) -> dict[str, float]:
    from servable.config.flags import parse_flags
    from servable.model_server import ModelServer
    from servable.settings import settings_from_flags

    batching = folder / "batching.config"
    batching.write_text(BATCHING)
    if model == "zero-cost":
        (folder / "zero-cost" / "1").mkdir(parents=True, exist_ok=True)
        (folder / "zero-cost" / "1" / "servable.py").write_text(ZERO_COST_MODEL)
        config = folder / "zero-cost.config"
        config.write_text(f'model_config_list {{ config {{ name: "mnist" base_path: "{folder / "zero-cost"}" '
                          'model_platform: "python" } }\n')
        model_flags = [f"--model_config_file={config}"]
    else:
        model_flags = ["--model_name=mnist", f"--model_base_path={folder / 'mnist'}"]
    flags = parse_flags([f"--port={free_port()}", "--rest_api_port=0", "--grpc_address=127.0.0.1",
                         "--grpc_server_mode=asyncio", "--enable_batching", f"--batching_parameters_file={batching}",
                         "--log_level=warning", *model_flags])
    settings, _demo = settings_from_flags(flags)
    server = ModelServer(settings).start_in_thread()
    try:
        deadline = time.monotonic() + 120
        while not server.is_ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{model} did not become AVAILABLE")
            time.sleep(0.05)
        request = _request(1)
        prediction = server.grpc.prediction

        async def client(n: int) -> None:
            for _ in range(n):
                await prediction.predict_async(request)

        async def run(n: int) -> float:
            start = time.perf_counter()
            await asyncio.gather(*(client(n) for _ in range(concurrency)))
            return time.perf_counter() - start

        def on_loop(n: int) -> float:
            return asyncio.run_coroutine_threadsafe(run(n), server._loop).result(timeout=300)

        on_loop(max(10, requests // 4))  # warm-up, not counted
        count0, sum0 = _batch_rows(server)
        cpu0 = time.process_time()
        seconds = [on_loop(requests) for _ in range(rounds)]
        cpu = time.process_time() - cpu0
        count1, sum1 = _batch_rows(server)
    finally:
        server.stop()
    per_request = statistics.median(seconds) / (requests * concurrency)
    return {"us_per_request": round(per_request * 1e6, 1), "req_per_s": round(1 / per_request),
            "cpu_us_per_request": round(cpu / (rounds * requests * concurrency) * 1e6, 1),
            "mean_batch_rows": round((sum1 - sum0) / max(1.0, count1 - count0), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200, help="requests per coroutine per round")
    parser.add_argument("--models", default="zero-cost,mlp")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY,
                        help="coroutines (a few give the small batches h2load sees at c=64)")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="handler-cost-") as directory:
        folder = pathlib.Path(directory)
        models = args.models.split(",")
        if "mlp" in models:
            from servable.tf.testing_models import export_mlp

            export_mlp(str(folder / "mnist" / "1"))
        for model in models:
            results[model] = measure(model, folder, args.rounds, args.requests, args.concurrency)
            print(f"{model}: {results[model]}", file=sys.stderr, flush=True)
    command = " ".join([".venv/bin/python", "benchmarks/handler_cost.py", *(argv if argv is not None else sys.argv[1:])])
    print(json.dumps({"command": command, "concurrency": args.concurrency, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
