"""TF Serving's ``tensorflow_model_server`` command line, parsed into ``Flags``.

``parse_flags(argv)`` is called once by ``servable.server.main`` on the main thread,
before anything starts; it never reads files (config files are read by
``servable.settings``). Every ``tensorflow_model_server`` flag exists here with TF
Serving's name and default, so a command line written for TF Serving works unchanged;
flags that only make sense for TF Serving's C++ runtime (GPU, TPU, TFLite, XLA...) are
accepted and documented as having no effect. servable's own flags ("extensions") are
listed separately by ``usage()``.

Syntax (absl / TensorFlow flags): ``--name=value`` or ``--name value`` (one dash works
too); booleans as ``--flag``, ``--flag=true|false|1|0|yes|no``, ``--noflag``. A flag
given twice keeps the last value. Errors raise ``FlagError`` with a message meant for
the operator, naming the flag and the value. Arguments that are no flag of ours (an
unknown name, a positional word) are kept in ``Flags.unknown_arguments``: TF Serving
prints "unknown argument" for them and keeps running, and so does ``servable.server``,
so a command line written for a newer TF Serving still starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any, Sequence

MIB = 1024 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 256 * MIB
GRPC_SERVER_MODES = ("threads", "asyncio")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# How a flag's value is used, shown by usage().
TF_SERVING = "tf_serving"  # a TF Serving flag servable honours
NO_EFFECT = "no_effect"  # a TF Serving flag accepted for compatibility, ignored
EXTENSION = "extension"  # a servable flag TF Serving does not have


class FlagError(Exception):
    """A command line TF Serving would refuse (``main`` prints it and exits 255, as TF Serving)."""


def _schedulable_cpus() -> int:
    """TF's ``port::NumSchedulableCPUs()``: CPUs this process may run on."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _flag(default: Any, help: str, *, kind: str = TF_SERVING, bits: int = 32, factory: Any = None) -> Any:
    """A dataclass field carrying the flag's help text, kind and integer width."""
    metadata = {"help": help, "kind": kind, "bits": bits}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _four_per_cpu() -> int:
    return 4 * _schedulable_cpus()


