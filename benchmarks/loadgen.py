"""Python closed-loop load client: what a Python caller sees end to end.

Run as a script by the orchestrator, with the python of whichever venv holds the stubs the
protocol needs (the main venv for TF Serving's protos, a peer venv for KServe V2 gRPC), so
it imports nothing from the ``benchmarks`` package::

    python benchmarks/loadgen.py --protocol tfs-grpc --target 127.0.0.1:8500 --model mnist \
        --input images --shape 1,784 --concurrency 1,16,64 --duration 4 --warmup 1

Protocols:
- ``tfs-grpc``: ``tensorflow.serving.PredictionService/Predict`` (official ``tensorflow_serving.apis``
  stubs; ``tensor_content`` encoding as the official client's ``tf.make_tensor_proto`` makes);
- ``tfs-rest``: ``POST /v1/models/{m}:predict`` with TF Serving's row format ``{"instances": ...}``
  (also KServe V1 and the naive server); strings are sent as ``{"b64": ...}``;
- ``v2-rest``: ``POST /v2/models/{m}/infer`` (Open Inference Protocol JSON);
- ``v2-grpc``: ``inference.GRPCInferenceService/ModelInfer`` (stubs from the kserve or mlserver wheel).

Closed loop: exactly C requests are in flight; a request that starts during the warm-up is
not counted; the run stops at ``duration`` or after ``--max-requests``. gRPC uses one channel
and future callbacks (the cheapest Python client); REST uses C threads with keep-alive
``http.client`` connections. ``--dump-body`` writes the encoded request (gRPC-framed for gRPC)
for the C load generators and exits. Output: one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import struct
import sys
import threading
import time
from collections import Counter
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _proc_cpu_s(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _rows_payload(args: argparse.Namespace) -> Any:
    """The request tensor as a numpy array (float32 random, or JPEG bytes replicated)."""
    import numpy as np

    shape = tuple(int(d) for d in args.shape.split(","))
    if args.dtype == "string":
        data = open(args.bytes_file, "rb").read()
        return np.array([data] * shape[0], dtype=object)
    return np.random.default_rng(0).random(shape, dtype=np.float32)


# ---------------------------------------------------------------- request builders


def build_tfs_grpc(args: argparse.Namespace, array: Any) -> tuple[bytes, Callable[[bytes], dict]]:
    from tensorflow_serving.apis import predict_pb2
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = args.model
    if args.signature:
        request.model_spec.signature_name = args.signature
    tensor = tensor_pb2.TensorProto(tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape]))
    if args.dtype == "string":
        tensor.dtype = types_pb2.DT_STRING
        tensor.string_val.extend(list(array.ravel()))
    else:
        tensor.dtype = types_pb2.DT_FLOAT
        tensor.tensor_content = array.tobytes()
    request.inputs[args.input].CopyFrom(tensor)

    def parse(data: bytes) -> dict:
        response = predict_pb2.PredictResponse.FromString(data)
        return {"version": response.model_spec.version.value, "outputs": sorted(response.outputs)}

    return request.SerializeToString(), parse


def build_v2_grpc(args: argparse.Namespace, array: Any) -> tuple[bytes, Callable[[bytes], dict]]:
    pb2 = _v2_stubs()[0]
    request = pb2.ModelInferRequest(model_name=args.model)
    tensor = request.inputs.add(name=args.input, shape=list(array.shape))
    if args.dtype == "string":
        tensor.datatype = "BYTES"
        tensor.contents.bytes_contents.extend(list(array.ravel()))
    else:
        tensor.datatype = "FP32"
        request.raw_input_contents.append(array.tobytes())

    def parse(data: bytes) -> dict:
        response = pb2.ModelInferResponse.FromString(data)
        return {"version": response.model_version, "outputs": sorted(o.name for o in response.outputs)}

    return request.SerializeToString(), parse


def _v2_stubs() -> tuple[Any, str]:
    saved_argv, sys.argv = sys.argv, sys.argv[:1]  # importing kserve parses sys.argv
    try:
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb2
    except ImportError:
        from mlserver.grpc import dataplane_pb2 as pb2  # type: ignore[no-redef]
    finally:
        sys.argv = saved_argv
    return pb2, "/inference.GRPCInferenceService/ModelInfer"


def build_tfs_rest(args: argparse.Namespace, array: Any) -> tuple[bytes, Callable[[bytes], dict]]:
    if args.dtype == "string":
        instances: list = [{"b64": base64.b64encode(v).decode()} for v in array.ravel()]
    else:
        instances = array.tolist()
    body = json.dumps({"instances": instances}).encode()

    def parse(data: bytes) -> dict:
        decoded = json.loads(data)
        if "predictions" not in decoded:
            raise ValueError(f"no predictions in {data[:200]!r}")
        return {"rows": len(decoded["predictions"])}

    return body, parse


def build_v2_rest(args: argparse.Namespace, array: Any) -> tuple[bytes, Callable[[bytes], dict]]:
    if args.dtype == "string":
        raise SystemExit("v2-rest: string inputs are not benchmarked")
    body = json.dumps({"inputs": [{"name": args.input, "shape": list(array.shape), "datatype": "FP32",
                                   "data": array.ravel().tolist()}]}).encode()

    def parse(data: bytes) -> dict:
        decoded = json.loads(data)
        if "outputs" not in decoded:
            raise ValueError(f"no outputs in {data[:200]!r}")
        return {"outputs": sorted(o["name"] for o in decoded["outputs"])}

    return body, parse


BUILDERS = {"tfs-grpc": build_tfs_grpc, "v2-grpc": build_v2_grpc, "tfs-rest": build_tfs_rest, "v2-rest": build_v2_rest}


def rest_path(args: argparse.Namespace) -> str:
    if args.protocol == "v2-rest":
        return f"/v2/models/{args.model}/infer"
    return f"/v1/models/{args.model}:predict"


def grpc_method(args: argparse.Namespace) -> str:
    if args.protocol == "v2-grpc":
        return "/inference.GRPCInferenceService/ModelInfer"
    return "/tensorflow.serving.PredictionService/Predict"


# ---------------------------------------------------------------- closed loops


class Recorder:
    """Collects latencies of requests that started after the warm-up (thread-safe)."""

    def __init__(self, measure_from: float, parse: Callable[[bytes], dict] | None) -> None:
        self.measure_from = measure_from
        self.latencies: list[float] = []
        self.errors = 0
        self.error_samples: list[str] = []
        self.versions: Counter = Counter()
        self.parse = parse
        self.lock = threading.Lock()

    def done(self, started: float, ok: bool, detail: Any = None) -> None:
        now = time.perf_counter()
        if started < self.measure_from:
            return
        with self.lock:
            if ok:
                self.latencies.append(now - started)
                if self.parse is not None and detail is not None:
                    self.versions[str(self.parse(detail).get("version"))] += 1
            else:
                self.errors += 1
                if len(self.error_samples) < 5:
                    self.error_samples.append(str(detail)[:300])


def run_grpc(args: argparse.Namespace, body: bytes, concurrency: int, rec: Recorder, end: float, max_requests: int) -> None:
    import grpc

    channel = grpc.insecure_channel(args.target, options=[("grpc.max_receive_message_length", 1 << 30),
                                                          ("grpc.max_send_message_length", 1 << 30)])
    call = channel.unary_unary(grpc_method(args), request_serializer=None, response_deserializer=None)
    finished = threading.Semaphore(0)
    issued = [0]
    issue_lock = threading.Lock()

    def issue() -> None:
        with issue_lock:
            if time.perf_counter() >= end or issued[0] >= max_requests:
                finished.release()
                return
            issued[0] += 1
        started = time.perf_counter()
        future = call.future(body, timeout=args.timeout)

        def on_done(fut: Any, started: float = started) -> None:
            try:
                rec.done(started, True, fut.result() if rec.parse else None)
            except Exception as exc:  # grpc.RpcError and parse errors: counted, not raised
                code = getattr(exc, "code", lambda: None)()
                rec.done(started, False, f"{code}: {getattr(exc, 'details', lambda: exc)()}")
            issue()

        future.add_done_callback(on_done)

    for _ in range(concurrency):
        issue()
    for _ in range(concurrency):
        finished.acquire(timeout=max(1.0, end - time.perf_counter() + args.timeout + 5))
    channel.close()


def run_rest(args: argparse.Namespace, body: bytes, concurrency: int, rec: Recorder, end: float, max_requests: int) -> None:
    host, port = args.target.rsplit(":", 1)
    path = rest_path(args)
    headers = {"Content-Type": "application/json"}
    counter = iter(range(max_requests))
    counter_lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=args.timeout)
        while time.perf_counter() < end:
            with counter_lock:
                if next(counter, None) is None:
                    break
            started = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                if response.status == 200:
                    rec.done(started, True, data if rec.parse else None)
                else:
                    rec.done(started, False, f"HTTP {response.status}: {data[:200]!r}")
            except Exception as exc:  # connection errors: counted, then reconnect
                rec.done(started, False, repr(exc))
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=args.timeout)
        conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, end - time.perf_counter() + args.timeout + 5))


def check_once(args: argparse.Namespace, body: bytes, parse: Callable[[bytes], dict]) -> dict:
    """One request whose answer is parsed; raises with the server's message on failure."""
    if args.protocol.endswith("grpc"):
        import grpc

        with grpc.insecure_channel(args.target) as channel:
            call = channel.unary_unary(grpc_method(args), request_serializer=None, response_deserializer=None)
            return parse(call(body, timeout=max(args.timeout, 30)))
    host, port = args.target.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=max(args.timeout, 30))
    conn.request("POST", rest_path(args), body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
    return parse(data)


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def measure(args: argparse.Namespace, body: bytes, parse: Callable[[bytes], dict], concurrency: int, rows: int) -> dict:
    runner = run_grpc if args.protocol.endswith("grpc") else run_rest
    start = time.perf_counter()
    rec = Recorder(start + args.warmup, parse if args.track_versions else None)
    end = start + args.warmup + args.duration
    server0 = _proc_cpu_s(args.server_pid) if args.server_pid else None
    cpu0 = time.process_time()
    # CPU is read over the whole run, warm-up included (cores = CPU seconds / wall seconds).
    runner(args, body, concurrency, rec, end, args.max_requests)
    wall = time.perf_counter() - rec.measure_from
    client_cpu = time.process_time() - cpu0
    server1 = _proc_cpu_s(args.server_pid) if args.server_pid else None
    ordered = sorted(rec.latencies)
    n = len(ordered)
    total_wall = time.perf_counter() - start
    result = {
        "concurrency": concurrency, "rows_per_request": rows, "requests": n, "errors": rec.errors,
        "error_samples": rec.error_samples, "wall_s": round(wall, 3),
        "req_per_s": n / wall if wall > 0 else 0.0, "rows_per_s": n * rows / wall if wall > 0 else 0.0,
        "p50_ms": _percentile(ordered, 50) * 1e3, "p90_ms": _percentile(ordered, 90) * 1e3,
        "p99_ms": _percentile(ordered, 99) * 1e3,
        "mean_ms": (sum(ordered) / n * 1e3) if n else float("nan"),
        "client_cores": client_cpu / total_wall if total_wall else 0.0,
    }
    if server0 is not None and server1 is not None:
        result["server_cores"] = (server1 - server0) / total_wall
    if args.track_versions:
        result["versions"] = dict(rec.versions)
    return result


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true",
                        help="read one job per stdin line (the same options as JSON keys), answer one JSON line each")
    parser.add_argument("--protocol", choices=sorted(BUILDERS))
    parser.add_argument("--target", help="host:port")
    parser.add_argument("--model")
    parser.add_argument("--signature", default="")
    parser.add_argument("--input")
    parser.add_argument("--shape", default="1,784")
    parser.add_argument("--dtype", choices=("float32", "string"), default="float32")
    parser.add_argument("--bytes-file", help="payload of each string element (e.g. a JPEG)")
    parser.add_argument("--concurrency", default="1")
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--track-versions", action="store_true", help="parse every answer, count model versions")
    parser.add_argument("--dump-body", help="write the encoded request (gRPC-framed for gRPC) here and exit")
    parser.add_argument("--no-check", action="store_true")
    return parser


