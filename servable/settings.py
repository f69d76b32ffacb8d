"""Turn parsed TF Serving flags into ``ServerSettings`` (models, core, front doors)."""

from __future__ import annotations

import os
from typing import Any

from servable.grpc_api.server import GrpcOptions
from servable.model_server import ServerSettings
from servable.serving.server_core import CoreOptions


class SettingsError(Exception):
    """Flags that parse but cannot be served (bad config file, missing TLS file...)."""


def settings_from_flags(flags: Any) -> tuple[ServerSettings, bool]:
    """Build the settings; returns them and whether the built-in demo model is served."""
    from servable.config import model_config

    demo = not flags.model_config_file and not flags.model_base_path
    try:
        if flags.model_config_file:
            models = model_config.load_model_config_file(flags.model_config_file)
        elif demo:
            from servable.demo import DEMO_MODEL_NAME, ensure_demo_model

            models = model_config.single_model_config(DEMO_MODEL_NAME, ensure_demo_model())
        else:
            models = model_config.single_model_config(flags.model_name, flags.model_base_path)
    except Exception as error:  # ConfigError and ServingError carry TF Serving's messages
        raise SettingsError(str(error)) from error

    ssl = None
    if flags.ssl_config_file:
        from servable.config.ssl import load_ssl_config

        try:
            ssl = load_ssl_config(flags.ssl_config_file)
        except Exception as error:
            raise SettingsError(str(error)) from error

    load_retry_interval_s = max(flags.load_retry_interval_micros, 0) / 1e6
    core = CoreOptions(
        file_system_poll_wait_seconds=float(flags.file_system_poll_wait_seconds),
        file_system_settle_seconds=float(getattr(flags, "file_system_settle_seconds", 0.1)),
        max_num_load_retries=max(flags.max_num_load_retries, 0),
        load_retry_interval_s=load_retry_interval_s,
        load_timeout_s=(getattr(flags, "load_timeout_seconds", 0) or None),
        num_load_threads=max(flags.num_load_threads, 0) or 4,
        num_unload_threads=max(flags.num_unload_threads, 0) or 2,
        allow_version_labels_for_unavailable_models=flags.allow_version_labels_for_unavailable_models,
    )
    grpc = GrpcOptions(
        address=getattr(flags, "grpc_address", "0.0.0.0"),
        port=flags.port,
        socket_path=flags.grpc_socket_path,
        max_message_bytes=getattr(flags, "grpc_max_message_bytes", 0),
        channel_arguments=flags.grpc_channel_arguments,
        tensor_content_outputs=flags.enable_serialization_as_tensor_content,
        enable_health=True,
        ssl=ssl,
    )
    rest_port = flags.rest_api_port if flags.rest_api_port > 0 else None
    if demo and rest_port is None:
        rest_port = 8501
    from servable.tf.loaders import LoaderOptions, make_loader_factory

    loader_options = LoaderOptions.from_flags(flags)
    tags = tuple(tag.strip() for tag in flags.saved_model_tags.split(",") if tag.strip())
    settings = ServerSettings(
        models=models,
        core=core,
        grpc=grpc,
        rest_port=rest_port,
        rest_address=getattr(flags, "rest_api_address", "0.0.0.0"),
        rest_options=_rest_options(flags),
        num_request_threads=max(flags.grpc_max_threads, 0) or 4 * (os.cpu_count() or 1),
        shutdown_grace_s=float(getattr(flags, "shutdown_grace_period_seconds", 15)),
        loader_factories={"tensorflow": make_loader_factory(tags=tags, options=loader_options)},
        model_config_file=flags.model_config_file,
        model_config_file_poll_wait_seconds=float(flags.model_config_file_poll_wait_seconds),
    )
    return settings, demo


def _rest_options(flags: Any) -> Any:
    from servable.rest.app import RestOptions

    return RestOptions.from_flags(flags)
