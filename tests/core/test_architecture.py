"""Architecture rules that code review alone would let slip."""

from __future__ import annotations

import subprocess
import sys


def _modules_after_import(*modules: str) -> set[str]:
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {line.split(".")[0] for line in out.split()}


def test_core_and_sources_import_neither_tensorflow_nor_network_libraries():
    loaded = _modules_after_import(
        "servable.core.manager", "servable.core.states", "servable.core.policies", "servable.core.handles",
        "servable.core.source", "servable.core.loader", "servable.sources.filesystem",
    )
    assert not loaded & {"tensorflow", "grpc", "aiohttp", "keras"}


def test_batching_and_tensor_conversion_do_not_import_tensorflow():
    loaded = _modules_after_import("servable.batching", "servable.tf.tensors", "servable.rest.json_codec")
    assert "tensorflow" not in loaded and "keras" not in loaded
