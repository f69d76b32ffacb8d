"""``python -m servable.server`` answers --help and bad flags before loading anything."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servable.server", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )


def test_help_prints_usage() -> None:
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")
    assert "--model_config_file=" in result.stdout
    assert "[accepted, no effect]" in result.stdout


def test_unknown_flag_exits_2() -> None:
    result = _run("--bogus")
    assert result.returncode == 2
    assert "Unknown command line flag 'bogus'" in result.stderr
