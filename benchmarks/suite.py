"""One benchmark run: machine info, models, floors, every contender, every scenario.

``run(options)`` is called by ``benchmarks.__main__`` on the main thread and returns the
results dict that ``benchmarks.report`` renders. It never raises for a contender's failure:
a contender that cannot start or dies is recorded as ``crashed: ...`` and the run goes on.
Every child (servers, load clients, C load generators) is stopped by its PID before
``run`` returns.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import cload, contenders, scenarios, venvs
from benchmarks.clients import ClientPool
from benchmarks.contenders import CONTENDERS, Context
from benchmarks.scenarios import FULL, QUICK, _log


@dataclass
class Options:
    quick: bool
    out: Path
    workdir: Path
    only: list[str] | None
    build_venvs: bool
    command: str


def _python_speed() -> float:
    """Seconds for 10 million pure-Python additions: how fast this machine runs Python.

    Why: a Python server's figures scale with it (the same VM kind has been seen 2.5x
    apart), so runs on different days compare through it; ratios within a run do not
    need it.
    """
    import time

    start = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return round(time.perf_counter() - start, 3)


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
                            "python_loop_10M_s": _python_speed()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu_model"] = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?")
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["mem_gib"] = round(int(mem) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    return info


def main_versions() -> dict[str, str]:
    code = ("import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
            "['tensorflow-cpu','grpcio','protobuf','numpy','aiohttp','orjson','tensorflow-serving-api']}))")
    proc = subprocess.run([contenders.MAIN_PYTHON, "-c", code], capture_output=True, text=True)
    versions = json.loads(proc.stdout) if proc.returncode == 0 else {}
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=contenders.REPO_DIR)
    versions["servable (git HEAD)"] = git.stdout.strip() or "?"
    for venv, package in (("kserve", "kserve"), ("mlserver", "mlserver"), ("naive", "flask"),
                          ("kserve", "tensorflow-cpu"), ("mlserver", "tensorflow-cpu")):
        if venvs.is_ready(venvs.SPECS[venv]):
            versions[f"{package} ({venv} venv)"] = venvs.installed_version(venv, package) or "?"
    versions.update(cload.tool_versions())
    return versions


def _prepare_models(quick: bool) -> dict:
    from benchmarks.models import MOBILENET_FULL_SIZE, MOBILENET_QUICK_SIZE

    size = MOBILENET_QUICK_SIZE if quick else MOBILENET_FULL_SIZE
    outdir = contenders.BENCH_DIR / "out" / f"models-{size}"  # cached across runs (gitignored)
    cached = outdir / "models.json"
    if cached.exists():
        models = json.loads(cached.read_text())
        if all(Path(models[m]["path"], "saved_model.pb").exists() for m in ("half_plus_two", "mnist", "jpeg_mobilenet")):
            return models
    proc = subprocess.run([contenders.MAIN_PYTHON, "-m", "benchmarks.models", str(outdir), "--image-size", str(size)],
                          capture_output=True, text=True, cwd=contenders.REPO_DIR, env=contenders._env())
    if proc.returncode != 0:
        raise RuntimeError(f"model export failed: {proc.stderr[-2000:]}")
    return json.loads((outdir / "models.json").read_text())


def _floor_raw(models_json: Path, plan: scenarios.Plan) -> dict:
    proc = subprocess.run([contenders.MAIN_PYTHON, "-m", "benchmarks.floor_raw", str(models_json),
                           "--duration", str(max(0.5, plan.duration)), "--warmup", str(max(0.2, plan.warmup))]
                          + (["--quick"] if plan.startup_repeats == 0 else []),
                          capture_output=True, text=True, cwd=contenders.REPO_DIR, env=contenders._env(), timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"raw floor failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(options: Options) -> dict[str, Any]:
    plan = QUICK if options.quick else FULL
    started = time.monotonic()
    options.workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"command": options.command, "mode": "quick" if options.quick else "full",
                               "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                               "machine": machine_info(), "plan": plan.__dict__}
    selected = [c for c in CONTENDERS if not options.only or c.key in options.only]
    status: dict[str, dict] = {c.key: {"status": "ok", "group": c.group} for c in selected}
    for contender in selected:
        if contender.needs_venv and not venvs.is_ready(venvs.SPECS[contender.needs_venv]):
            if options.build_venvs:
                _log(f"building venv {contender.needs_venv} (once; minutes)")
                try:
                    venvs.ensure(contender.needs_venv, options.workdir / "logs" / "venvs.log")
                except Exception as exc:
                    status[contender.key]["status"] = f"skipped: venv build failed: {exc}"[:800]
            else:
                status[contender.key]["status"] = "skipped: venv not built (run `python -m benchmarks venvs`)"
    results["contenders"] = status
    results["versions"] = main_versions()
    tools = cload.available()
    results["c_tools"] = {k: v or "missing (apt-get install nghttp2-client wrk)" for k, v in tools.items()}

    _log("exporting models")
    models = _prepare_models(options.quick)
    results["models"] = models
    ctx = Context(options.workdir, models)
    models_json = Path(models["mnist"]["path"]).parents[1] / "models.json"
    _log("raw in-process floor")
    try:
        results["floor_raw"] = _floor_raw(models_json, plan)
    except Exception as exc:
        results["floor_raw"] = {"failed": str(exc)[:1500]}
    pool = ClientPool(options.workdir / "logs")
    try:
        results["cells"] = scenarios.run_grid(ctx, plan, pool, selected, status, tools)
        if any(c.key == "servable" for c in selected):
            raw_load = results["floor_raw"].get("mnist_load", {}).get("load_s", 0.0)
            _log("hot swap under load")
            results["swap"], results["memory"] = scenarios.run_swap_and_memory(ctx, plan, pool, raw_load)
        _log("start-up to first AVAILABLE")
        results["startup"] = scenarios.run_startup(ctx, plan, selected, status)
    finally:
        pool.close()
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    return results


def default_command(argv: list[str]) -> str:
    return " ".join(["python", "-m", "benchmarks", *map(shlex.quote, argv)])

