"""Serving metrics with TF Serving's names, plus the ones its users ask for in vain.

Recorded once, on the internal request path, for both front doors. Exposition is
Prometheus text: TF Serving's metric names (``:tensorflow:serving:request_count`` with
``{model_name,status}``, ``:tensorflow:serving:request_latency`` with
``{model_name,API,entrypoint}`` in microseconds, ...) rendered exactly as TF Serving
prints them (counters without a ``_total`` suffix), followed by servable's own metrics
from an injected ``prometheus_client`` registry (per version and signature counts,
batching, model load times and states, process memory).
"""

from __future__ import annotations

import bisect
import threading
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

from servable.core.status import Code


def _exponential(start: float, factor: float, count: int) -> list[float]:
    return [start * factor**i for i in range(count)]


# TF Serving: request/runtime latency buckets exponential(10 us, x1.8, 33).
LATENCY_BUCKETS_US = _exponential(10.0, 1.8, 33)
# TF Serving: request_example_counts buckets 1, 2, 4, ... 16384.
EXAMPLE_COUNT_BUCKETS = [float(2**i) for i in range(15)]
# TF Serving: batching_session queuing_latency buckets exponential(100 us, x1.2, 52).
QUEUING_LATENCY_BUCKETS_US = _exponential(100.0, 1.2, 52)


