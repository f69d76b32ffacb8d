"""Turn parsed TF Serving flags into ``ServerSettings`` (models, core, front doors)."""

from __future__ import annotations

import logging
import os
from typing import Any

from servable.grpc_api.server import GrpcOptions
from servable.model_server import ServerSettings
from servable.serving.server_core import CoreOptions

log = logging.getLogger(__name__)


class SettingsError(Exception):
    """Flags that parse but cannot be served (bad config file, missing TLS file...)."""


def _status_text(error: Exception) -> str:
    """TF Serving prints a failed start's status as ``CODE: message``."""
    from servable.core.status import ServingError

    return error.status_text() if isinstance(error, ServingError) else str(error)


def check_server_options(flags: Any) -> None:
    """TF Serving's start-up refusals of flag combinations (its texts), as ``SettingsError``.

    The demo model is served only when no model flag at all is given: ``--model_name``
    alone is TF Serving's "both empty" error, not a request for the demo.
    """
    if flags.port == 0 and not flags.grpc_socket_path:
        raise SettingsError("At least one of server_options.grpc_port or server_options.grpc_socket_path must be set.")
    given = getattr(flags, "given", frozenset())
    if "model_name" in given and not flags.model_base_path and not flags.model_config_file:
        raise SettingsError("Both server_options.model_base_path and server_options.model_config_file are empty!")


def settings_from_flags(flags: Any) -> tuple[ServerSettings, bool]:
    """Build the settings; returns them and whether the built-in demo model is served."""
    from servable.config import model_config

    check_server_options(flags)
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
        raise SettingsError(_status_text(error)) from error

    ssl = None
    if flags.ssl_config_file:
        from servable.config.ssl import load_ssl_config

        try:
            ssl = load_ssl_config(flags.ssl_config_file)
        except Exception as error:
            raise SettingsError(_status_text(error)) from error

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
    limits = input_limits(flags)
    grpc = GrpcOptions(
        address=getattr(flags, "grpc_address", "0.0.0.0"),
        port=flags.port,
        socket_path=flags.grpc_socket_path,
        max_message_bytes=getattr(flags, "grpc_max_message_bytes", 0),
        channel_arguments=flags.grpc_channel_arguments,
        tensor_content_outputs=flags.enable_serialization_as_tensor_content,
        enable_health=True,
        ssl=ssl,
        limits=limits,
    )
    rest_port = flags.rest_api_port if flags.rest_api_port > 0 else None
    if demo and rest_port is None:
        rest_port = 8501
    if rest_port is not None and rest_port == flags.port:
        # TF Serving's server.cc logs this and serves gRPC only.
        log.error(
            "server_options.http_port cannot be same as grpc_port. Please use a different port for "
            "HTTP/REST API. Skipped exporting HTTP/REST API. (--rest_api_port=%d is also --port)", rest_port
        )
        rest_port = None
    from servable.server import default_loader_factories
    from servable.tf.loaders import LoaderOptions

    loader_options = LoaderOptions.from_flags(flags)
    if getattr(flags, "tensorflow_worker_process", False):
        from servable.tf.worker import ModelProcess

        loader_options.model_process = ModelProcess(
            intra_op=loader_options.intra_op, inter_op=loader_options.inter_op,
            log_level=str(getattr(flags, "log_level", "info")),
        )
    batch_scheduler, batch_observers = _batching(flags, loader_options)
    tags = tuple(tag.strip() for tag in flags.saved_model_tags.split(",") if tag.strip())
    settings = ServerSettings(
        models=models,
        core=core,
        grpc=grpc,
        rest_port=rest_port,
        rest_address=getattr(flags, "rest_api_address", "0.0.0.0"),
        rest_options=_rest_options(flags),
        num_request_threads=max(flags.grpc_max_threads, 0) or 4 * (os.cpu_count() or 1),
        grpc_server_mode=getattr(flags, "grpc_server_mode", "threads"),
        shutdown_grace_s=float(getattr(flags, "shutdown_grace_period_seconds", 15)),
        loader_factories=default_loader_factories(tags=tags, options=loader_options),
        model_config_file=flags.model_config_file,
        rest_tls=bool(getattr(flags, "rest_api_enable_ssl", False)),
        batch_scheduler=batch_scheduler,
        model_process=loader_options.model_process,
        batch_observers=batch_observers,
        model_config_file_poll_wait_seconds=float(flags.model_config_file_poll_wait_seconds),
    )
    return settings, demo