@dataclass
class Flags:
    """One field per ``tensorflow_model_server`` flag (same names and defaults), then extensions.

    Defaults equal TF Serving's ``main.cc`` / ``Server::Options``; the thread counts TF
    Serving derives from the CPU count (``rest_api_num_threads``, ``grpc_max_threads``,
    ``num_tflite_pools``) are derived the same way when the object is built.
    """

    # -- gRPC ---------------------------------------------------------------------------
    port: int = _flag(8500, "TCP port to listen on for gRPC API. Disabled if port set to zero.")
    grpc_socket_path: str = _flag("", "If non-empty, also listen to a UNIX socket for gRPC API on the given path.")
    grpc_channel_arguments: str = _flag(
        "", "A comma separated list of key=value arguments passed to the gRPC server "
        "(e.g. grpc.max_connection_age_ms=2000); int-parsable values are passed as ints."
    )
    grpc_max_threads: int = _flag(
        None, "Max threads handling gRPC requests (the threaded gRPC server's pool; also the size of the "
        "request worker pool the asyncio front doors use). "
        "Default: 4 x schedulable CPUs.", factory=_four_per_cpu
    )
    enable_grpc_healthcheck_service: bool = _flag(
        False, "Enable the standard gRPC health service (servable always serves grpc.health.v1)."
    )
    ssl_config_file: str = _flag(
        "", "If non-empty, read an ascii SSLConfig protobuf from this file and serve gRPC over TLS."
    )
    use_alts_credentials: bool = _flag(False, "Use Google ALTS credentials.", kind=NO_EFFECT)
    enable_serialization_as_tensor_content: bool = _flag(
        False, "Serialize Predict response tensors as tensor_content bytes."
    )
    # -- REST ---------------------------------------------------------------------------
    rest_api_port: int = _flag(
        0, "Port to listen on for HTTP/REST API. If zero, the HTTP/REST API is not exported. "
        "Must differ from --port."
    )
    rest_api_num_threads: int = _flag(
        None, "Number of threads for HTTP/REST API processing. Default: 4 x schedulable CPUs.",
        factory=_four_per_cpu,
    )
    rest_api_timeout_in_ms: int = _flag(30000, "Timeout for HTTP/REST API calls.")
    rest_api_enable_cors_support: bool = _flag(False, "Enable CORS headers in responses.")
    # -- models -------------------------------------------------------------------------
    model_name: str = _flag("default", "Name of the model (ignored if --model_config_file is set).")
    model_base_path: str = _flag(
        "", "Path to the export, excluding the version folder (ignored if --model_config_file is set)."
    )
    model_config_file: str = _flag(
        "", "If non-empty, read an ascii ModelServerConfig protobuf from this file and serve "
        "the models in it (--model_name and --model_base_path are then ignored)."
    )
    model_config_file_poll_wait_seconds: int = _flag(
        0, "Interval in seconds between polls of --model_config_file; zero reads it once."
    )
    file_system_poll_wait_seconds: int = _flag(
        1, "Interval in seconds between polls of the filesystem for new model versions; "
        "zero polls once, negative never."
    )
    flush_filesystem_caches: bool = _flag(
        True, "Flush filesystem caches after loads (C++ allocator detail).", kind=NO_EFFECT
    )
    allow_version_labels_for_unavailable_models: bool = _flag(
        False, "Allow assigning new version labels to versions that are not available yet."
    )
    saved_model_tags: str = _flag("serve", "Comma-separated set of tags of the MetaGraph to load from SavedModel.")
    platform_config_file: str = _flag(
        "", "If non-empty, read an ascii PlatformConfigMap protobuf from this file.", kind=NO_EFFECT
    )
    # -- loading ------------------------------------------------------------------------
    num_load_threads: int = _flag(0, "Threads loading servables (servable: 0 means 4 threads).")
    num_unload_threads: int = _flag(0, "Threads unloading servables (servable: 0 means 2 threads).")
    max_num_load_retries: int = _flag(
        5, "Times a failed load is retried before giving up; 0 attempts a load only once."
    )
    load_retry_interval_micros: int = _flag(
        60_000_000, "Microseconds between load retries; negative does not wait.", bits=64
    )
    enable_model_warmup: bool = _flag(True, "Replay assets.extra/tf_serving_warmup_requests at load time.")
    num_request_iterations_for_warmup: int = _flag(
        0, "Times each warmup request is replayed; used only if > 0."
    )
    # -- batching -----------------------------------------------------------------------
    enable_batching: bool = _flag(False, "Enable batching.")
    batching_parameters_file: str = _flag(
        "", "If non-empty, read an ascii BatchingParameters protobuf from this file "
        "(requires --enable_batching)."
    )
    enable_per_model_batching_parameters: bool = _flag(
        False, "Read batching_params.pbtxt from each model's version folder (with --enable_batching)."
    )
    # -- TensorFlow runtime -------------------------------------------------------------
    tensorflow_session_parallelism: int = _flag(
        0, "Threads for running a TensorFlow session; 0 auto-configures.", bits=64
    )
    tensorflow_intra_op_parallelism: int = _flag(
        0, "Threads parallelizing one op; 0 auto-configures.", bits=64
    )
    tensorflow_inter_op_parallelism: int = _flag(
        0, "Ops run simultaneously; 0 auto-configures.", bits=64
    )
    tensorflow_session_config_file: str = _flag(
        "", "If non-empty, read an ascii TensorFlow ConfigProto from this file.", kind=NO_EFFECT
    )
    per_process_gpu_memory_fraction: float = _flag(
        0.0, "Fraction of GPU memory each process occupies.", kind=NO_EFFECT
    )
    enable_signature_method_name_check: bool = _flag(
        False, "Require a signature's method_name to match the API (Predict/Classify/Regress)."
    )
    remove_unused_fields_from_bundle_metagraph: bool = _flag(
        True, "Remove unused fields from the MetaGraphDef to save memory.", kind=NO_EFFECT
    )
    prefer_tflite_model: bool = _flag(False, "Prefer model.tflite over saved_model.pb.", kind=NO_EFFECT)
    num_tflite_pools: int = _flag(
        None, "TFLite interpreter pools per model.", kind=NO_EFFECT, factory=_schedulable_cpus
    )
    num_tflite_interpreters_per_pool: int = _flag(1, "TFLite interpreters per pool.", kind=NO_EFFECT)
    xla_cpu_compilation_enabled: bool = _flag(False, "Enable XLA:CPU JIT.", kind=NO_EFFECT)
    xla_gpu_compilation_enabled: bool = _flag(False, "Enable XLA:CPU and XLA:GPU JIT.", kind=NO_EFFECT)
    enable_profiler: bool = _flag(True, "Register the TensorFlow profiler service.", kind=NO_EFFECT)
    thread_pool_factory_config_file: str = _flag(
        "", "If non-empty, read an ascii ThreadPoolConfig protobuf from this file.", kind=NO_EFFECT
    )
    mixed_precision: str = _flag("", "Mixed precision mode (e.g. bfloat16).", kind=NO_EFFECT)
    skip_initialize_tpu: bool = _flag(False, "Skip initializing the TPU system.", kind=NO_EFFECT)
    # -- monitoring and misc ------------------------------------------------------------
    monitoring_config_file: str = _flag(
        "", "If non-empty, read an ascii MonitoringConfig protobuf from this file "
        "(Prometheus metrics on the REST port)."
    )
    version: bool = _flag(False, "Display version and exit.")
    # -- servable extensions ------------------------------------------------------------
    help: bool = _flag(False, "Print this help and exit.", kind=EXTENSION)
    log_level: str = _flag("info", "Log level: " + ", ".join(LOG_LEVELS) + ".", kind=EXTENSION)
    grpc_address: str = _flag("0.0.0.0", "Address the gRPC server binds (TF Serving: always 0.0.0.0).", kind=EXTENSION)
    grpc_server_mode: str = _flag(
        "threads", "gRPC server: 'threads' (grpc's synchronous server, as TF Serving: each RPC decoded, run "
        "and encoded on one of --grpc_max_threads threads) or 'asyncio' (grpc.aio: RPCs on an event loop, "
        "model calls handed to worker or batch threads).", kind=EXTENSION,
    )
    rest_api_address: str = _flag("0.0.0.0", "Address the HTTP/REST server binds.", kind=EXTENSION)
    tensorflow_single_threaded_executor: bool = _flag(
        True, "Run a SavedModel signature's ops on the calling thread (TensorFlow's SINGLE_THREADED_EXECUTOR; "
        "ops still use the intra-op pool): no inter-op pool hand-offs per call. Graphs it refuses (loops, "
        "map_fn) keep TensorFlow's default executor. false: the default executor always.", kind=EXTENSION,
    )
    tensorflow_worker_process: bool = _flag(
        False, "Load SavedModels and run their signatures in one model worker process (started at the "
        "first load) instead of the server process. A crash or OOM kill of TensorFlow then leaves the "
        "server, its health answers and its other state up: calls answer UNAVAILABLE while a new worker "
        "starts and loads the same versions again. Costs 0.3-0.5 ms per call at low load; throughput "
        "within noise on 2 cores (docs/performance.md).", kind=EXTENSION,
    )
    warmup_signatures_without_file: bool = _flag(
        True, "With --enable_model_warmup and no warmup file, call every signature once with made-up "
        "inputs before the version is AVAILABLE (so the first request is not slow). Turn off for "
        "models whose signatures change state.", kind=EXTENSION,
    )
    grpc_max_message_bytes: int = _flag(
        0, "Largest gRPC request accepted, in bytes; larger requests get RESOURCE_EXHAUSTED "
        "naming this flag. 0 (the default) is TF Serving's limit, INT32_MAX (2 GiB - 1); "
        "set it lower on a server open to untrusted clients.",
        kind=EXTENSION, bits=64,
    )
    rest_api_max_body_bytes: int = _flag(
        DEFAULT_MAX_MESSAGE_BYTES, "Largest HTTP/REST request body accepted, in bytes (default 256 MiB).",
        kind=EXTENSION, bits=64,
    )
    max_tensor_elements: int = _flag(
        2**31 - 1, "Most elements one decoded request tensor may have; more is INVALID_ARGUMENT.",
        kind=EXTENSION, bits=64,
    )
    max_tensor_bytes: int = _flag(
        1 << 30, "Most bytes one decoded request tensor may occupy (default 1 GiB).", kind=EXTENSION, bits=64,
    )
    max_string_bytes: int = _flag(
        1 << 30, "Most bytes the strings of one request tensor may add up to (default 1 GiB).",
        kind=EXTENSION, bits=64,
    )
    max_examples: int = _flag(
        1 << 20, "Most tf.Examples one Classify/Regress/MultiInference request may carry.", kind=EXTENSION, bits=64,
    )
    max_json_depth: int = _flag(
        300, "Deepest JSON nesting the REST decoder accepts (tensor values beyond rank 63 are refused anyway).",
        kind=EXTENSION,
    )
    file_system_settle_seconds: float = _flag(
        0.1, "A new version folder must stay unchanged this long before it is loaded.", kind=EXTENSION
    )
    load_timeout_seconds: float = _flag(
        0.0, "Give up on a version whose load takes longer than this; 0 waits forever.", kind=EXTENSION
    )
    rest_api_enable_ssl: bool = _flag(
        False, "Serve HTTP/REST over TLS too, with --ssl_config_file's certificates (and client "
        "verification). Off by default: TF Serving's REST is plaintext.", kind=EXTENSION
    )
    shutdown_grace_period_seconds: float = _flag(
        15.0, "On SIGTERM/SIGINT, time in-flight requests get to finish.", kind=EXTENSION
    )