class _Histogram:
    """A cumulative histogram with fixed bounds (TF Serving's layout)."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


def _labels(names: Iterable[str], values: Iterable[object]) -> str:
    parts = []
    for name, value in zip(names, values):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        parts.append(f'{name}="{text}"')
    return "{" + ",".join(parts) + "}"


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class ServingMetrics:
    """Thread-safe metric store; ``render()`` gives the Prometheus text page."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._lock = threading.Lock()
        self._request_count: dict[tuple[str, str], int] = {}
        self._request_latency: dict[tuple[str, str, str], _Histogram] = {}
        self._runtime_latency: dict[tuple[str, str], _Histogram] = {}
        self._example_counts: dict[str, _Histogram] = {}
        self._example_total: dict[str, int] = {}
        # Per load / warmup / batch (never per request); keyed by the TF label values.
        self._warmup_latency: dict[tuple[str, str], _Histogram] = {}
        self._warmup_records_read: dict[tuple[str, str], int] = {}
        self._queuing_latency: dict[tuple[str], _Histogram] = {}
        self._wrapped_run_count = 0
        self._load_attempts: dict[tuple[str, str], int] = {}
        self._load_latency_us: dict[str, int] = {}
        # prometheus_client's labels() formats and looks its labels up on every call; the
        # children are cached here by the raw label values (one dict lookup per request).
        self._request_children: dict[tuple, Counter] = {}
        self.registry = registry or CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "servable_requests",
            "Requests by model, version, signature, API, entrypoint and status.",
            ["model_name", "version", "signature", "API", "entrypoint", "status"],
            registry=self.registry,
        )
        self.model_load_seconds = Histogram(
            "servable_model_load_seconds",
            "Time to load (and warm up) one model version.",
            ["model_name"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )
        self.model_state = Gauge(
            "servable_model_version_state",
            "Current state of each model version (ModelVersionStatus.State number: "
            "10 START, 20 LOADING, 30 AVAILABLE, 40 UNLOADING, 50 END).",
            ["model_name", "version"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "servable_batch_size",
            "Rows per model call made by the batching scheduler (after padding).",
            ["model_name", "signature"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )
        self.batch_queue_seconds = Histogram(
            "servable_batch_queue_seconds",
            "Time a request waited in a batching queue before its batch ran.",
            ["model_name", "signature"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "servable_requests_in_flight",
            "Requests handed to the worker pool and not finished (queued or running).",
            registry=self.registry,
        )
        self.warmup_records = Counter(
            "servable_model_warmup_records",
            "Warmup records replayed before a version became AVAILABLE.",
            ["model_name", "status"],
            registry=self.registry,
        )

    # -- recording (worker threads) -------------------------------------------------

    def observe_request(
        self,
        entrypoint: str,
        api: str,
        model_name: str,
        version: int | None,
        signature: str,
        code: Code,
        latency_s: float,
        examples: int,
    ) -> None:
        status = Code(code).name
        with self._lock:
            key = (model_name, status)
            self._request_count[key] = self._request_count.get(key, 0) + 1
            if code == Code.OK:
                hist_key = (model_name, api, entrypoint)
                hist = self._request_latency.get(hist_key)
                if hist is None:
                    hist = self._request_latency[hist_key] = _Histogram(LATENCY_BUCKETS_US)
                hist.observe(latency_s * 1e6)
            if examples:
                hist = self._example_counts.get(model_name)
                if hist is None:
                    hist = self._example_counts[model_name] = _Histogram(EXAMPLE_COUNT_BUCKETS)
                hist.observe(examples)
                self._example_total[model_name] = self._example_total.get(model_name, 0) + examples
            labels = (model_name, version, signature, api, entrypoint, status)
            child = self._request_children.get(labels)
            if child is None:
                child = self._request_children[labels] = self.requests.labels(
                    model_name, "" if version is None else str(version), signature, api, entrypoint, status
                )
        child.inc()

    def observe_runtime(self, model_name: str, api: str, seconds: float) -> None:
        with self._lock:
            key = (model_name, api)
            hist = self._runtime_latency.get(key)
            if hist is None:
                hist = self._runtime_latency[key] = _Histogram(LATENCY_BUCKETS_US)
            hist.observe(seconds * 1e6)

    def observe_model_load(self, model_path: str, success: bool, seconds: float = 0.0) -> None:
        """One SavedModel load attempt (TF's ``/tensorflow/cc/saved_model/load_attempt_count``,
        and ``load_latency``, total microseconds of successful loads)."""
        with self._lock:
            key = (model_path, "success" if success else "fail")
            self._load_attempts[key] = self._load_attempts.get(key, 0) + 1
            if success:
                self._load_latency_us[model_path] = self._load_latency_us.get(model_path, 0) + int(seconds * 1e6)

    def observe_warmup(self, model_path: str, records: int, seconds: float | None = None, status: str = "OK") -> None:
        """A version's warmup: records read from its warmup file and, when known, its duration."""
        with self._lock:
            key = (model_path, status)
            if records:
                self._warmup_records_read[key] = self._warmup_records_read.get(key, 0) + records
            if seconds is not None:
                hist = self._warmup_latency.get(key)
                if hist is None:
                    hist = self._warmup_latency[key] = _Histogram(LATENCY_BUCKETS_US)
                hist.observe(seconds * 1e6)

    def observe_batch(self, thread_pool_name: str, queue_seconds: float) -> None:
        """One batched model call (batch thread): queuing latency and wrapped run count."""
        with self._lock:
            hist = self._queuing_latency.get((thread_pool_name,))
            if hist is None:
                hist = self._queuing_latency[(thread_pool_name,)] = _Histogram(QUEUING_LATENCY_BUCKETS_US)
            hist.observe(queue_seconds * 1e6)
            self._wrapped_run_count += 1

    def request_count(self, model_name: str, status: str = "OK") -> int:
        """Current value of ``:tensorflow:serving:request_count`` (for tests and tools)."""
        with self._lock:
            return self._request_count.get((model_name, status), 0)

    # -- exposition (REST worker thread) ----------------------------------------------

    def render(self) -> bytes:
        lines: list[str] = []
        with self._lock:
            name = ":tensorflow:serving:request_count"
            lines.append(f"# TYPE {name} counter")
            for (model, status), value in sorted(self._request_count.items()):
                lines.append(f"{name}{_labels(('model_name', 'status'), (model, status))} {value}")
            self._render_histograms(
                lines, ":tensorflow:serving:request_latency", ("model_name", "API", "entrypoint"), self._request_latency
            )
            runtime = {(m, a, "TF1"): h for (m, a), h in self._runtime_latency.items()}
            self._render_histograms(lines, ":tensorflow:serving:runtime_latency", ("model_name", "API", "runtime"), runtime)
            counts = {(m,): h for m, h in self._example_counts.items()}
            self._render_histograms(lines, ":tensorflow:serving:request_example_counts", ("model",), counts)
            name = ":tensorflow:serving:request_example_count_total"
            lines.append(f"# TYPE {name} counter")
            for model, value in sorted(self._example_total.items()):
                lines.append(f"{name}{_labels(('model',), (model,))} {value}")
            self._render_histograms(
                lines, ":tensorflow:serving:model_warmup_latency", ("model_path", "status"), self._warmup_latency
            )
            self._render_counters(
                lines, ":tensorflow:serving:model_warmup_records_read", ("model_path", "status"), self._warmup_records_read
            )
            self._render_histograms(
                lines, ":tensorflow:serving:batching_session:queuing_latency", ("thread_pool_name",), self._queuing_latency
            )
            name = ":tensorflow:serving:batching_session:wrapped_run_count"
            lines.append(f"# TYPE {name} counter")
            lines.append(f"{name} {self._wrapped_run_count}")
            self._render_counters(
                lines, ":tensorflow:cc:saved_model:load_attempt_count", ("model_path", "status"), self._load_attempts
            )
            latency = {(path,): us for path, us in self._load_latency_us.items()}
            self._render_counters(lines, ":tensorflow:cc:saved_model:load_latency", ("model_path",), latency)
        text = "\n".join(lines) + "\n"
        return text.encode() + generate_latest(self.registry)

    @staticmethod
    def _render_counters(lines: list[str], name: str, label_names: tuple[str, ...], values: dict) -> None:
        lines.append(f"# TYPE {name} counter")
        for key, value in sorted(values.items()):
            lines.append(f"{name}{_labels(label_names, key)} {value}")

    @staticmethod
    def _render_histograms(lines: list[str], name: str, label_names: tuple[str, ...], hists: dict) -> None:
        lines.append(f"# TYPE {name} histogram")
        for key, hist in sorted(hists.items()):
            cumulative = 0
            for bound, count in zip(hist.bounds, hist.counts):
                cumulative += count
                labels = _labels((*label_names, "le"), (*key, _format_number(bound)))
                lines.append(f"{name}_bucket{labels} {cumulative}")
            labels = _labels((*label_names, "le"), (*key, "+Inf"))
            lines.append(f"{name}_bucket{labels} {hist.count}")
            plain = _labels(label_names, key)
            lines.append(f"{name}_sum{plain} {_format_number(hist.sum)}")
            lines.append(f"{name}_count{plain} {hist.count}")