def _rest_options(flags: Any) -> Any:
    """The REST door's options; a bad ``--monitoring_config_file`` is a failed start, no traceback."""
    from servable.rest.app import RestOptions

    try:
        return RestOptions.from_flags(flags, limits=input_limits(flags))
    except Exception as error:  # ConfigError carries TF Serving's "Invalid protobuf file" text
        raise SettingsError(_status_text(error)) from error


def input_limits(flags: Any) -> Any:
    """``servable.limits.InputLimits`` from the ``--max_*`` flags (defaults when absent)."""
    from servable.limits import DEFAULT_LIMITS, InputLimits

    return InputLimits(
        max_request_bytes=int(getattr(flags, "rest_api_max_body_bytes", 0) or DEFAULT_LIMITS.max_request_bytes),
        max_tensor_elements=int(getattr(flags, "max_tensor_elements", DEFAULT_LIMITS.max_tensor_elements)),
        max_tensor_bytes=int(getattr(flags, "max_tensor_bytes", DEFAULT_LIMITS.max_tensor_bytes)),
        max_string_bytes=int(getattr(flags, "max_string_bytes", DEFAULT_LIMITS.max_string_bytes)),
        max_examples=int(getattr(flags, "max_examples", DEFAULT_LIMITS.max_examples)),
        max_json_depth=int(getattr(flags, "max_json_depth", DEFAULT_LIMITS.max_json_depth)),
    )


def _batching(flags: Any, loader_options: Any) -> Any:
    """With ``--enable_batching``: one shared scheduler, and a wrapper around every version.

    ``--batching_parameters_file`` gives the parameters (TF Serving's defaults without
    it). With ``--enable_per_model_batching_parameters`` only versions whose folder holds a
    ``batching_params.pbtxt`` are batched, with that file's parameters; the global file
    then only sizes the shared batch threads, and a version without the file is served
    unbatched (TF Serving's ``GetPerModelBatchingParams``). Returns the scheduler and the
    observers of its batches (None without batching).
    """
    if not getattr(flags, "enable_batching", False):
        return None, None
    from servable.batching import BatchingParameters, create_scheduler, load_batching_parameters, wrap_servable

    try:
        params = (
            load_batching_parameters(flags.batching_parameters_file)
            if flags.batching_parameters_file
            else BatchingParameters()
        )
    except Exception as error:
        raise SettingsError(_status_text(error)) from error
    scheduler = create_scheduler(params)
    observers = BatchObservers()
    per_model = bool(getattr(flags, "enable_per_model_batching_parameters", False))

    def wrap(servable: Any, version_path: str, model_name: str) -> Any:
        version_params = params
        if per_model:
            candidate = os.path.join(version_path, "batching_params.pbtxt")
            if not os.path.isfile(candidate):
                return servable
            version_params = load_batching_parameters(candidate)
        # The served model's name (the config's or --model_name), not its base path's folder.
        name = model_name or os.path.basename(os.path.dirname(os.path.abspath(version_path)))
        try:
            version = int(os.path.basename(os.path.abspath(version_path)))
        except ValueError:
            version = None
        return wrap_servable(
            servable, version_params, scheduler, model_name=name, version=version, on_batch=observers.notify
        )

    loader_options.wrap_servable = wrap
    return scheduler, observers


class BatchObservers:
    """Fan-out of batching events to whoever records them (the server's metrics)."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def notify(self, queue_id: Any, batch_size: int, padded_size: int, queue_seconds: float) -> None:
        for callback in list(self.callbacks):
            callback(queue_id, batch_size, padded_size, queue_seconds)

