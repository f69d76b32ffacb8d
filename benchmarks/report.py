"""Ratios, goals and the Markdown/JSON report of one run.

``write(results, md_path)`` is called by ``benchmarks.__main__`` after ``suite.run``; it adds
``ratios`` and ``goals`` to the results, writes ``<md_path>`` and ``<md_path minus .md>.json``.

Ratios. Every figure of a contender is shown with two ratios, computed from the same run,
same payload, same client family (Python client, or C load generator: h2load for gRPC and
wrk for REST) and same concurrency:
- ``xF`` = figure / floor. Latency floor = bare gRPC echo p50/p99 + the raw in-process
  call's p50/p99 (for REST rows too: there is no faster REST transport to compare with).
  Throughput floor = echo req/s for 1-row requests, raw in-process rows/s for 32-row and
  JPEG requests. For latency lower is better (>= 1), for throughput higher is better (<= 1).
- ``xP`` = figure / best peer (KServe, MLServer; lowest latency, highest throughput).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

CLIENT_FAMILY = {"python": "python", "h2load": "c", "wrk": "c"}
RAW_KEYS = {"mnist_b1": "mnist_b1", "mnist_b32": "mnist_b32", "jpeg_b1": "jpeg_mobilenet_b1"}
RAW_THROUGHPUT_KEYS = {"mnist_b1": "mnist_b1", "mnist_b32": "mnist_b32", "jpeg_b1": "jpeg_mobilenet_b8"}


def _ok(cell: dict) -> bool:
    return "failed" not in cell and "skipped" not in cell and cell.get("requests", 0) > 0


class Index:
    """Lookup of grid cells by (row, payload, client family, concurrency)."""

    def __init__(self, results: dict[str, Any]) -> None:
        self.cells = [c for c in results.get("cells", []) if _ok(c)]
        self.raw = results.get("floor_raw", {})

    def get(self, row: str, payload: str, family: str, concurrency: int) -> dict | None:
        for cell in self.cells:
            if (cell["row"] == row and cell["payload"] == payload and CLIENT_FAMILY[cell["client"]] == family
                    and cell["concurrency"] == concurrency):
                return cell
        return None

    def value(self, row: str, payload: str, family: str, concurrency: int, metric: str) -> float | None:
        cell = self.get(row, payload, family, concurrency)
        return None if cell is None else cell.get(metric)

    def floor(self, payload: str, family: str, concurrency: int, metric: str) -> float | None:
        raw = self.raw.get(RAW_KEYS[payload], {})
        if metric in ("p50_ms", "p99_ms"):
            echo = self.value("echo gRPC (floor)", payload, family, concurrency, metric) if payload != "jpeg_b1" else 0.0
            call = raw.get(metric)
            if echo is None or call is None or concurrency != 1:
                return None
            return echo + call
        if payload == "mnist_b1":
            return self.value("echo gRPC (floor)", payload, family, concurrency, metric)
        raw_tp = self.raw.get(RAW_THROUGHPUT_KEYS[payload], {}).get("rows_per_s")
        if raw_tp is None:
            return None
        return raw_tp if metric == "rows_per_s" else raw_tp / (32 if payload == "mnist_b32" else 1)

    def best_peer(self, payload: str, family: str, concurrency: int, metric: str) -> tuple[float, str] | None:
        values = [(c[metric], c["row"]) for c in self.cells if c["group"] == "peer" and c["payload"] == payload
                  and CLIENT_FAMILY[c["client"]] == family and c["concurrency"] == concurrency and metric in c]
        if not values:
            return None
        return min(values) if metric.endswith("_ms") else max(values)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or (isinstance(a, float) and math.isnan(a)):
        return None
    return a / b


def _fmt(value: float | None, metric: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if metric.endswith("_ms"):
        return f"{value:.2f} ms" if value < 100 else f"{value:.0f} ms"
    return f"{value:,.0f}/s"


def _fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


# ---------------------------------------------------------------- goals


def compute_goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals, each a ratio from this run, for each client family measured."""
    idx = Index(results)
    goals: list[dict[str, Any]] = []

    def add(goal: str, family: str, measured: float | None, target: str, ok: bool | None, detail: str) -> None:
        goals.append({"goal": goal, "client": family, "ratio": measured, "target": target, "pass": ok, "detail": detail})

    for family in ("python", "c"):
        label = "Python client" if family == "python" else "C client (h2load / wrk)"
        p50 = idx.value("servable gRPC", "mnist_b1", family, 1, "p50_ms")
        floor = idx.floor("mnist_b1", family, 1, "p50_ms")
        r = _ratio(p50, floor)
        add("gRPC p50 at c=1 <= 1.25x (echo p50 + raw call p50)", label, r, "<= 1.25", None if r is None else r <= 1.25,
            f"servable {_fmt(p50, 'p50_ms')} vs floor {_fmt(floor, 'p50_ms')}")

        tp = idx.value("servable gRPC +batching", "mnist_b1", family, 64, "req_per_s")
        echo = idx.value("echo gRPC (floor)", "mnist_b1", family, 64, "req_per_s")
        r = _ratio(tp, echo)
        add("1-row req/s at c=64 with batching >= 0.7x echo", label, r, ">= 0.7", None if r is None else r >= 0.7,
            f"servable {_fmt(tp, 'req_per_s')} vs echo {_fmt(echo, 'req_per_s')}")

        # The floor is the raw call at the batch size the scheduler can end up using: 32
        # rows without batching, 64 (the suite's max_batch_size: two requests) with it.
        candidates = []
        for row, raw_key in (("servable gRPC", "mnist_b32"), ("servable gRPC +batching", "mnist_b64")):
            served = idx.value(row, "mnist_b32", family, 16, "rows_per_s")
            if raw_key not in idx.raw:  # a report of an older run (no 64-row floor)
                raw_key = "mnist_b32"
            raw_rows = idx.raw.get(raw_key, {}).get("rows_per_s")
            r = _ratio(served, raw_rows)
            if r is not None:
                candidates.append((r, row, served, raw_key, raw_rows))
        if candidates:
            r, row, served, raw_key, raw_rows = max(candidates)
            detail = f"{row} {_fmt(served, 'rows_per_s')} vs raw {raw_key.split('_')[1]} {_fmt(raw_rows, 'rows_per_s')}"
        else:
            r, detail = None, "not measured"
        add("32-row rows/s (gRPC, c=16) >= 0.7x raw in-process rows/s", label, r, ">= 0.7", None if r is None else r >= 0.7,
            detail)

        ours = max((v for v in (idx.value(row, "mnist_b1", family, 64, "req_per_s") for row in
                                ("servable gRPC", "servable gRPC +batching", "servable REST", "servable REST +batching"))
                    if v is not None), default=None)
        peer = idx.best_peer("mnist_b1", family, 64, "req_per_s")
        r = _ratio(ours, peer[0] if peer else None)
        add("throughput (1-row, c=64) >= 1.5x best peer", label, r, ">= 1.5", None if r is None else r >= 1.5,
            f"servable best {_fmt(ours, 'req_per_s')} vs {peer[1] if peer else '–'} {_fmt(peer[0] if peer else None, 'req_per_s')}")

        ours_p50 = min((v for v in (idx.value(row, "mnist_b1", family, 1, "p50_ms") for row in ("servable gRPC", "servable REST"))
                        if v is not None), default=None)
        peer = idx.best_peer("mnist_b1", family, 1, "p50_ms")
        r = _ratio(ours_p50, peer[0] if peer else None)
        add("p50 at c=1 <= 0.8x best peer", label, r, "<= 0.8", None if r is None else r <= 0.8,
            f"servable best {_fmt(ours_p50, 'p50_ms')} vs {peer[1] if peer else '–'} {_fmt(peer[0] if peer else None, 'p50_ms')}")

        rest = idx.value("servable REST", "mnist_b1", family, 1, "p50_ms")
        grpc = idx.value("servable gRPC", "mnist_b1", family, 1, "p50_ms")
        r = _ratio(rest, grpc)
        add("REST p50 at c=1 <= 1.5x gRPC p50", label, r, "<= 1.5", None if r is None else r <= 1.5,
            f"REST {_fmt(rest, 'p50_ms')} vs gRPC {_fmt(grpc, 'p50_ms')}")

        for conc in (16, 64):
            rest_tp = max((v for v in (idx.value(row, "mnist_b1", family, conc, "req_per_s")
                                       for row in ("servable REST", "servable REST +batching")) if v is not None), default=None)
            naive = idx.value("naive Flask REST", "mnist_b1", family, conc, "req_per_s")
            r = _ratio(rest_tp, naive)
            add(f"REST req/s at c={conc} >= 2x naive Flask", label, r, ">= 2", None if r is None else r >= 2,
                f"servable {_fmt(rest_tp, 'req_per_s')} vs naive {_fmt(naive, 'req_per_s')}")

    swap = results.get("swap", {})
    if "failed_requests" in swap:
        add("zero failed requests during hot swaps", "Python client", swap["failed_requests"], "== 0",
            swap["failed_requests"] == 0, f"{swap['failed_requests']} of {swap['requests']} failed over {len(swap['swaps'])} swaps")
    memory = results.get("memory", {})
    if memory.get("ratio") is not None:
        add(f"RSS after {memory['cycles']} load/unload cycles <= 1.1x after the first", "–", memory["ratio"], "<= 1.1",
            memory["ratio"] <= 1.1, f"{memory['rss_first_mb']:.0f} MB -> {memory['rss_last_mb']:.0f} MB")
    return goals