@dataclass(frozen=True)
class FlagSpec:
    """What the parser knows about one flag (built from ``Flags``' fields)."""

    name: str
    type: type
    default: Any
    help: str
    kind: str
    bits: int


def _specs() -> dict[str, FlagSpec]:
    defaults = Flags()
    types = {"int": int, "float": float, "str": str, "bool": bool}
    specs = {}
    for item in dataclasses.fields(Flags):
        specs[item.name] = FlagSpec(
            name=item.name,
            type=types[str(item.type)],
            default=getattr(defaults, item.name),
            help=item.metadata["help"],
            kind=item.metadata["kind"],
            bits=item.metadata["bits"],
        )
    return specs


FLAG_SPECS: dict[str, FlagSpec] = _specs()

_INT = re.compile(r"[+-]?[0-9]+")
_TRUE = frozenset({"true", "t", "1", "yes", "y"})
_FALSE = frozenset({"false", "f", "0", "no", "n"})
_ALIASES = {"h": "help", "helpfull": "help", "helpshort": "help"}


def _convert(spec: FlagSpec, raw: str) -> Any:
    """Turn the text of ``--name=raw`` into the flag's type, or raise ``FlagError``."""
    if spec.type is bool:
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise FlagError(f"Illegal value '{raw}' for boolean flag '{spec.name}' (use true or false)")
    if spec.type is int:
        text = raw.strip()
        if not _INT.fullmatch(text):
            raise FlagError(f"Illegal value '{raw}' for flag '{spec.name}': expected an integer")
        value = int(text)
        limit = 2 ** (spec.bits - 1)
        if not -limit <= value < limit:
            raise FlagError(f"Illegal value '{raw}' for flag '{spec.name}': out of range for int{spec.bits}")
        return value
    if spec.type is float:
        try:
            return float(raw.strip())
        except ValueError:
            raise FlagError(f"Illegal value '{raw}' for flag '{spec.name}': expected a number") from None
    return raw


