"""REST vs gRPC: latency of one :predict of a 32x784 float32 batch on the MNIST-sized MLP.

Run: .venv/bin/python benchmarks/rest_vs_grpc.py [--requests N] [--warmup N]
Not a test. Exports ``servable.tf.testing_models.export_mlp`` to a temp dir, starts one
in-process server (gRPC and REST on loopback), then times N sequential requests with
each client on one kept-alive connection: REST posts a pre-encoded JSON ``instances``
body with ``http.client`` and parses the reply with orjson; gRPC sends a pre-built
``PredictRequest`` with the official ``tensorflow_serving.apis`` stub and converts the
reply with ``tf.make_ndarray``. Prints per-protocol p50/mean in ms, REST/gRPC ratios,
and the command line.
"""

from __future__ import annotations

import argparse
import http.client
import os
import pathlib
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402


def _start_server(model_dir: str):
    from servable.config.model_config import ModelConfig
    from servable.grpc_api.server import GrpcOptions
    from servable.model_server import ModelServer, ServerSettings
    from servable.rest.app import RestOptions
    from servable.server import default_loader_factories
    from servable.serving.server_core import CoreOptions
    from servable.sources.version_policy import Latest

    settings = ServerSettings(
        models=[ModelConfig(name="mlp", base_path=model_dir, platform="tensorflow", version_policy=Latest(1), version_labels={})],
        core=CoreOptions(file_system_poll_wait_seconds=0),
        grpc=GrpcOptions(address="127.0.0.1", port=0),
        rest_port=0,
        rest_address="127.0.0.1",
        rest_options=RestOptions(),
        loader_factories=default_loader_factories(),
    )
    return ModelServer(settings).start_in_thread()


def _time(fn, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per protocol")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests per protocol first")
    args = parser.parse_args()

    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from servable.tf.testing_models import export_mlp

    images = np.random.default_rng(0).random((32, 784), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        export_mlp(os.path.join(tmp, "mlp", "1"))
        server = _start_server(os.path.join(tmp, "mlp"))
        try:
            rest_body = orjson.dumps({"instances": images.tolist()})
            connection = http.client.HTTPConnection("127.0.0.1", server.rest_port)
            headers = {"Content-Type": "application/json"}

            def rest_call() -> np.ndarray:
                connection.request("POST", "/v1/models/mlp:predict", body=rest_body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                if response.status != 200:
                    raise RuntimeError(data.decode())
                return np.asarray(orjson.loads(data)["predictions"], dtype=np.float32)

            channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "mlp"
            request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))

            def grpc_call() -> np.ndarray:
                return tf.make_ndarray(stub.Predict(request, timeout=30).outputs["scores"])

            if not np.array_equal(rest_call(), grpc_call()):
                raise SystemExit("REST and gRPC disagree")
            _time(rest_call, args.warmup)
            _time(grpc_call, args.warmup)
            rest = _time(rest_call, args.requests)
            grpc_times = _time(grpc_call, args.requests)
            channel.close()
            connection.close()
        finally:
            server.stop()

    def ms(values: list[float]) -> tuple[float, float]:
        return statistics.median(values) * 1e3, statistics.fmean(values) * 1e3

    def tail(values: list[float]) -> str:
        ordered = sorted(values)
        return f"p90 {ordered[int(len(ordered) * 0.9)] * 1e3:7.3f} ms   max {ordered[-1] * 1e3:7.3f} ms"

    rest_p50, rest_mean = ms(rest)
    grpc_p50, grpc_mean = ms(grpc_times)
    print(f"command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(f"payload: 32x784 float32 :predict on the MLP, {args.requests} sequential requests per protocol")
    print(f"REST  p50 {rest_p50:8.3f} ms   mean {rest_mean:8.3f} ms   {tail(rest)}   (request body {len(rest_body)} bytes)")
    print(f"gRPC  p50 {grpc_p50:8.3f} ms   mean {grpc_mean:8.3f} ms   {tail(grpc_times)}   (request {request.ByteSize()} bytes)")
    print(f"ratio REST/gRPC: p50 {rest_p50 / grpc_p50:.2f}x   mean {rest_mean / grpc_mean:.2f}x")


if __name__ == "__main__":
    main()
