"""The servers compared in one run, how each starts, and which endpoints it offers.

Called by ``benchmarks.suite`` (main thread). A ``Contender`` starts one child process on
127.0.0.1 and returns a ``Running`` with its endpoints; the suite drives load at each
endpoint and then stops the child by its PID. Contenders (all wrap the same SavedModels):

- ``echo``: a bare grpc.aio PredictionService that echoes its inputs (transport floor);
- ``servable`` / ``servable+batching``: ``python -m servable.server`` with a model config
  file, TF Serving's flags (``--enable_batching --batching_parameters_file``);
- ``naive``: Flask + ``tf.saved_model.load`` (its own venv, TF shared from the main venv);
- ``kserve``: KServe's ModelServer, V1 REST and V2 gRPC (kserve venv);
- ``mlserver`` / ``mlserver+batching``: MLServer, V2 REST and gRPC, ``parallel_workers: 0``;
  the second with adaptive batching (``max_batch_size``, ``max_batch_time``).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from benchmarks import procs, venvs

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
PEERS_DIR = BENCH_DIR / "peers"
MAIN_PYTHON = str(REPO_DIR / ".venv" / "bin" / "python") if (REPO_DIR / ".venv" / "bin" / "python").exists() else sys.executable

# Server-side batching for servable, in TF Serving's BatchingParameters text format. Rows
# per batch up to 64 (two 32-row requests can share a call), a 1 ms window that servable
# only waits out when other requests are in flight, one batch thread (TF's own intra-op
# pool already uses both cores). Longer windows give the asyncio door bigger batches
# under load (docs/performance.md).
SERVABLE_BATCHING = """max_batch_size { value: 64 }
batch_timeout_micros { value: 1000 }
max_enqueued_batches { value: 1000 }
num_batch_threads { value: 1 }
"""
# MLServer's adaptive batching with the same window.
MLSERVER_BATCHING = {"max_batch_size": 64, "max_batch_time": 0.001}

PAYLOADS_ALL = ("mnist_b1", "mnist_b32", "jpeg_b1")
PAYLOADS_MNIST = ("mnist_b1", "mnist_b32")

GRPC_TFS = "/tensorflow.serving.PredictionService/Predict"
GRPC_V2 = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class Endpoint:
    """One protocol of one running contender."""

    row: str                 # table row label, e.g. "servable gRPC +batching"
    protocol: str            # loadgen protocol: tfs-grpc | tfs-rest | v2-grpc | v2-rest
    port: int
    client_venv: str         # "main" or a venvs.SPECS key: whose python runs loadgen
    payloads: tuple[str, ...]
    group: str               # "floor" | "servable" | "naive" | "peer"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Running:
    child: procs.Child
    ready_s: float
    endpoints: list[Endpoint] = field(default_factory=list)


@dataclass(frozen=True)
class Contender:
    key: str
    group: str
    start: Callable[["Context", list[str]], Running]
    needs_venv: str | None = None


@dataclass
class Context:
    """What every contender needs: the run's directory, exported models, timeouts."""

    workdir: Path
    models: dict
    ready_timeout: float = 180.0

    def log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def model_path(self, name: str) -> str:
        return self.models[name]["path"]

    def base_path(self, name: str) -> str:
        return self.models[name]["base_path"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", **extra})
    return env


def _tfs_ready(port: int, model: str) -> Callable[[], bool]:
    return lambda: "AVAILABLE" in procs.tfs_version_states(port, model).values()


# ---------------------------------------------------------------- echo


def start_echo(ctx: Context, model_names: list[str]) -> Running:
    port = procs.free_port()
    child = procs.Child("echo", [MAIN_PYTHON, str(PEERS_DIR / "echo_server.py"), str(port)], ctx.log("echo"), env=_env(),
                        cwd=str(ctx.workdir))
    ready = child.wait_ready(lambda: "LISTENING" in child.tail(4000), ctx.ready_timeout)
    return Running(child, ready, [Endpoint("echo gRPC (floor)", "tfs-grpc", port, "main", PAYLOADS_MNIST, "floor")])


# ---------------------------------------------------------------- servable


def servable_config(ctx: Context, model_names: list[str], base_paths: dict[str, str] | None = None) -> str:
    lines = ["model_config_list {"]
    for name in model_names:
        base = (base_paths or {}).get(name) or ctx.base_path(name)
        lines.append(f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" }}')
    lines.append("}")
    return "\n".join(lines) + "\n"


def servable_command(ctx: Context, name: str, model_names: list[str], grpc_port: int, rest_port: int,
                     batching: bool, base_paths: dict[str, str] | None = None, extra: list[str] | None = None) -> list[str]:
    conf = ctx.workdir / f"{name}.models.config"
    conf.write_text(servable_config(ctx, model_names, base_paths))
    cmd = [MAIN_PYTHON, "-m", "servable.server", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
           "--grpc_address=127.0.0.1", "--rest_api_address=127.0.0.1", f"--model_config_file={conf}"]
    if batching:
        params = ctx.workdir / f"{name}.batching.config"
        params.write_text(SERVABLE_BATCHING)
        cmd += ["--enable_batching", f"--batching_parameters_file={params}"]
    return cmd + (extra or [])


def _start_servable(ctx: Context, model_names: list[str], batching: bool) -> Running:
    name = "servable+batching" if batching else "servable"
    grpc_port, rest_port = procs.free_port(), procs.free_port()
    cmd = servable_command(ctx, name, model_names, grpc_port, rest_port, batching)
    child = procs.Child(name, cmd, ctx.log(name), env=_env(), cwd=str(REPO_DIR))
    ready = child.wait_ready(_tfs_ready(rest_port, model_names[0]), ctx.ready_timeout)
    # Every model must be AVAILABLE before load is driven, not only the first.
    for model in model_names[1:]:
        child.wait_ready(_tfs_ready(rest_port, model), ctx.ready_timeout)
    suffix = " +batching" if batching else ""
    return Running(child, ready, [
        Endpoint(f"servable gRPC{suffix}", "tfs-grpc", grpc_port, "main", PAYLOADS_ALL, "servable"),
        Endpoint(f"servable REST{suffix}", "tfs-rest", rest_port, "main", PAYLOADS_ALL, "servable"),
    ])


def start_servable(ctx: Context, model_names: list[str]) -> Running:
    return _start_servable(ctx, model_names, batching=False)


def start_servable_batching(ctx: Context, model_names: list[str]) -> Running:
    return _start_servable(ctx, model_names, batching=True)


# ---------------------------------------------------------------- naive Flask


def start_naive(ctx: Context, model_names: list[str]) -> Running:
    port = procs.free_port()
    python = str(venvs.SPECS["naive"].python)
    models = [f"{m}={ctx.model_path(m)}" for m in model_names]
    child = procs.Child("naive", [python, str(PEERS_DIR / "naive_flask.py"), str(port), *models], ctx.log("naive"), env=_env(),
                        cwd=str(ctx.workdir))
    ready = child.wait_ready(_tfs_ready(port, model_names[0]), ctx.ready_timeout)
    return Running(child, ready, [Endpoint("naive Flask REST", "tfs-rest", port, "main", PAYLOADS_ALL, "naive")])


# ---------------------------------------------------------------- KServe


def start_kserve(ctx: Context, model_names: list[str]) -> Running:
    http_port, grpc_port = procs.free_port(), procs.free_port()
    python = str(venvs.SPECS["kserve"].python)
    models = [f"{m}={ctx.model_path(m)}" for m in model_names]
    child = procs.Child("kserve", [python, str(PEERS_DIR / "kserve_server.py"), str(http_port), str(grpc_port), *models],
                        ctx.log("kserve"), env=_env(), cwd=str(ctx.workdir))

    def ready() -> bool:
        status, body = procs.http_get("127.0.0.1", http_port, f"/v1/models/{model_names[0]}")
        return status == 200 and json.loads(body).get("ready") is True

    ready_s = child.wait_ready(ready, ctx.ready_timeout)
    return Running(child, ready_s, [
        Endpoint("KServe V1 REST", "tfs-rest", http_port, "main", PAYLOADS_ALL, "peer"),
        Endpoint("KServe V2 gRPC", "v2-grpc", grpc_port, "kserve", PAYLOADS_MNIST, "peer"),
    ])


# ---------------------------------------------------------------- MLServer


def _start_mlserver(ctx: Context, model_names: list[str], batching: bool) -> Running:
    name = "mlserver+batching" if batching else "mlserver"
    http_port, grpc_port, metrics_port = procs.free_port(), procs.free_port(), procs.free_port()
    root = ctx.workdir / name
    root.mkdir(parents=True, exist_ok=True)
    (root / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port,
        "parallel_workers": 0, "load_models_at_startup": True}))
    for model in model_names:
        if model == "jpeg_mobilenet":
            continue  # V2 JSON cannot carry raw JPEG bytes without a custom codec: not benchmarked
        settings = {"name": model, "implementation": "mlserver_runtime.TFSavedModel",
                    "parameters": {"uri": ctx.model_path(model), "version": "1"}}
        if batching:
            settings.update(MLSERVER_BATCHING)
        (root / model).mkdir(exist_ok=True)
        (root / model / "model-settings.json").write_text(json.dumps(settings))
    mlserver = str(venvs.SPECS["mlserver"].path / "bin" / "mlserver")
    child = procs.Child(name, [mlserver, "start", str(root)], ctx.log(name), env=_env(PYTHONPATH=str(PEERS_DIR)),
                        cwd=str(ctx.workdir))
    first = next(m for m in model_names if m != "jpeg_mobilenet")
    ready_s = child.wait_ready(lambda: procs.http_get("127.0.0.1", http_port, f"/v2/models/{first}/ready")[0] == 200,
                               ctx.ready_timeout)
    suffix = " +adaptive batching" if batching else ""
    return Running(child, ready_s, [
        Endpoint(f"MLServer V2 REST{suffix}", "v2-rest", http_port, "main", PAYLOADS_MNIST, "peer"),
        Endpoint(f"MLServer V2 gRPC{suffix}", "v2-grpc", grpc_port, "mlserver", PAYLOADS_MNIST, "peer"),
    ])


def start_mlserver(ctx: Context, model_names: list[str]) -> Running:
    return _start_mlserver(ctx, model_names, batching=False)


def start_mlserver_batching(ctx: Context, model_names: list[str]) -> Running:
    return _start_mlserver(ctx, model_names, batching=True)


CONTENDERS: list[Contender] = [
    Contender("echo", "floor", start_echo),
    Contender("servable", "servable", start_servable),
    Contender("servable+batching", "servable", start_servable_batching),
    Contender("naive", "naive", start_naive, needs_venv="naive"),
    Contender("kserve", "peer", start_kserve, needs_venv="kserve"),
    Contender("mlserver", "peer", start_mlserver, needs_venv="mlserver"),
    Contender("mlserver+batching", "peer", start_mlserver_batching, needs_venv="mlserver"),
]
