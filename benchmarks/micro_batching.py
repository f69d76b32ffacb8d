"""Micro-benchmark of the batching scheduler's latency and batch formation.

Run: ``.venv/bin/python benchmarks/micro_batching.py``

1. A lone request (one client, back to back) with ``batch_timeout_micros`` = 10 ms:
   unbatched call vs. batched with eager-when-idle dispatch (servable's default) vs.
   batched with TF Serving's rule (wait out the window).
2. Load: 32 closed-loop clients on a model whose call costs 1 ms + 20 us/row, to show
   eager dispatch keeps batches large when the batch threads are busy.
"""

from __future__ import annotations

import pathlib
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from servable.batching import BatchingParameters, BatchScheduler, wrap_servable


class CostModel:
    signatures = {"serving_default": object()}

    def __init__(self, fixed_s: float = 0.0, per_row_s: float = 0.0) -> None:
        self.fixed_s, self.per_row_s = fixed_s, per_row_s
        self.batch_sizes: list[int] = []

    def signature_defs(self) -> dict[str, bytes]:
        return {"serving_default": b""}

    def predict(self, key, inputs, output_filter=()):
        rows = inputs["x"].shape[0]
        self.batch_sizes.append(rows)
        if self.fixed_s or self.per_row_s:
            time.sleep(self.fixed_s + self.per_row_s * rows)
        return {"y": inputs["x"] * 2.0}


def _lone(call, n: int) -> list[float]:
    x = {"x": np.ones((1, 4), np.float32)}
    call(x)
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call(x)
        samples.append(time.perf_counter() - start)
    return samples


def _fmt(samples: list[float]) -> str:
    ms = sorted(s * 1e3 for s in samples)
    return f"p50 {statistics.median(ms):7.3f} ms   p99 {ms[int(len(ms) * 0.99) - 1]:7.3f} ms   (n={len(ms)})"


def lone_request() -> None:
    print("Lone request, batch_timeout_micros=10000, max_batch_size=32")
    model = CostModel()
    print(f"  unbatched call           {_fmt(_lone(lambda x: model.predict('serving_default', x), 2000))}")
    params = BatchingParameters(max_batch_size=32, batch_timeout_micros=10_000, num_batch_threads=2)
    for eager, n, label in ((True, 2000, "batched, eager when idle"), (False, 50, "batched, TF Serving rule")):
        scheduler = BatchScheduler(2, eager_when_idle=eager)
        servable = wrap_servable(CostModel(), params, scheduler)
        print(f"  {label:24} {_fmt(_lone(lambda x: servable.predict('serving_default', x), n))}")
        servable.close()
        scheduler.stop()


def under_load(seconds: float = 1.5, clients: int = 32) -> None:
    print(f"\n{clients} closed-loop clients, model cost 1 ms + 20 us/row, timeout 10 ms, 2 batch threads")
    params = BatchingParameters(max_batch_size=32, batch_timeout_micros=10_000, max_enqueued_batches=100)
    for eager in (True, False):
        scheduler = BatchScheduler(2, eager_when_idle=eager)
        model = CostModel(0.001, 0.00002)
        servable = wrap_servable(model, params, scheduler)
        stop_at = time.monotonic() + seconds
        latencies: list[float] = []
        lock = threading.Lock()

        def client() -> None:
            x = {"x": np.ones((1, 4), np.float32)}
            while time.monotonic() < stop_at:
                start = time.perf_counter()
                servable.predict("serving_default", x)
                with lock:
                    latencies.append(time.perf_counter() - start)

        with ThreadPoolExecutor(clients) as pool:
            for _ in range(clients):
                pool.submit(client)
        sizes = model.batch_sizes
        label = "eager when idle" if eager else "TF Serving rule"
        print(
            f"  {label:16} {len(latencies) / seconds:8.0f} req/s   mean batch {sum(sizes) / len(sizes):5.1f}   "
            f"{_fmt(latencies)}"
        )
        servable.close()
        scheduler.stop()


if __name__ == "__main__":
    lone_request()
    under_load()
