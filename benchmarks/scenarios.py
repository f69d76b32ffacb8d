"""The scenarios: the load grid, hot swap under load, load/unload memory, start-up time.

Each function runs on the orchestrator's main thread, starts what it needs through
``benchmarks.contenders`` and stops it by PID before returning (also on error). Results
are plain dicts that ``benchmarks.report`` turns into tables.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import cload, contenders, procs
from benchmarks.clients import ClientPool
from benchmarks.contenders import Context, Contender, Endpoint

PAYLOADS = {
    "mnist_b1": {"model": "mnist", "input": "images", "shape": "1,784", "dtype": "float32", "rows": 1},
    "mnist_b32": {"model": "mnist", "input": "images", "shape": "32,784", "dtype": "float32", "rows": 32},
    "jpeg_b1": {"model": "jpeg_mobilenet", "input": "image_bytes", "shape": "1", "dtype": "string", "rows": 1},
}


@dataclass(frozen=True)
class Plan:
    """Durations and concurrencies; ``quick`` shrinks everything to fit in a test."""

    duration: float
    warmup: float
    concurrency: dict[str, tuple[int, ...]]   # payload -> python-client concurrencies
    c_concurrency: dict[str, tuple[int, ...]]  # payload -> C load generator concurrencies
    swaps: int
    swap_interval: float
    memory_cycles: int
    startup_repeats: int
    c_duration: float
    c_warmup: float


FULL = Plan(duration=4.0, warmup=1.0,
            concurrency={"mnist_b1": (1, 16, 64), "mnist_b32": (1, 16), "jpeg_b1": (1, 4)},
            c_concurrency={"mnist_b1": (1, 16, 64), "mnist_b32": (1, 16)},
            swaps=3, swap_interval=2.0, memory_cycles=50, startup_repeats=3, c_duration=4.0, c_warmup=1.0)
# startup_repeats=0: quick mode reports the grid's own start-to-ready times instead.
QUICK = Plan(duration=0.4, warmup=0.1,
             concurrency={"mnist_b1": (1, 16, 64), "mnist_b32": (16,), "jpeg_b1": (1,)},
             c_concurrency={"mnist_b1": (16,)},
             swaps=1, swap_interval=1.0, memory_cycles=5, startup_repeats=0, c_duration=1.0, c_warmup=0.0)


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _job(endpoint: Endpoint, payload: str, ctx: Context, **extra: Any) -> dict[str, Any]:
    spec = PAYLOADS[payload]
    job = {"protocol": endpoint.protocol, "target": endpoint.target, "model": spec["model"], "input": spec["input"],
           "shape": spec["shape"], "dtype": spec["dtype"]}
    if spec["dtype"] == "string":
        job["bytes_file"] = ctx.models["image"]["path"]
    job.update(extra)
    return job


# ---------------------------------------------------------------- the load grid


def run_grid(ctx: Context, plan: Plan, pool: ClientPool, selected: list[Contender], status: dict[str, dict],
             tools: dict[str, str | None]) -> list[dict]:
    """Start each contender in turn, drive every endpoint x payload x client, stop it."""
    cells: list[dict] = []
    bodies = ctx.workdir / "bodies"
    bodies.mkdir(exist_ok=True)
    for contender in selected:
        if status.get(contender.key, {}).get("status", "ok") != "ok":
            continue
        _log(f"grid: starting {contender.key}")
        running = None
        try:
            running = contender.start(ctx, ["mnist", "half_plus_two", "jpeg_mobilenet"])
            status[contender.key].update({"ready_s": running.ready_s, "pid": running.child.pid})
            for endpoint in running.endpoints:
                for payload, concurrencies in plan.concurrency.items():
                    if payload not in endpoint.payloads:
                        continue
                    cells += _python_cells(ctx, plan, pool, endpoint, payload, concurrencies, running.child.pid)
                    c_conc = plan.c_concurrency.get(payload, ())
                    if c_conc:
                        cells += _c_cells(ctx, plan, pool, endpoint, payload, c_conc, bodies, tools)
            if not running.child.alive():
                raise RuntimeError(f"{contender.key} died during the run: {running.child.tail()}")
        except Exception as exc:
            status[contender.key]["status"] = f"crashed: {type(exc).__name__}: {exc}"[:1500]
            _log(f"grid: {contender.key} FAILED: {exc}")
            traceback.print_exc()
        finally:
            if running is not None:
                code = running.child.stop()
                status[contender.key]["exit_code"] = code
    return cells


def _base_cell(endpoint: Endpoint, payload: str, client: str) -> dict[str, Any]:
    return {"row": endpoint.row, "group": endpoint.group, "protocol": endpoint.protocol, "payload": payload,
            "client": client}


def _python_cells(ctx: Context, plan: Plan, pool: ClientPool, endpoint: Endpoint, payload: str,
                  concurrencies: tuple[int, ...], server_pid: int) -> list[dict]:
    duration = plan.duration * (2 if payload == "jpeg_b1" else 1)
    job = _job(endpoint, payload, ctx, concurrency=",".join(map(str, concurrencies)), duration=duration,
               warmup=plan.warmup, server_pid=server_pid)
    timeout = 120 + len(concurrencies) * (duration + plan.warmup + 35)
    try:
        result = pool.get(endpoint.client_venv).run(job, timeout)
    except Exception as exc:
        _log(f"  {endpoint.row} {payload} python: FAILED {exc}")
        return [{**_base_cell(endpoint, payload, "python"), "concurrency": c, "failed": str(exc)[:500]} for c in concurrencies]
    out = []
    for run in result["runs"]:
        out.append({**_base_cell(endpoint, payload, "python"), **run, "request_bytes": result["request_bytes"]})
        _log(f"  {endpoint.row:<40} {payload:<9} python c={run['concurrency']:<3} {run['req_per_s']:8.0f} req/s "
             f"p50 {run['p50_ms']:7.2f} ms p99 {run['p99_ms']:7.2f} ms err {run['errors']}")
    return out


def _c_cells(ctx: Context, plan: Plan, pool: ClientPool, endpoint: Endpoint, payload: str,
             concurrencies: tuple[int, ...], bodies: Path, tools: dict[str, str | None]) -> list[dict]:
    grpc = endpoint.protocol.endswith("grpc")
    tool = "h2load" if grpc else "wrk"
    if not tools.get(tool):
        return [{**_base_cell(endpoint, payload, tool), "concurrency": c, "skipped": f"{tool} not installed"} for c in concurrencies]
    body = bodies / f"{endpoint.protocol}-{payload}.bin"
    out = []
    try:
        if not body.exists():
            pool.get(endpoint.client_venv).run(_job(endpoint, payload, ctx, dump_body=str(body)), 120)
    except Exception as exc:
        return [{**_base_cell(endpoint, payload, tool), "concurrency": c, "failed": f"body: {exc}"[:500]} for c in concurrencies]
    rows = PAYLOADS[payload]["rows"]
    for concurrency in concurrencies:
        try:
            if grpc:
                method = contenders.GRPC_V2 if endpoint.protocol == "v2-grpc" else contenders.GRPC_TFS
                run = cload.h2load_grpc(endpoint.target, method, body, concurrency, plan.c_duration, plan.c_warmup, rows)
            else:
                path = f"/v2/models/{PAYLOADS[payload]['model']}/infer" if endpoint.protocol == "v2-rest" \
                    else f"/v1/models/{PAYLOADS[payload]['model']}:predict"
                run = cload.wrk_rest(f"http://{endpoint.target}{path}", body, concurrency, plan.c_duration, plan.c_warmup, rows)
            out.append({**_base_cell(endpoint, payload, tool), **run})
            _log(f"  {endpoint.row:<40} {payload:<9} {tool:<6} c={concurrency:<3} {run['req_per_s']:8.0f} req/s "
                 f"p50 {run['p50_ms']:7.2f} ms p99 {run['p99_ms']:7.2f} ms err {run['errors']}")
        except Exception as exc:
            out.append({**_base_cell(endpoint, payload, tool), "concurrency": concurrency, "failed": str(exc)[:500]})
            _log(f"  {endpoint.row} {payload} {tool} c={concurrency}: FAILED {exc}")
    return out


# ---------------------------------------------------------------- hot swap and memory


def _new_version(base: Path, source: str, version: int) -> float:
    """Copy ``source`` to ``base/version`` atomically (copy, then rename); return when it is complete."""
    staging = base / f".staging-{version}"
    shutil.copytree(source, staging)
    staging.rename(base / str(version))
    return time.monotonic()


def _wait_states(port: int, model: str, predicate: Any, timeout: float, interval: float = 0.002) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate(procs.tfs_version_states(port, model)):
            return time.monotonic()
        time.sleep(interval)
    return None


def _start_swap_server(ctx: Context, name: str, base: Path) -> tuple[procs.Child, int, int]:
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    _new_version(base, ctx.model_path("mnist"), 1)
    grpc_port, rest_port = procs.free_port(), procs.free_port()
    cmd = contenders.servable_command(ctx, name, ["mnist"], grpc_port, rest_port, batching=False,
                                      base_paths={"mnist": str(base)})
    child = procs.Child(name, cmd, ctx.log(name), env=contenders._env(), cwd=str(contenders.REPO_DIR))
    child.wait_ready(lambda: procs.tfs_version_states(rest_port, "mnist").get(1) == "AVAILABLE", ctx.ready_timeout)
    return child, grpc_port, rest_port


def run_swap_and_memory(ctx: Context, plan: Plan, pool: ClientPool, raw_load_s: float) -> tuple[dict, dict]:
    """Both version-cycling scenarios on one servable process (hot swap first, then memory)."""
    base = ctx.workdir / "swap" / "mnist"
    child = None
    try:
        child, grpc_port, rest_port = _start_swap_server(ctx, "servable-swap", base)
        swap = run_swap(ctx, plan, pool, raw_load_s, child, base, grpc_port, rest_port)
        _log(f"memory: {plan.memory_cycles} load/unload cycles")
        memory = run_memory(ctx, plan, child, base, rest_port)
    except Exception as exc:
        failure = {"status": f"crashed: {type(exc).__name__}: {exc}"[:1500]}
        traceback.print_exc()
        return failure, failure
    finally:
        if child is not None:
            code = child.stop()
    swap["exit_code"] = memory["exit_code"] = code
    return swap, memory


def run_swap(ctx: Context, plan: Plan, pool: ClientPool, raw_load_s: float, child: procs.Child, base: Path,
             grpc_port: int, rest_port: int) -> dict:
    """servable under closed-loop gRPC load (c=8, latest version) while new versions land.

    pickup = folder complete (rename) -> the new version reported AVAILABLE by
    ``GET /v1/models/mnist``; overhead = pickup - the raw ``tf.saved_model.load`` time.
    """
    result: dict[str, Any] = {"swaps": [], "raw_load_s": raw_load_s}
    try:
        endpoint = Endpoint("servable gRPC", "tfs-grpc", grpc_port, "main", ("mnist_b1",), "servable")
        load_s = plan.swaps * plan.swap_interval + plan.swap_interval
        client = pool.get("main")
        client.submit(_job(endpoint, "mnist_b1", ctx, concurrency="8", duration=load_s, warmup=0.0,
                           track_versions=True, server_pid=child.pid))
        time.sleep(plan.swap_interval / 2)
        for version in range(2, plan.swaps + 2):
            complete = _new_version(base, ctx.model_path("mnist"), version)
            available = _wait_states(rest_port, "mnist", lambda s, v=version: s.get(v) == "AVAILABLE", 60)
            old_gone = _wait_states(rest_port, "mnist", lambda s, v=version: s.get(v - 1) in (None, "END"), 60)
            swap = {"version": version,
                    "pickup_s": (available - complete) if available else None,
                    "old_unloaded_s": (old_gone - complete) if old_gone else None}
            if swap["pickup_s"] is not None:
                swap["overhead_s"] = swap["pickup_s"] - raw_load_s
            result["swaps"].append(swap)
            _log(f"swap v{version}: pickup {swap['pickup_s']} s, old unloaded after {swap['old_unloaded_s']} s")
            time.sleep(max(0.0, plan.swap_interval - (time.monotonic() - complete)))
        load = client.result(load_s + 120)["runs"][0]
        result.update({"requests": load["requests"], "failed_requests": load["errors"],
                       "error_samples": load["error_samples"], "versions_served": load.get("versions", {}),
                       "p99_ms_during_swaps": load["p99_ms"]})
        pickups = [s["pickup_s"] for s in result["swaps"] if s["pickup_s"] is not None]
        result["pickup_s_median"] = statistics.median(pickups) if pickups else None
        result["status"] = "ok" if len(pickups) == plan.swaps else "incomplete"
    except Exception as exc:
        result["status"] = f"crashed: {type(exc).__name__}: {exc}"[:1500]
        traceback.print_exc()
    return result


def run_memory(ctx: Context, plan: Plan, child: procs.Child, base: Path, rest_port: int) -> dict:
    """RSS of servable after N load/unload cycles of the mnist model vs after the first.

    One cycle: a new version folder lands, it becomes AVAILABLE, one predict runs on it, the
    previous version reaches END and its folder is removed. Runs after ``run_swap`` on
    the same process, so "after the first cycle" is already past the first swaps.
    """
    result: dict[str, Any] = {"cycles": plan.memory_cycles, "rss_mb": {}}
    body = json.dumps({"instances": [[0.5] * 784]}).encode()
    try:
        cycle_times = []
        first_version = max(int(p.name) for p in base.iterdir() if p.name.isdigit())
        for cycle in range(1, plan.memory_cycles + 1):
            version = first_version + cycle
            started = time.monotonic()
            _new_version(base, ctx.model_path("mnist"), version)
            if _wait_states(rest_port, "mnist", lambda s, v=version: s.get(v) == "AVAILABLE" and s.get(v - 1) in (None, "END"), 60, 0.005) is None:
                raise RuntimeError(f"cycle {cycle}: version {version} did not replace {version - 1}")
            status, answer = procs.http_post("127.0.0.1", rest_port, "/v1/models/mnist:predict", body)
            if status != 200:
                raise RuntimeError(f"cycle {cycle}: predict answered {status}: {answer[:200]!r}")
            shutil.rmtree(base / str(version - 1))
            cycle_times.append(time.monotonic() - started)
            if cycle == 1 or cycle % 10 == 0 or cycle == plan.memory_cycles:
                result["rss_mb"][cycle] = (procs.rss_bytes(child.pid) or 0) / 2**20
        first, last = result["rss_mb"][1], result["rss_mb"][plan.memory_cycles]
        result.update({"rss_first_mb": first, "rss_last_mb": last, "ratio": last / first if first else None,
                       "cycle_s_median": statistics.median(cycle_times), "status": "ok"})
        _log(f"memory: RSS {first:.0f} MB after 1 cycle, {last:.0f} MB after {plan.memory_cycles} ({last / first:.3f}x)")
    except Exception as exc:
        result["status"] = f"crashed: {type(exc).__name__}: {exc}"[:1500]
        traceback.print_exc()
    return result


# ---------------------------------------------------------------- start-up


def run_startup(ctx: Context, plan: Plan, selected: list[Contender], status: dict[str, dict]) -> dict:
    """Process start -> the mnist model reported ready, per contender (mnist only), median of N.

    The floor is a bare ``python -c 'import tensorflow; tf.saved_model.load(...)'`` process.
    """
    out: dict[str, Any] = {}
    labels = {"servable": "servable", "naive": "naive Flask", "kserve": "KServe", "mlserver": "MLServer"}
    if plan.startup_repeats == 0:  # quick: the grid's starts (all benchmark models, not mnist alone)
        for key, label in labels.items():
            if "ready_s" in status.get(key, {}):
                out[label] = {"group": status[key]["group"], "times_s": [status[key]["ready_s"]],
                              "median_s": status[key]["ready_s"], "note": "grid start, all models"}
        return out
    floor = []
    code = ("import os; os.environ['TF_CPP_MIN_LOG_LEVEL']='3'; import sys, tensorflow as tf; "
            "m = tf.saved_model.load(sys.argv[1]); m.signatures['serving_default']")
    for _ in range(plan.startup_repeats):
        started = time.monotonic()
        subprocess.run([contenders.MAIN_PYTHON, "-c", code, ctx.model_path("mnist")], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=contenders._env())
        floor.append(time.monotonic() - started)
    out["floor (import TF + load)"] = {"group": "floor", "times_s": floor, "median_s": statistics.median(floor)}
    for contender in selected:
        if contender.key not in labels or status.get(contender.key, {}).get("status", "ok").startswith("skipped"):
            continue
        times, error = [], None
        for _ in range(plan.startup_repeats):
            running = None
            try:
                running = contender.start(ctx, ["mnist"])
                times.append(running.ready_s)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:800]
                break
            finally:
                if running is not None:
                    running.child.stop()
        entry: dict[str, Any] = {"group": contender.group, "times_s": times}
        if times:
            entry["median_s"] = statistics.median(times)
        if error:
            entry["failed"] = error
        out[labels[contender.key]] = entry
        _log(f"startup: {labels[contender.key]}: {times} {error or ''}")
    return out