# ---------------------------------------------------------------- Markdown


def _grid_table(idx: Index, payload: str, family: str, columns: list[tuple[str, int, str]], rows: list[str]) -> list[str]:
    header = "| contender | " + " | ".join(title for title, _, _ in columns) + " | errors |"
    lines = [header, "|" + "---|" * (len(columns) + 2)]
    for row in rows:
        cells = []
        errors = 0
        seen = False
        for _, conc, metric in columns:
            cell = idx.get(row, payload, family, conc)
            if cell is None:
                cells.append("–")
                continue
            seen = True
            errors += cell.get("errors", 0)
            value = cell.get(metric)
            parts = [f"**{_fmt(value, metric)}**"] if row.startswith("servable") else [_fmt(value, metric)]
            floor = idx.floor(payload, family, conc, metric)
            peer = idx.best_peer(payload, family, conc, metric)
            ratios = []
            if floor is not None and not row.startswith("echo"):
                ratios.append(f"{_fmt_ratio(_ratio(value, floor))}xF")
            if peer is not None and row.startswith(("servable", "naive")):
                ratios.append(f"{_fmt_ratio(_ratio(value, peer[0]))}xP")
            if ratios:
                parts.append(" ".join(ratios))
            cells.append("<br>".join(parts))
        if seen:
            lines.append(f"| {row} | " + " | ".join(cells) + f" | {errors} |")
    return lines