def run_job(args: argparse.Namespace) -> dict[str, Any]:
    """One job: build the request, optionally dump it or check it, then one run per concurrency."""
    array = _rows_payload(args)
    body, parse = BUILDERS[args.protocol](args, array)
    if args.dump_body:
        framed = struct.pack(">BI", 0, len(body)) + body if args.protocol.endswith("grpc") else body
        with open(args.dump_body, "wb") as f:
            f.write(framed)
        return {"bytes": len(framed)}
    out: dict[str, Any] = {"protocol": args.protocol, "target": args.target, "model": args.model,
                           "shape": args.shape, "request_bytes": len(body), "runs": []}
    if not args.no_check:
        out["check"] = check_once(args, body, parse)
    for concurrency in (int(c) for c in str(args.concurrency).split(",")):
        out["runs"].append(measure(args, body, parse, concurrency, int(array.shape[0])))
    return out


def serve_jobs(parser: argparse.ArgumentParser) -> int:
    """Long-lived mode: imports are paid once per suite, not once per run."""
    defaults = vars(parser.parse_args([]))
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            job = {**defaults, **{k.replace("-", "_"): v for k, v in json.loads(line).items()}}
            result = run_job(argparse.Namespace(**job))
        except Exception as exc:  # reported to the orchestrator, which records the cell as failed
            result = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        print(json.dumps(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.serve:
        return serve_jobs(parser)
    if not (args.protocol and args.target and args.model and args.input):
        parser.error("--protocol, --target, --model and --input are required")
    print(json.dumps(run_job(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
