"""``python -m servable.server``: TF Serving's command line, servable's server.

Parses TF Serving's flags (``--name=value``), builds the model list (``--model_config_file``,
or ``--model_name``/``--model_base_path``, or the built-in demo model when neither is
given) and runs ``ModelServer`` until SIGTERM/SIGINT. Exit codes, as TF Serving's: 0 after
a clean or graceful shutdown (and for ``--help``, ``--version``), 255 (TF Serving's -1) for
a flag value it refuses, a bad config file or a failed start. Unknown arguments are
printed ("unknown argument: ...") and ignored, as TF Serving does.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable, Mapping, Sequence

from servable.core.loader import Loader


def default_loader_factories(
    *, tags: Sequence[str] = ("serve",), options: Any = None
) -> Mapping[str, Callable[[str, int, str], Loader]]:
    """Loader factories by ``model_platform``: "tensorflow" (SavedModel) and "python"."""
    from servable.python_model import make_python_loader_factory
    from servable.tf.loaders import make_loader_factory

    return {
        "tensorflow": make_loader_factory(tags=tuple(tags), options=options),
        "python": make_python_loader_factory(options),
    }


def _configure_logging(level: str) -> Callable[[], None]:
    """Log to stderr; request lines are written by a background thread. Returns its ``stop``.

    Why: the per-request line (``servable.requests``) is produced on the event loop,
    which must never wait on a slow stderr reader (see ``defer_request_lines``). The
    record's caller lookup and thread/process fields are turned off (the logging HOWTO's
    optimizations): the format does not use them and they cost more than the message.
    """
    from servable.serving import request_log

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(request_log.SERVER_FORMAT))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
    request_log.mark_server_handler(handler)
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return request_log.defer_request_lines()


EXIT_FAILURE = 255  # TF Serving's main returns -1 for refused flags and failed starts


def main(argv: Sequence[str] | None = None) -> int:
    from servable.config.flags import FlagError, parse_flags, unknown_argument_hint, usage

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        flags = parse_flags(args)
    except FlagError as error:
        print(f"servable: {error}\nRun with --help to list the flags.", file=sys.stderr)
        return EXIT_FAILURE
    for arg in flags.unknown_arguments:
        print(unknown_argument_hint(arg), file=sys.stderr)
    if flags.help:
        print(usage())
        return 0
    if flags.version:
        from servable import __version__

        print(f"TensorFlow ModelServer: servable-{__version__}\nTensorFlow Library: {_tensorflow_version()}")
        return 0
    stop_request_lines = _configure_logging(flags.log_level)
    try:
        return _serve(flags)
    finally:
        stop_request_lines()  # write the last request lines


def _tensorflow_version() -> str:
    """The installed TensorFlow's version, read from its package metadata (no import: fast)."""
    from importlib import metadata

    for distribution in ("tensorflow-cpu", "tensorflow", "tensorflow-intel", "tensorflow-macos"):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def _serve(flags: Any) -> int:
    from servable.settings import SettingsError, settings_from_flags

    try:
        settings, demo = settings_from_flags(flags)
    except SettingsError as error:
        print(f"Failed to start server. Error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    from servable.model_server import ModelServer

    if demo:
        from servable.demo import usage_hint

        def announce(server: ModelServer) -> None:
            print(usage_hint(server.grpc_port or 0, server.rest_port or 0), file=sys.stderr, flush=True)

        settings.on_ready = announce
    from servable.core.status import ServingError

    server = ModelServer(settings)
    _freeze_startup_objects(settings)
    try:
        return server.run()
    except KeyboardInterrupt:
        return 0
    except ServingError as error:  # the initial config refused (duplicate names, labels...)
        print(f"Failed to start server. Error: {error.status_text()}", file=sys.stderr)
        return EXIT_FAILURE
    except (OSError, RuntimeError) as error:  # a port taken, an address that cannot be bound
        print(f"Failed to start server. Error: {_bind_error_text(error, settings)}", file=sys.stderr)
        return EXIT_FAILURE


def _freeze_startup_objects(settings: Any) -> None:
    """Move every object alive now (TensorFlow, grpc, aiohttp, our modules) out of the cyclic GC.

    Called once by ``_serve``, after the imports and before the first model loads. Why: a
    version's unload ends with ``gc.collect()`` (TensorFlow objects hold reference
    cycles, and their memory must come back at once). A full collection walks every
    tracked object, about 330,000 once TensorFlow is imported, and holds the GIL while it
    does: 235-300 ms in which no request runs on 2 vCPUs. With those objects frozen
    (they live as long as the process), the collection walks only what was made since:
    5 ms per MLP unload, RSS flat over 30 load/unload cycles. Refcounting still frees
    frozen objects; only cycles among them would never be collected, and module-level
    objects made at start-up form none that die. Embedders choose for themselves
    (``gc.freeze()`` after their imports). TensorFlow, which loaders import lazily, is
    imported here first when a configured model needs it, so that it is frozen too.
    """
    import gc

    if any(getattr(model, "platform", "tensorflow") == "tensorflow" for model in settings.models):
        import tensorflow  # noqa: F401

    gc.collect()
    gc.freeze()


def _bind_error_text(error: BaseException, settings: Any) -> str:
    """One line for a front door that could not start, naming the port (no traceback)."""
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and settings.rest_port is not None:
        return f"cannot serve HTTP/REST on {settings.rest_address}:{settings.rest_port}: {text}"
    if "bind" in text.lower() or "port" in text.lower():
        return f"cannot serve gRPC on {settings.grpc.address}:{settings.grpc.port}: {text}"
    return text


if __name__ == "__main__":
    raise SystemExit(main())
