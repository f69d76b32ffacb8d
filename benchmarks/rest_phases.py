"""Where a REST ``:predict`` of a 32x784 float batch spends its time inside the server (issue 3).

Run: .venv/bin/python benchmarks/rest_phases.py [--seconds 5]
Not a test. Exports the 784-128-10 MLP to a temp dir and starts ``python -m servable.server``
(no batching) in a subprocess through this file's ``--serve`` mode, which wraps the REST
path's phases in timers before calling ``servable.server.main``. This process then posts
the same pre-encoded ``instances`` body (random float32 values, as the client of
``benchmarks/rest_vs_grpc.py`` sends them) back to back on one kept-alive connection and,
for the same duration, sends the same rows over gRPC with the official stub. At the
server's exit it prints the p50 of each phase (first fifth of each dropped as warm-up):

- ``handle``: the whole aiohttp handler on the event loop;
- ``read_body``: receiving the body; ``to worker`` / ``back to loop``: the two thread
  hand-offs of ``run_blocking``; ``parse``: ``json_codec.parse_predict_request`` (simdjson);
  ``decode``: typing the parsed array by the signature; ``predict``: the service call
  (decode, routing, model, metrics); ``encode``: the JSON answer.

The client's own p50s and their ratio are printed too, so the phases can be set against
the REST/gRPC ratio of the same run.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import functools
import http.client
import os
import pathlib
import signal
import sys
import tempfile
import time
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _serve(argv: list[str]) -> int:
    """The server, with timers around the REST path's phases (runs in the child process)."""
    from servable.rest import app, json_codec
    from servable.serving import service as service_module

    phases: dict[str, list[float]] = collections.defaultdict(list)

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[name].append(time.perf_counter() - start)

        return wrapper

    def timed_async(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                phases[name].append(time.perf_counter() - start)

        return wrapper

    original_run_blocking = service_module.ServingService.run_blocking

    async def run_blocking(self: Any, fn: Callable[..., Any], *args: Any) -> Any:
        submitted = time.perf_counter()
        ended = [0.0]

        def on_worker(*inner_args: Any) -> Any:
            phases["to worker"].append(time.perf_counter() - submitted)
            try:
                return fn(*inner_args)
            finally:
                ended[0] = time.perf_counter()

        result = await original_run_blocking(self, on_worker, *args)
        phases["back to loop"].append(time.perf_counter() - ended[0])
        return result

    app.RestHandler.handle = timed_async("handle", app.RestHandler.handle)
    app.RestHandler._read_body = timed_async("read_body", app.RestHandler._read_body)
    json_codec.parse_predict_request = timed("parse", json_codec.parse_predict_request)
    json_codec.decode_predict_inputs = timed("decode", json_codec.decode_predict_inputs)
    json_codec.encode_predict_response = timed("encode", json_codec.encode_predict_response)
    original_predict = service_module.ServingService.predict

    def predict(self: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("entrypoint") != "REST":  # the gRPC half of the run
            return original_predict(self, *args, **kwargs)
        return timed("predict", original_predict)(self, *args, **kwargs)

    service_module.ServingService.predict = predict
    app.RestHandler._handle_v1 = timed_async("handle_v1", app.RestHandler._handle_v1)
    app.RestHandler._inference = timed_async("inference", app.RestHandler._inference)
    service_module.ServingService.run_blocking = run_blocking

    def report() -> None:
        for name in ("handle", "handle_v1", "inference", "read_body", "to worker", "parse", "decode", "predict", "encode", "back to loop"):
            values = sorted(phases.get(name, [])[len(phases.get(name, [])) // 5:])
            if values:
                print(f"PHASE {name:12s} n={len(values):5d} p50={values[len(values) // 2] * 1e3:.3f} ms", flush=True)

    atexit.register(report)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    from servable.server import main

    return main(argv)


def _p50(values: list[float]) -> float:
    ordered = sorted(values[len(values) // 5:])
    return ordered[len(ordered) // 2] * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)

    import grpc
    import numpy as np
    import orjson
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from benchmarks.procs import Child, free_port, tfs_version_states
    from servable.tf.testing_models import export_mlp

    rows = np.random.default_rng(0).random((32, 784), dtype=np.float32)
    body = orjson.dumps({"instances": rows.tolist()})
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(rows))
    with tempfile.TemporaryDirectory(prefix="rest-phases-") as directory:
        tmp = pathlib.Path(directory)
        export_mlp(str(tmp / "mnist" / "1"))
        grpc_port, rest_port = free_port(), free_port()
        child = Child("servable", [sys.executable, __file__, "--serve", f"--port={grpc_port}",
                                   f"--rest_api_port={rest_port}", "--grpc_address=127.0.0.1",
                                   "--rest_api_address=127.0.0.1", "--model_name=mnist",
                                   f"--model_base_path={tmp / 'mnist'}", "--log_level=warning"],
                      tmp / "server.log", cwd=str(ROOT))
        try:
            child.wait_ready(lambda: tfs_version_states(rest_port, "mnist").get(1) == "AVAILABLE", timeout=180)
            connection = http.client.HTTPConnection("127.0.0.1", rest_port)
            rest: list[float] = []
            deadline = time.monotonic() + args.seconds
            while time.monotonic() < deadline:
                start = time.perf_counter()
                connection.request("POST", "/v1/models/mnist:predict", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                orjson.loads(response.read())
                rest.append(time.perf_counter() - start)
                if response.status != 200:
                    raise RuntimeError(f"REST answered {response.status}")
            channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            over_grpc: list[float] = []
            deadline = time.monotonic() + args.seconds
            while time.monotonic() < deadline:
                start = time.perf_counter()
                tf.make_ndarray(stub.Predict(request, 30).outputs["scores"])
                over_grpc.append(time.perf_counter() - start)
            channel.close()
        finally:
            child.stop()
        phases = [line for line in child.log.read_text().splitlines() if line.startswith("PHASE ")]
    print(f"command: .venv/bin/python benchmarks/rest_phases.py {' '.join(argv or sys.argv[1:])}".rstrip())
    print(f"client   REST p50 {_p50(rest):.3f} ms ({len(rest)} requests, body {len(body)} bytes)")
    print(f"client   gRPC p50 {_p50(over_grpc):.3f} ms ({len(over_grpc)} requests)")
    print(f"ratio REST/gRPC p50 {_p50(rest) / _p50(over_grpc):.2f}")
    print("server phases of the REST requests:")
    for line in phases:
        print("  " + line.removeprefix("PHASE "))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        sys.exit(_serve(sys.argv[2:]))
    sys.exit(main())
