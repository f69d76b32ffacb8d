"""Helpers to run a real servable server in-process (background event loop) for tests."""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any, Iterator

from servable.config.model_config import ModelConfig
from servable.grpc_api.server import GrpcOptions
from servable.model_server import ModelServer, ServerSettings
from servable.serving.server_core import CoreOptions
from servable.sources.version_policy import Latest


def copy_version(export: str, base_path: str, version: int | str) -> str:
    """Copy an exported SavedModel into ``base_path/<version>`` atomically (rename into place)."""
    os.makedirs(base_path, exist_ok=True)
    target = os.path.join(base_path, str(version))
    staging = os.path.join(base_path, f".incoming-{version}")
    shutil.copytree(export, staging)
    os.rename(staging, target)
    return target


def model(name: str, base_path: str, policy: Any = None, labels: dict[str, int] | None = None, platform: str = "tensorflow") -> ModelConfig:
    return ModelConfig(
        name=name,
        base_path=str(base_path),
        platform=platform,
        version_policy=policy or Latest(1),
        version_labels=labels or {},
    )


@contextlib.contextmanager
def running_server(models: list[ModelConfig], *, rest: bool = True, core: CoreOptions | None = None,
                   grpc_options: GrpcOptions | None = None, rest_options: Any = None, **settings: Any) -> Iterator[ModelServer]:
    from servable.server import default_loader_factories

    core = core or CoreOptions(file_system_poll_wait_seconds=0.5, load_retry_interval_s=0.05, max_num_load_retries=0)
    grpc_opts = grpc_options or GrpcOptions(address="127.0.0.1", port=0)
    server_settings = ServerSettings(
        models=models,
        core=core,
        grpc=grpc_opts,
        rest_port=0 if rest else None,
        rest_address="127.0.0.1",
        rest_options=rest_options,
        loader_factories=settings.pop("loader_factories", None) or default_loader_factories(),
        **settings,
    )
    server = ModelServer(server_settings)
    server.start_in_thread()
    try:
        yield server
    finally:
        server.stop()
