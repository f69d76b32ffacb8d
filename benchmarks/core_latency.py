"""Hot-swap pickup time and gRPC Predict latency for half_plus_two (issue 2's note).

    .venv/bin/python -m benchmarks.core_latency [--swaps 10] [--requests 2000]

Pickup = time from a version folder becoming complete (renamed into place) to the
version being AVAILABLE, minus the load itself (LOADING -> AVAILABLE). Latency = one
client thread calling Predict with the official client on loopback, p50/p99, next to
the raw in-process model call (the floor).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()

    import grpc
    import numpy as np
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from servable.config.model_config import ModelConfig
    from servable.core.ids import ServableId
    from servable.core.states import ManagerState
    from servable.grpc_api.server import GrpcOptions
    from servable.model_server import ModelServer, ServerSettings
    from servable.server import default_loader_factories
    from servable.serving.server_core import CoreOptions
    from servable.tf.testing_models import export_half_plus_two

    work = tempfile.mkdtemp(prefix="servable-bench-")
    export = os.path.join(work, "export")
    export_half_plus_two(export)
    base = os.path.join(work, "models", "hp2")
    os.makedirs(base)
    shutil.copytree(export, os.path.join(base, "1"))
    settings = ServerSettings(
        models=[ModelConfig("hp2", base)],
        core=CoreOptions(file_system_poll_wait_seconds=1.0),
        grpc=GrpcOptions(address="127.0.0.1", port=0),
        rest_port=None,
        loader_factories=default_loader_factories(),
    )
    server = ModelServer(settings)
    server.start_in_thread()
    try:
        monitor = server.core.monitor
        pickups, loads = [], []
        for version in range(2, 2 + args.swaps):
            staging = os.path.join(base, f".incoming-{version}")
            shutil.copytree(export, staging)
            os.rename(staging, os.path.join(base, str(version)))
            complete = time.time()
            state = monitor.wait_for_state(ServableId("hp2", version), ManagerState.AVAILABLE, timeout=30)
            if state is None:
                raise SystemExit(f"version {version} did not become AVAILABLE")
            load_seconds = _load_seconds(state.reason)
            pickups.append(state.timestamp - complete - load_seconds)
            loads.append(load_seconds)
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "hp2"
        request.inputs["x"].dtype = 1
        request.inputs["x"].tensor_shape.dim.add().size = 3
        request.inputs["x"].float_val.extend([1.0, 2.0, 5.0])
        for _ in range(100):
            stub.Predict(request, timeout=10)
        grpc_times = []
        for _ in range(args.requests):
            start = time.perf_counter()
            stub.Predict(request, timeout=10)
            grpc_times.append(time.perf_counter() - start)
        with server.core.manager.get_handle(_latest("hp2")) as handle:
            x = np.array([1.0, 2.0, 5.0], dtype=np.float32)
            raw = []
            for _ in range(args.requests):
                start = time.perf_counter()
                handle.servable.predict("serving_default", {"x": x}, ())
                raw.append(time.perf_counter() - start)
        channel.close()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    ms = lambda values, q: 1e3 * statistics.quantiles(values, n=100)[q - 1]  # noqa: E731
    print(f"hot-swap pickup (complete -> AVAILABLE minus load), {args.swaps} swaps: "
          f"median {1e3 * statistics.median(pickups):.1f} ms, max {1e3 * max(pickups):.1f} ms "
          f"(load itself: median {1e3 * statistics.median(loads):.1f} ms)")
    print(f"gRPC Predict half_plus_two, 1 client, {args.requests} requests: p50 {ms(grpc_times, 50):.3f} ms, "
          f"p99 {ms(grpc_times, 99):.3f} ms")
    print(f"raw in-process call (floor): p50 {ms(raw, 50):.3f} ms; gRPC p50 / floor p50 = "
          f"{ms(grpc_times, 50) / ms(raw, 50):.2f}")


def _load_seconds(reason: str) -> float:
    """The manager's AVAILABLE reason reads 'loaded in 0.123s'."""
    try:
        return float(reason.rsplit(" ", 1)[-1].rstrip("s"))
    except ValueError:
        return 0.0


def _latest(name: str):  # type: ignore[no-untyped-def]
    from servable.core.ids import ServableRequest

    return ServableRequest.latest(name)


if __name__ == "__main__":
    main()
