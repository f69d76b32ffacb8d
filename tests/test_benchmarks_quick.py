"""The benchmark suite cannot rot: ``python -m benchmarks run --quick`` end to end.

Runs the real suite as a subprocess (real servers on 127.0.0.1, real load), then checks the
Markdown and JSON reports: written, every contender measured without crashing, every
scenario present, no child process left behind. Peers whose venv is not built yet are
skipped by the suite (``--no-build-venvs``) rather than installed from inside a test; build
them once with ``python -m benchmarks venvs``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _processes_using(directory: Path) -> list[str]:
    """Processes whose command line or working directory is inside ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if str(directory) in cmdline or cwd.startswith(str(directory)):
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


@pytest.mark.slow
def test_quick_suite_writes_report_and_nothing_crashes(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--quick", "--no-build-venvs", "--out", str(out),
         "--workdir", str(tmp_path / "work")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert out.exists() and out.with_suffix(".json").exists()

    results = json.loads(out.with_suffix(".json").read_text())
    crashed = {k: v["status"] for k, v in results["contenders"].items() if v["status"].startswith("crashed")}
    assert not crashed, crashed
    measured = {k for k, v in results["contenders"].items() if v["status"] == "ok"}
    assert {"echo", "servable", "servable+batching"} <= measured
    failed_cells = [c for c in results["cells"] if "failed" in c]
    assert not failed_cells, failed_cells[:3]
    assert all(c["errors"] == 0 for c in results["cells"] if "errors" in c)
    assert "failed" not in results["floor_raw"]
    assert results["swap"]["status"] == "ok" and results["swap"]["failed_requests"] == 0
    assert results["memory"]["status"] == "ok"
    assert results["goals"]

    markdown = out.read_text()
    assert "## Goals" in markdown and "servable gRPC" in markdown and "echo gRPC (floor)" in markdown
    assert results["command"].startswith("python -m benchmarks run --quick")
    # Every child (servers run with the workdir as cwd or in their arguments) was stopped.
    assert _processes_using(tmp_path) == []
    print(f"quick suite: {elapsed:.0f} s")