def unknown_argument_hint(arg: str) -> str:
    """The line ``servable.server`` prints for an argument it ignores (TF Serving's text, plus a hint)."""
    message = f"unknown argument: {arg}"
    name = arg.lstrip("-").partition("=")[0]
    close = difflib.get_close_matches(name.replace("-", "_"), list(FLAG_SPECS), n=1, cutoff=0.8) if name else []
    if close:
        message += f" (did you mean --{close[0]}?)"
    return message + "; ignored, as TF Serving does"


def parse_flags(argv: Sequence[str]) -> Flags:
    """Parse ``argv`` (without the program name) into ``Flags``; raise ``FlagError`` if refused.

    Called by ``servable.server.main`` (main thread, once). Unknown names and positional
    words land in ``unknown_arguments`` (see the module doc). A boolean flag followed by
    a separate value (``--enable_batching false``) is refused instead: TF Serving would
    turn batching on and ignore "false", the opposite of what was written.
    """
    values: dict[str, Any] = {}
    unknown: list[str] = []
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--" or not arg.startswith("-") or arg == "-":
            unknown.append(arg)
            continue
        body = arg[2:] if arg.startswith("--") else arg[1:]
        name, has_value, raw = body.partition("=")
        name = _ALIASES.get(name, name)
        spec = FLAG_SPECS.get(name)
        if spec is None:
            base = name[2:] if name.startswith("no") else None
            if base is not None and base in FLAG_SPECS and FLAG_SPECS[base].type is bool and not has_value:
                values[base] = False
                continue
            unknown.append(arg)
            continue
        if spec.type is bool:
            if has_value:
                values[name] = _convert(spec, raw)
            else:
                values[name] = True
                if index < len(args) and args[index].lower() in _TRUE | _FALSE:
                    raise FlagError(
                        f"Boolean flag '{name}' takes its value after '=': write --{name}={args[index]}"
                    )
            continue
        if not has_value:
            if index >= len(args):
                raise FlagError(f"Missing value for flag '{name}'")
            raw = args[index]
            index += 1
        values[name] = _convert(spec, raw)
    flags = Flags(**values)
    flags.given = frozenset(values)  # which flags the command line set (not a TF Serving flag)
    flags.unknown_arguments = tuple(unknown)  # printed and ignored by servable.server.main
    check_flags(flags)
    return flags