def _rows_in_order(results: dict[str, Any]) -> list[str]:
    order: list[str] = []
    for cell in results.get("cells", []):
        if cell["row"] not in order:
            order.append(cell["row"])
    return order


def render_markdown(results: dict[str, Any]) -> str:
    idx = Index(results)
    rows = _rows_in_order(results)
    machine = results["machine"]
    out = ["# servable benchmark results", "",
           f"Generated by `{results['command']}` ({results['mode']} mode) on {results['started_utc']} UTC, "
           f"{results['elapsed_s']:.0f} s. Raw data: the JSON file next to this one. Method and caveats: "
           "`benchmarks/README.md`.", "",
           "Ratios in cells: **xF** = figure / floor (latency floor = bare gRPC echo + raw in-process call; "
           "throughput floor = echo req/s for 1-row requests, raw in-process rows/s for 32-row and JPEG requests), "
           "**xP** = figure / best peer (KServe or MLServer, same client, same concurrency). "
           "Latency: lower is better; throughput: higher is better.", "",
           "## Machine and versions", "", "| | |", "|---|---|"]
    for key in ("cpu_model", "cpus", "affinity_cpus", "mem_gib", "platform", "python", "python_loop_10M_s",
                "loadavg_start", "loadavg_end"):
        if key in machine:
            value = machine[key]
            if isinstance(value, (list, tuple)):
                value = " / ".join(f"{v:.2f}" for v in value)
            out.append(f"| {key} | {value} |")
    for key, value in results.get("versions", {}).items():
        out.append(f"| {key} | {value} |")
    out += ["", "## Goals", "", "| goal | client | ratio | target | pass | detail |", "|---|---|---|---|---|---|"]
    for goal in results.get("goals", []):
        verdict = {True: "yes", False: "**no**", None: "n/a"}[goal["pass"]]
        ratio = goal["ratio"]
        ratio_s = "–" if ratio is None else (f"{ratio:.2f}" if isinstance(ratio, float) else str(ratio))
        out.append(f"| {goal['goal']} | {goal['client']} | {ratio_s} | {goal['target']} | {verdict} | {goal['detail']} |")

    raw = results.get("floor_raw", {})
    out += ["", "## Floor: raw in-process SavedModel call (numpy in, numpy out, one thread)", ""]
    if "failed" in raw:
        out.append(f"Failed: `{raw['failed'][:500]}`")
    else:
        out += ["| call | p50 | p99 | p50 after a 1 ms idle gap | rows/s | CPU µs/call |", "|---|---|---|---|---|---|"]
        for key, stats in raw.items():
            if "p50_ms" in stats:
                out.append(f"| {key} | {stats['p50_ms']:.3f} ms | {stats['p99_ms']:.3f} ms | "
                           f"{_fmt(stats.get('gap_p50_ms'), 'p50_ms')} | {stats.get('rows_per_s', stats['calls_per_s']):,.0f} | "
                           f"{stats['cpu_us_per_call']:.0f} |")
        if "mnist_load" in raw:
            out.append(f"\n`tf.saved_model.load` of a fresh mnist copy + first call: {raw['mnist_load']['load_s'] * 1e3:.0f} ms.")

    plan = results["plan"]
    for payload, title in (("mnist_b1", "MLP 784-128-10, 1-row requests"), ("mnist_b32", "MLP 784-128-10, 32-row requests"),
                           ("jpeg_b1", f"MobileNetV2 (random weights, {results['models']['jpeg_mobilenet'].get('image_size')}px) on JPEG bytes, 1 image per request")):
        for family, client_title in (("python", "Python closed-loop client"), ("c", "C load generator (h2load for gRPC, wrk for REST)")):
            concs = plan["concurrency" if family == "python" else "c_concurrency"].get(payload, ())
            if not concs:
                continue
            columns: list[tuple[str, int, str]] = []
            for conc in concs:
                if conc == 1:
                    columns += [("p50 c=1", 1, "p50_ms"), ("p99 c=1", 1, "p99_ms")]
                metric = "rows_per_s" if payload == "mnist_b32" else "req_per_s"
                columns.append((f"{'rows' if metric == 'rows_per_s' else 'req'}/s c={conc}", conc, metric))
            table = _grid_table(idx, payload, family, columns, rows)
            if len(table) > 2:
                out += ["", f"## {title} — {client_title}", ""] + table

    out += _swap_memory_startup(results)
    out += ["", "## Contenders", "", "| contender | status | start to ready (grid run) | exit code |", "|---|---|---|---|"]
    for key, st in results.get("contenders", {}).items():
        ready = f"{st['ready_s']:.2f} s" if "ready_s" in st else "–"
        out.append(f"| {key} | {st['status'][:300]} | {ready} | {st.get('exit_code', '–')} |")
    failed = [c for c in results.get("cells", []) if "failed" in c or "skipped" in c]
    if failed:
        out += ["", "Cells not measured:", ""]
        for cell in failed:
            out.append(f"- {cell['row']} {cell['payload']} {cell['client']} c={cell['concurrency']}: "
                       f"{cell.get('failed') or cell.get('skipped')}")
    return "\n".join(out) + "\n"


