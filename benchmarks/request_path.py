"""Request-path cost of a servable server (issues 2, 3, 5, 8; results in docs/performance.md).

    .venv/bin/python benchmarks/request_path.py            # about 1-2 minutes on 2 cores
    .venv/bin/python benchmarks/request_path.py --quick    # fewer requests, fewer loads

Every server runs in its own subprocess; this process is the client (official
``tensorflow_serving.apis`` stubs, one kept-alive channel, concurrency 1, ``http.client``
for REST). Measured, p50 in ms:

- ``echo``: a bare ``grpc.aio`` server with the same PredictionService protos that answers a
  fixed PredictResponse (the floor of Python gRPC on this machine);
- ``raw``: ``SavedModelServable.predict`` of half_plus_two in-process (the model call
  the server cannot avoid), plus the public ``signatures[k](x=tf.constant)`` call;
- ``grpc`` / ``rest``: half_plus_two Predict through ``python -m servable.server``;
- ``grpc_32x784`` / ``rest_32x784``: the MLP with a 32x784 float batch (REST body pre-encoded);
- ``first_after_load``: a new version is copied next to the served one; once GetModelStatus
  reports it AVAILABLE, the first Predict naming that version is timed against the
  steady-state p50 (median over several loads), with and without ``--enable_batching``,
  and against one request on the same warm version after the client idled 0.2 s (what
  idleness alone costs on this VM: ``benchmarks/idle_gap.py``).

Goals (issue 8): grpc <= 1.25 x (echo + raw); rest_32x784 <= 1.5 x grpc_32x784;
first_after_load <= 2 x steady. Prints one JSON report on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _p50_ms(fn: Callable[[], Any], n: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1e3, 4)


def _interleaved(paths: dict[str, Callable[[], Any]], n: int, rounds: int = 5) -> dict[str, float]:
    """p50 ms per path, in ``rounds`` interleaved slices so machine noise hits all alike."""
    for fn in paths.values():
        for _ in range(50):
            fn()
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, fn in paths.items():
            for _ in range(max(1, n // rounds)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {name: round(statistics.median(v) * 1e3, 4) for name, v in times.items()}


# ----------------------------------------------------------------------------- children

def echo_server(port: int) -> None:
    """A bare grpc.aio PredictionService answering a fixed response (run as a child)."""
    import asyncio

    import grpc
    import numpy as np

    from servable._proto.tensorflow_serving.apis import predict_pb2
    from servable.tf.tensors import ndarray_to_tensor_proto

    response = predict_pb2.PredictResponse()
    response.model_spec.name = "half_plus_two"
    response.model_spec.version.value = 1
    response.model_spec.signature_name = "serving_default"
    ndarray_to_tensor_proto(np.array([2.5], np.float32), proto=response.outputs["y"])

    async def predict(request: Any, context: Any) -> Any:
        return response

    async def serve() -> None:
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(
            predict, request_deserializer=predict_pb2.PredictRequest.FromString,
            response_serializer=predict_pb2.PredictResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "tensorflow.serving.PredictionService", {"Predict": handler})])
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    asyncio.run(serve())


def raw_call(model_dir: str, n: int) -> None:
    """In-process model call p50 (run as a child so TF state is not shared with the client)."""
    import numpy as np
    import tensorflow as tf

    from servable.tf.saved_model import SavedModelLoader

    loader = SavedModelLoader(model_dir)
    loader.load()
    servable = loader.servable()
    x = np.array([1.0], np.float32)
    loaded = tf.saved_model.load(model_dir)
    fn = loaded.signatures["serving_default"]
    result = _interleaved({
        "servable_predict": lambda: servable.predict("serving_default", {"x": x}, ()),
        "public_signature": lambda: fn(x=tf.constant(x))["y"].numpy(),
    }, n)
    print(json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- client side

class Server:
    """``python -m servable.server`` in a subprocess, gRPC and REST on loopback."""

    def __init__(self, name: str, base_path: str, extra: list[str] = ()) -> None:
        self.name = name
        self.port = _free_port()
        self.rest_port = _free_port()
        argv = [sys.executable, "-m", "servable.server", f"--port={self.port}", "--grpc_address=127.0.0.1",
                f"--rest_api_port={self.rest_port}", "--rest_api_address=127.0.0.1",
                f"--model_name={name}", f"--model_base_path={base_path}", *extra]
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_stub = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def wait_available(self, version: int | None = None, timeout: float = 120.0) -> None:
        import grpc
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.name
        deadline = time.monotonic() + timeout
        while True:
            try:
                states = self.model_stub.GetModelStatus(request, timeout=5).model_version_status
                if any(s.state == 30 and (version is None or s.version == version) for s in states):
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"server did not make {self.name} v{version} available")
            time.sleep(0.01)

    def close(self) -> None:
        self.channel.close()
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _predict_request(name: str, alias: str, array: Any, version: int | None = None) -> Any:
    from tensorflow_serving.apis import predict_pb2

    from servable.tf.tensors import ndarray_to_tensor_proto

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    request.inputs[alias].ParseFromString(ndarray_to_tensor_proto(array).SerializeToString())
    return request


def _rest_caller(port: int, path: str, body: bytes) -> Callable[[], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/json"}

    def call() -> bytes:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(data.decode())
        return data

    return call


def measure_echo(n: int) -> float:
    import numpy as np
    from tensorflow_serving.apis import prediction_service_pb2_grpc
    import grpc

    port = _free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--echo-server", str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        proc.stdout.readline()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = _predict_request("half_plus_two", "x", np.array([1.0], np.float32))
            return _p50_ms(lambda: stub.Predict(request, timeout=10), n, 200)
    finally:
        proc.terminate()
        proc.wait(20)


def measure_server(hp2_base: str, mlp_base: str, n: int) -> dict[str, float]:
    import numpy as np
    import orjson

    out: dict[str, float] = {}
    server = Server("half_plus_two", hp2_base)
    try:
        server.wait_available()
        request = _predict_request("half_plus_two", "x", np.array([1.0], np.float32))
        rest = _rest_caller(server.rest_port, "/v1/models/half_plus_two:predict", b'{"instances": [1.0]}')
        out.update(_interleaved({"grpc": lambda: server.stub.Predict(request, timeout=10), "rest": rest}, n))
    finally:
        server.close()
    server = Server("mlp", mlp_base)
    try:
        server.wait_available()
        images = np.random.default_rng(0).random((32, 784), dtype=np.float32)
        request = _predict_request("mlp", "images", images)
        rest = _rest_caller(server.rest_port, "/v1/models/mlp:predict", orjson.dumps({"instances": images.tolist()}))
        result = _interleaved({"grpc_32x784": lambda: server.stub.Predict(request, timeout=10), "rest_32x784": rest},
                              max(100, n // 4))
        out.update(result)
    finally:
        server.close()
    return out


IDLE_CONTROL_S = 0.2  # any gap of 10 ms or more costs the same (benchmarks/idle_gap.py)


def measure_first_after_load(export: str, work: str, loads: int, n: int, extra: list[str], settle: float = 0.0) -> dict[str, Any]:
    """Median over ``loads`` new versions of (first Predict on the new version) / steady p50.

    Also the idle control: after the steady run, the client waits ``IDLE_CONTROL_S`` (or
    ``settle`` when larger) and times one Predict on the same, long-warm version. The first
    request follows idleness too (the load and warmup ran on another thread, then the
    client polled status), so ``ratio_over_idle_median`` is what a load adds on its own,
    and ``ratio_median`` is the issue's ratio against back-to-back requests.
    """
    import numpy as np

    base = os.path.join(work, f"hp2_first_{len(extra)}")
    shutil.copytree(export, os.path.join(base, "1"))
    server = Server("half_plus_two", base, ["--file_system_poll_wait_seconds=1", *extra])
    x = np.array([1.0], np.float32)
    firsts, steadies, idles = [], [], []
    try:
        server.wait_available(1)
        for version in range(2, loads + 2):
            staging = os.path.join(base, f".incoming-{version}")
            shutil.copytree(export, staging)
            os.rename(staging, os.path.join(base, str(version)))
            server.wait_available(version)
            if settle:  # diagnostics: let the unload of the previous version finish first
                time.sleep(settle)
            request = _predict_request("half_plus_two", "x", x, version)
            t0 = time.perf_counter()
            server.stub.Predict(request, timeout=10)
            firsts.append((time.perf_counter() - t0) * 1e3)
            steadies.append(_p50_ms(lambda: server.stub.Predict(request, timeout=10), n, 20))
            time.sleep(max(settle, IDLE_CONTROL_S))
            t0 = time.perf_counter()
            server.stub.Predict(request, timeout=10)
            idles.append((time.perf_counter() - t0) * 1e3)
    finally:
        server.close()
    ratios = [f / s for f, s in zip(firsts, steadies)]
    return {"first_ms": [round(v, 3) for v in firsts], "steady_p50_ms": steadies,
            "after_idle_ms": [round(v, 3) for v in idles],
            "ratio_median": round(statistics.median(ratios), 2),
            "ratio_over_idle_median": round(statistics.median(f / i for f, i in zip(firsts, idles)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--echo-server", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--raw", default="", help=argparse.SUPPRESS)
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds to wait after AVAILABLE before the first request (diagnostics)")
    parser.add_argument("--skip", default="", help="comma list of: echo,raw,server,first")
    args = parser.parse_args()
    n = 600 if args.quick else 3000
    if args.echo_server:
        echo_server(args.echo_server)
        return
    if args.raw:
        raw_call(args.raw, n)
        return
    skip = set(filter(None, args.skip.split(",")))

    from servable.tf.testing_models import export_half_plus_two, export_mlp

    work = tempfile.mkdtemp(prefix="request_path_")
    report: dict[str, Any] = {"command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
                              "load_average": os.getloadavg()}
    try:
        export = export_half_plus_two(os.path.join(work, "export_hp2"))
        hp2_base = os.path.join(work, "hp2")
        shutil.copytree(export, os.path.join(hp2_base, "1"))
        mlp_base = os.path.join(work, "mlp")
        export_mlp(os.path.join(mlp_base, "1"))
        if "echo" not in skip:
            report["echo_p50_ms"] = measure_echo(n)
            print(f"echo {report['echo_p50_ms']}", file=sys.stderr)
        if "raw" not in skip:
            out = subprocess.run([sys.executable, __file__, "--raw", export] + (["--quick"] if args.quick else []),
                                 cwd=ROOT, check=True, capture_output=True, text=True).stdout
            report["raw_p50_ms"] = json.loads(out.strip().splitlines()[-1])
            print(f"raw {report['raw_p50_ms']}", file=sys.stderr)
        if "server" not in skip:
            report["server_p50_ms"] = measure_server(hp2_base, mlp_base, n)
            print(f"server {report['server_p50_ms']}", file=sys.stderr)
        if "first" not in skip:
            loads = 3 if args.quick else 5
            report["first_after_load"] = {
                "batching_off": measure_first_after_load(export, work, loads, 200, [], args.settle),
                "batching_on": measure_first_after_load(export, work, loads, 200, ["--enable_batching"], args.settle),
            }
            print(f"first {report['first_after_load']}", file=sys.stderr)
        goals: dict[str, Any] = {}
        if {"echo_p50_ms", "raw_p50_ms", "server_p50_ms"} <= report.keys():
            floor = report["echo_p50_ms"] + report["raw_p50_ms"]["servable_predict"]
            goals["grpc_over_echo_plus_raw"] = round(report["server_p50_ms"]["grpc"] / floor, 3)
        if "server_p50_ms" in report:
            s = report["server_p50_ms"]
            goals["rest_over_grpc_32x784"] = round(s["rest_32x784"] / s["grpc_32x784"], 3)
            goals["rest_over_grpc_half_plus_two"] = round(s["rest"] / s["grpc"], 3)
        if "first_after_load" in report:
            goals["first_over_steady"] = {k: v["ratio_median"] for k, v in report["first_after_load"].items()}
            goals["first_over_idle_control"] = {k: v["ratio_over_idle_median"] for k, v in report["first_after_load"].items()}
        report["goals"] = goals
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