def check_flags(flags: Flags) -> None:
    """Combinations TF Serving refuses at startup (its messages), plus servable's own checks."""
    if flags.batching_parameters_file and not flags.enable_batching:
        raise FlagError(
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    if (
        flags.tensorflow_session_parallelism > 0
        and flags.tensorflow_intra_op_parallelism > 0
        and flags.tensorflow_inter_op_parallelism > 0
    ):
        raise FlagError(
            "Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, "
            "server_options.tensorflow_inter_op_parallelism). Both cannot be set."
        )
    if flags.grpc_server_mode not in GRPC_SERVER_MODES:
        raise FlagError(
            f"Illegal value '{flags.grpc_server_mode}' for flag 'grpc_server_mode': expected one of "
            + ", ".join(GRPC_SERVER_MODES)
        )
    if flags.log_level.lower() not in LOG_LEVELS:
        raise FlagError(f"Illegal value '{flags.log_level}' for flag 'log_level': expected one of {', '.join(LOG_LEVELS)}")
    for name in ("grpc_max_message_bytes", "rest_api_max_body_bytes", "file_system_settle_seconds",
                 "load_timeout_seconds", "shutdown_grace_period_seconds", "max_tensor_elements",
                 "max_tensor_bytes", "max_string_bytes", "max_examples", "max_json_depth"):
        if getattr(flags, name) < 0:
            raise FlagError(f"Illegal value '{getattr(flags, name)}' for flag '{name}': must not be negative")


def _type_name(spec: FlagSpec) -> str:
    if spec.type is int:
        return f"int{spec.bits}"
    return {bool: "bool", float: "float", str: "string"}[spec.type]


def _usage_line(spec: FlagSpec) -> str:
    default = spec.default
    if spec.type is bool:
        default = "true" if default else "false"
    elif spec.type is str:
        default = f'"{default}"'
    marker = " [accepted, no effect]" if spec.kind == NO_EFFECT else ""
    body = textwrap.fill(spec.help, width=88, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return f"  --{spec.name}={default}  ({_type_name(spec)}){marker}\n{body}"


def usage(program: str = "python -m servable.server") -> str:
    """The ``--help`` text: TF Serving's flags, the accepted-but-ignored ones, then extensions."""
    sections = (
        (TF_SERVING, "TensorFlow Serving flags:"),
        (NO_EFFECT, "TensorFlow Serving flags accepted for compatibility (accepted, no effect):"),
        (EXTENSION, "servable extensions:"),
    )
    lines = [
        f"usage: {program} [--flag=value ...]",
        "",
        "Serves TensorFlow SavedModels with TensorFlow Serving's gRPC and REST APIs.",
        "Flags are written --name=value or --name value; booleans --flag, --flag=false or --noflag.",
        "With neither --model_base_path nor --model_config_file a built-in demo model is served.",
    ]
    for kind, title in sections:
        lines += ["", title]
        lines += [_usage_line(spec) for spec in FLAG_SPECS.values() if spec.kind == kind]
    return "\n".join(lines) + "\n"