def _swap_memory_startup(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    swap = results.get("swap")
    if swap:
        out += ["", "## Hot swap under load (servable, gRPC, 8 closed-loop clients, `--file_system_poll_wait_seconds=1`)", ""]
        if not swap.get("status", "").startswith("ok"):
            out.append(f"Status: {swap.get('status')}")
        if swap.get("swaps"):
            out += ["| new version | folder complete -> AVAILABLE | minus raw load (overhead) | -> old version END |", "|---|---|---|---|"]
            for s in swap["swaps"]:
                pick = "–" if s["pickup_s"] is None else f"{s['pickup_s'] * 1e3:.0f} ms"
                over = "–" if s.get("overhead_s") is None else f"{s['overhead_s'] * 1e3:.0f} ms"
                gone = "–" if s["old_unloaded_s"] is None else f"{s['old_unloaded_s'] * 1e3:.0f} ms"
                out.append(f"| {s['version']} | {pick} | {over} | {gone} |")
        if "requests" in swap:
            out.append(f"\nRequests during the swaps: {swap['requests']}, failed: **{swap['failed_requests']}**, "
                       f"versions that answered: {swap['versions_served']}, p99 {swap['p99_ms_during_swaps']:.2f} ms. "
                       f"Raw load time (floor) {swap['raw_load_s'] * 1e3:.0f} ms. Peers: n/a (neither KServe nor "
                       "MLServer watches a model folder; see peers.md).")
    memory = results.get("memory")
    if memory:
        out += ["", f"## Memory over {memory['cycles']} load/unload cycles (servable, mnist, new version folder each cycle)", ""]
        if memory.get("status") != "ok":
            out.append(f"Status: {memory.get('status')}")
        if memory.get("rss_mb"):
            out += ["| after cycle | RSS |", "|---|---|"]
            out += [f"| {cycle} | {mb:.1f} MB |" for cycle, mb in memory["rss_mb"].items()]
            if memory.get("ratio") is not None:
                out.append(f"\nRatio last/first: **{memory['ratio']:.3f}**; median cycle {memory['cycle_s_median'] * 1e3:.0f} ms.")
    startup = results.get("startup")
    if startup:
        floor = startup.get("floor (import TF + load)", {}).get("median_s")
        peers = [v["median_s"] for v in startup.values() if v.get("group") == "peer" and "median_s" in v]
        best_peer = min(peers) if peers else None
        out += ["", "## Process start to first AVAILABLE model (mnist only)", "",
                "| contender | median | xF | xP | runs |", "|---|---|---|---|---|"]
        for name, entry in startup.items():
            median = entry.get("median_s")
            med = "–" if median is None else f"{median:.2f} s"
            runs = ", ".join(f"{t:.2f}" for t in entry.get("times_s", [])) + (f" (failed: {entry['failed'][:200]})" if "failed" in entry else "")
            out.append(f"| {name} | {med} | {_fmt_ratio(_ratio(median, floor))} | {_fmt_ratio(_ratio(median, best_peer))} | {runs} |")
    return out


def write(results: dict[str, Any], md_path: Path) -> Path:
    results["goals"] = compute_goals(results)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(render_markdown(results))
    json_path = md_path.with_suffix(".json")
    json_path.write_text(json.dumps(results, indent=1, default=str))
    return json_path
