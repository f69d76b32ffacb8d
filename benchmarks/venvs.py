"""Per-contender virtual environments under ``benchmarks/.venvs/`` (gitignored, made lazily).

Called by the orchestrator (main thread, before any contender starts) and by hand with
``python -m benchmarks venvs``. Each peer gets its own environment so its pins cannot
disturb servable's (protobuf 7 here; kserve and mlserver resolve protobuf 6.33):

- ``kserve``   : kserve + tensorflow-cpu, resolved together by pip (about 1.6 GB).
- ``mlserver`` : mlserver + tensorflow-cpu, resolved together by pip (about 1.6 GB).
- ``naive``    : Flask only; a ``.pth`` file appends the main venv's site-packages, so the
  naive server reuses servable's TensorFlow/numpy/orjson without a second TF install.
  The ``.pth`` entry comes *after* the venv's own site-packages, and nothing in Flask's
  dependency set is in the main venv, so there is nothing to shadow.

A venv is complete when its ``.ready`` stamp matches the requested pins; a failed or
interrupted install is redone from scratch next time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
VENVS_DIR = BENCH_DIR / ".venvs"

KSERVE_VERSION = "0.21.0"
MLSERVER_VERSION = "1.7.1"
TENSORFLOW_VERSION = "2.21.0"
FLASK_VERSION = "3.1.3"


@dataclass(frozen=True)
class VenvSpec:
    """What to install into ``benchmarks/.venvs/<name>``."""

    name: str
    requirements: tuple[str, ...]
    share_main_site_packages: bool = False

    @property
    def path(self) -> Path:
        return VENVS_DIR / self.name

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def stamp(self) -> str:
        return " ".join(self.requirements) + (" +main" if self.share_main_site_packages else "")


SPECS: dict[str, VenvSpec] = {
    "kserve": VenvSpec("kserve", (f"kserve=={KSERVE_VERSION}", f"tensorflow-cpu=={TENSORFLOW_VERSION}")),
    "mlserver": VenvSpec("mlserver", (f"mlserver=={MLSERVER_VERSION}", f"tensorflow-cpu=={TENSORFLOW_VERSION}")),
    "naive": VenvSpec("naive", (f"Flask=={FLASK_VERSION}",), share_main_site_packages=True),
}


def _ensure_gitignore() -> None:
    VENVS_DIR.mkdir(parents=True, exist_ok=True)
    ignore = VENVS_DIR / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# created by benchmarks/venvs.py: nothing in here is committed\n*\n")


def is_ready(spec: VenvSpec) -> bool:
    stamp = spec.path / ".ready"
    return spec.python.exists() and stamp.exists() and stamp.read_text() == spec.stamp()


def ensure(name: str, log: Path | None = None) -> Path:
    """Return the venv's python, creating the venv first if needed (blocking, minutes).

    Raises ``RuntimeError`` with the tail of pip's output when the install fails.
    """
    spec = SPECS[name]
    if is_ready(spec):
        return spec.python
    _ensure_gitignore()
    if spec.path.exists():
        shutil.rmtree(spec.path)
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    started = time.monotonic()
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)  # a first run builds venvs before anything else wrote logs
    out = open(log, "a") if log else subprocess.DEVNULL
    try:
        subprocess.run([base_python, "-m", "venv", str(spec.path)], check=True, stdout=out, stderr=out)
        if spec.share_main_site_packages:
            site = Path(sysconfig.get_paths(vars={"base": sys.prefix, "platbase": sys.prefix})["purelib"])
            own = next((spec.path / "lib").glob("python*/site-packages"))
            (own / "zz_servable_main_venv.pth").write_text(str(site) + "\n")
        pip = [str(spec.python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        proc = subprocess.run(pip + list(spec.requirements), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if log:
            out.write(proc.stdout)
        if proc.returncode != 0:
            raise RuntimeError(f"pip install {' '.join(spec.requirements)} failed:\n{proc.stdout[-2000:]}")
    finally:
        if log:
            out.close()
    (spec.path / ".ready").write_text(spec.stamp())
    print(f"[venvs] {name}: ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return spec.python


def installed_version(name: str, package: str) -> str | None:
    """``package``'s version inside venv ``name`` (None if the venv is missing)."""
    spec = SPECS[name]
    if not spec.python.exists():
        return None
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    proc = subprocess.run([str(spec.python), "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONNOUSERSITE": "1"})
    return proc.stdout.strip() or None
