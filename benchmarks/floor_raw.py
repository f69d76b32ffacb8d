"""The in-process floor: a raw SavedModel signature call, numpy in, numpy out.

``python -m benchmarks.floor_raw MODELS_JSON --duration S --warmup S`` prints one JSON object.
Runs in its own process (started by the orchestrator) so no server or client shares it.
What a server cannot beat, per model:

- ``p50_ms``/``p99_ms``: back-to-back calls, batch 1 (``tf.constant`` -> signature -> ``.numpy()``);
- ``gap_p50_ms``: the same with a 1 ms sleep before each call (the sparse-traffic regime a
  server at concurrency 1 lives in);
- ``rows_per_s`` at batch 1, 32 and 64 (mnist; 64 = the suite's ``max_batch_size``, the
  largest batch its scheduler forms from 32-row requests);
- ``load_s``: ``tf.saved_model.load`` time of a fresh copy (the "load itself" that hot-swap
  pickup time is measured against).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def _time_calls(call: Callable[[], object], duration: float, warmup: float, gap_s: float = 0.0, max_calls: int = 200_000) -> dict:
    end_warm = time.perf_counter() + warmup
    while time.perf_counter() < end_warm:
        call()
    samples: list[float] = []
    cpu0 = time.process_time()
    start = time.perf_counter()
    end = start + duration
    busy = 0.0
    while time.perf_counter() < end and len(samples) < max_calls:
        if gap_s:
            time.sleep(gap_s)
        t0 = time.perf_counter()
        call()
        elapsed = time.perf_counter() - t0
        busy += elapsed
        samples.append(elapsed)
    cpu = time.process_time() - cpu0
    return {
        "calls": len(samples),
        "p50_ms": _percentile(samples, 50) * 1e3,
        "p99_ms": _percentile(samples, 99) * 1e3,
        "calls_per_s": len(samples) / busy if busy else 0.0,
        "cpu_us_per_call": cpu / max(1, len(samples)) * 1e6,
    }


def measure(models: dict, duration: float, warmup: float, quick: bool = False) -> dict:
    import numpy as np
    import tensorflow as tf

    results: dict[str, dict] = {}
    mnist = tf.saved_model.load(models["mnist"]["path"])
    fn = mnist.signatures["serving_default"]
    rng = np.random.default_rng(0)
    for rows in (1, 32, 64):
        images = rng.random((rows, 784), dtype=np.float32)
        call = lambda: fn(images=tf.constant(images))["scores"].numpy()  # noqa: E731
        stats = _time_calls(call, duration, warmup)
        stats["rows_per_s"] = stats["calls_per_s"] * rows
        if rows == 1:
            gap = _time_calls(call, duration / 2, warmup / 2, gap_s=0.001)
            stats["gap_p50_ms"] = gap["p50_ms"]
            stats["gap_p99_ms"] = gap["p99_ms"]
        results[f"mnist_b{rows}"] = stats

    hpt = tf.saved_model.load(models["half_plus_two"]["path"])
    hfn = hpt.signatures["serving_default"]
    x = np.array([1.0, 2.0, 5.0], dtype=np.float32)
    results["half_plus_two_b1"] = _time_calls(lambda: hfn(x=tf.constant(x))["y"].numpy(), duration / 2, warmup / 2)

    jpeg = Path(models["image"]["path"]).read_bytes()
    cnn = tf.saved_model.load(models["jpeg_mobilenet"]["path"])
    cfn = cnn.signatures["serving_default"]
    for rows in (1,) if quick else (1, 8):
        batch = np.array([jpeg] * rows, dtype=object)
        stats = _time_calls(lambda: cfn(image_bytes=tf.constant(batch))["scores"].numpy(), duration, min(warmup, 1.0), max_calls=2000)
        stats["rows_per_s"] = stats["calls_per_s"] * rows
        results[f"jpeg_mobilenet_b{rows}"] = stats

    # Load time of a fresh copy (page cache warm, as for a hot swap of a just-written folder).
    load_times = []
    for _ in range(1 if quick else 3):
        with tempfile.TemporaryDirectory() as tmp:
            copy = shutil.copytree(models["mnist"]["path"], str(Path(tmp) / "1"))
            t0 = time.perf_counter()
            loaded = tf.saved_model.load(copy)
            loaded.signatures["serving_default"](images=tf.constant(rng.random((1, 784), dtype=np.float32)))
            load_times.append(time.perf_counter() - t0)
            del loaded
    results["mnist_load"] = {"load_s": statistics.median(load_times)}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models_json", type=Path)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="skip the batch-8 CNN call, one load timing")
    args = parser.parse_args(argv)
    models = json.loads(args.models_json.read_text())
    print(json.dumps(measure(models, args.duration, args.warmup, args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
