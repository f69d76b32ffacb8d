"""Flag syntax and defaults of TF Serving's ``tensorflow_model_server`` command line."""

from __future__ import annotations

import dataclasses
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servable.config.flags import EXTENSION, FLAG_SPECS, NO_EFFECT, FlagError, Flags, parse_flags, unknown_argument_hint, usage

CPUS = len(os.sched_getaffinity(0))

# TF Serving's main.cc / Server::Options defaults.
TF_SERVING_DEFAULTS = {
    "port": 8500,
    "grpc_socket_path": "",
    "rest_api_port": 0,
    "rest_api_num_threads": 4 * CPUS,
    "rest_api_timeout_in_ms": 30000,
    "rest_api_enable_cors_support": False,
    "enable_batching": False,
    "allow_version_labels_for_unavailable_models": False,
    "batching_parameters_file": "",
    "enable_per_model_batching_parameters": False,
    "model_config_file": "",
    "model_config_file_poll_wait_seconds": 0,
    "model_name": "default",
    "model_base_path": "",
    "num_load_threads": 0,
    "num_unload_threads": 0,
    "max_num_load_retries": 5,
    "load_retry_interval_micros": 60_000_000,
    "file_system_poll_wait_seconds": 1,
    "flush_filesystem_caches": True,
    "tensorflow_session_parallelism": 0,
    "tensorflow_session_config_file": "",
    "tensorflow_intra_op_parallelism": 0,
    "tensorflow_inter_op_parallelism": 0,
    "use_alts_credentials": False,
    "ssl_config_file": "",
    "platform_config_file": "",
    "per_process_gpu_memory_fraction": 0.0,
    "saved_model_tags": "serve",
    "grpc_channel_arguments": "",
    "grpc_max_threads": 4 * CPUS,
    "enable_model_warmup": True,
    "num_request_iterations_for_warmup": 0,
    "version": False,
    "monitoring_config_file": "",
    "remove_unused_fields_from_bundle_metagraph": True,
    "prefer_tflite_model": False,
    "num_tflite_pools": CPUS,
    "num_tflite_interpreters_per_pool": 1,
    "enable_signature_method_name_check": False,
    "xla_cpu_compilation_enabled": False,
    "xla_gpu_compilation_enabled": False,
    "enable_profiler": True,
    "thread_pool_factory_config_file": "",
    "mixed_precision": "",
    "skip_initialize_tpu": False,
    "enable_grpc_healthcheck_service": False,
    "enable_serialization_as_tensor_content": False,
}

EXTENSION_DEFAULTS = {
    "help": False,
    "warmup_signatures_without_file": True,
    "log_level": "info",
    "grpc_address": "0.0.0.0",
    "grpc_server_mode": "threads",
    "rest_api_address": "0.0.0.0",
    "tensorflow_single_threaded_executor": True,
    "tensorflow_worker_process": False,
    "grpc_max_message_bytes": 0,  # TF Serving's INT32_MAX
    "rest_api_max_body_bytes": 256 * 1024 * 1024,
    "file_system_settle_seconds": 0.1,
    "load_timeout_seconds": 0.0,
    "shutdown_grace_period_seconds": 15.0,
    "max_tensor_elements": 2**31 - 1,
    "max_tensor_bytes": 1 << 30,
    "max_string_bytes": 1 << 30,
    "max_examples": 1 << 20,
    "max_json_depth": 300,
    "rest_api_enable_ssl": False,
}


def test_defaults_equal_tf_serving() -> None:
    flags = parse_flags([])
    assert {name: getattr(flags, name) for name in TF_SERVING_DEFAULTS} == TF_SERVING_DEFAULTS
    assert {name: getattr(flags, name) for name in EXTENSION_DEFAULTS} == EXTENSION_DEFAULTS


def test_every_flag_is_tf_serving_or_a_documented_extension() -> None:
    names = {item.name for item in dataclasses.fields(Flags)}
    assert names == set(TF_SERVING_DEFAULTS) | set(EXTENSION_DEFAULTS)
    assert {name for name, spec in FLAG_SPECS.items() if spec.kind == EXTENSION} == set(EXTENSION_DEFAULTS)


@pytest.mark.parametrize(
    "argv",
    [
        ["--port=9000", "--model_name=m"],
        ["--port", "9000", "--model_name", "m"],
        ["-port=9000", "-model_name", "m"],
        ["--port=1", "--port=9000", "--model_name=m"],  # last one wins
    ],
)
def test_value_syntaxes(argv: list[str]) -> None:
    flags = parse_flags(argv)
    assert (flags.port, flags.model_name) == (9000, "m")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--enable_batching"], True),
        (["--enable_batching=true"], True),
        (["--enable_batching=True"], True),
        (["--enable_batching=1"], True),
        (["--enable_batching=false"], False),
        (["--enable_batching=0"], False),
        (["--enable_batching", "--noenable_batching"], False),
        (["--noenable_batching", "--enable_batching"], True),
    ],
)
def test_boolean_syntaxes(argv: list[str], expected: bool) -> None:
    assert parse_flags(argv).enable_batching is expected


def test_no_prefix_turns_off_a_true_default() -> None:
    flags = parse_flags(["--noenable_model_warmup", "--noflush_filesystem_caches"])
    assert flags.enable_model_warmup is False
    assert flags.flush_filesystem_caches is False


def test_values_keep_equals_signs_and_negatives() -> None:
    flags = parse_flags(["--grpc_channel_arguments=grpc.max_connection_age_ms=2000", "--file_system_poll_wait_seconds", "-1",
                         "--load_retry_interval_micros=-5", "--per_process_gpu_memory_fraction=0.5",
                         "--model_base_path="])
    assert flags.grpc_channel_arguments == "grpc.max_connection_age_ms=2000"
    assert flags.file_system_poll_wait_seconds == -1
    assert flags.load_retry_interval_micros == -5
    assert flags.per_process_gpu_memory_fraction == 0.5
    assert flags.model_base_path == ""


def test_int64_flag_accepts_large_values_int32_refuses_them() -> None:
    assert parse_flags(["--load_retry_interval_micros=9000000000"]).load_retry_interval_micros == 9_000_000_000
    with pytest.raises(FlagError, match="'port'.*int32"):
        parse_flags(["--port=9000000000"])


def test_extensions_parse() -> None:
    flags = parse_flags(["--grpc_address=127.0.0.1", "--rest_api_address=::1", "--log_level=debug",
                         "--file_system_settle_seconds=0.5", "--load_timeout_seconds=30",
                         "--shutdown_grace_period_seconds=2.5", "--grpc_max_message_bytes=0", "-h"])
    assert (flags.grpc_address, flags.rest_api_address, flags.log_level) == ("127.0.0.1", "::1", "debug")
    assert (flags.file_system_settle_seconds, flags.load_timeout_seconds) == (0.5, 30.0)
    assert (flags.shutdown_grace_period_seconds, flags.grpc_max_message_bytes, flags.help) == (2.5, 0, True)


def test_grpc_server_mode_values() -> None:
    assert parse_flags(["--grpc_server_mode=asyncio"]).grpc_server_mode == "asyncio"
    assert parse_flags(["--grpc_server_mode=threads"]).grpc_server_mode == "threads"
    with pytest.raises(FlagError, match="'grpc_server_mode': expected one of threads, asyncio"):
        parse_flags(["--grpc_server_mode=fast"])


def test_unknown_arguments_are_kept_apart_not_refused() -> None:
    flags = parse_flags(["--bogus=1", "--port=9000", "positional", "--", "-x"])
    assert flags.unknown_arguments == ("--bogus=1", "positional", "--", "-x")
    assert flags.port == 9000
    assert parse_flags(["--port=9000"]).unknown_arguments == ()


def test_unknown_argument_hint_suggests_the_close_name() -> None:
    assert unknown_argument_hint("--model-base-path=/m") == (
        "unknown argument: --model-base-path=/m (did you mean --model_base_path?); ignored, as TF Serving does"
    )
    assert unknown_argument_hint("stray") == "unknown argument: stray; ignored, as TF Serving does"


def test_no_prefix_only_for_booleans() -> None:
    assert parse_flags(["--noport"]).unknown_arguments == ("--noport",)
    assert parse_flags(["--noenable_batching"]).enable_batching is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port=abc"], "Illegal value 'abc' for flag 'port': expected an integer"),
        (["--port=1.5"], "Illegal value '1.5' for flag 'port': expected an integer"),
        (["--port="], "Illegal value '' for flag 'port': expected an integer"),
        (["--rest_api_port", "x"], "Illegal value 'x' for flag 'rest_api_port': expected an integer"),
        (["--per_process_gpu_memory_fraction=lots"], "Illegal value 'lots' for flag 'per_process_gpu_memory_fraction'"),
        (["--enable_batching=maybe"], "Illegal value 'maybe' for boolean flag 'enable_batching'"),
        (["--model_name"], "Missing value for flag 'model_name'"),
        (["--enable_batching", "false"], "write --enable_batching=false"),
        (["--log_level=loud"], "Illegal value 'loud' for flag 'log_level'"),
        (["--shutdown_grace_period_seconds=-1"], "'shutdown_grace_period_seconds': must not be negative"),
    ],
)
def test_bad_values_name_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(FlagError) as info:
        parse_flags(argv)
    assert message in str(info.value)


def test_batching_file_without_batching_is_refused_like_tf_serving() -> None:
    with pytest.raises(FlagError, match="batching_parameters_file is set without setting server_options.enable_batching to true"):
        parse_flags(["--batching_parameters_file=/b.txt"])
    assert parse_flags(["--batching_parameters_file=/b.txt", "--enable_batching"]).enable_batching


def test_all_three_parallelism_flags_are_refused() -> None:
    with pytest.raises(FlagError, match="Both cannot be set"):
        parse_flags(["--tensorflow_session_parallelism=2", "--tensorflow_intra_op_parallelism=2",
                     "--tensorflow_inter_op_parallelism=2"])
    parse_flags(["--tensorflow_intra_op_parallelism=2", "--tensorflow_inter_op_parallelism=2"])


def test_usage_lists_every_flag_and_marks_the_ignored_ones() -> None:
    text = usage()
    for name, spec in FLAG_SPECS.items():
        assert f"--{name}=" in text
    ignored = [name for name, spec in FLAG_SPECS.items() if spec.kind == NO_EFFECT]
    assert "per_process_gpu_memory_fraction" in ignored and "prefer_tflite_model" in ignored
    assert text.count("[accepted, no effect]") == len(ignored)
    assert "--port=8500  (int32)" in text
    assert '--model_name="default"  (string)' in text


_INT32 = st.integers(-(2**31), 2**31 - 1)
_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)


@given(port=_INT32, name=_TEXT, tags=_TEXT, batching=st.booleans(), warmup=st.booleans(),
       fraction=st.floats(allow_nan=False, allow_infinity=False))
@settings(max_examples=60, deadline=None)
def test_any_value_round_trips_through_name_equals_value(port, name, tags, batching, warmup, fraction) -> None:
    argv = [f"--port={port}", f"--model_name={name}", f"--saved_model_tags={tags}",
            f"--enable_batching={str(batching).lower()}", "--enable_model_warmup" if warmup else "--noenable_model_warmup",
            f"--per_process_gpu_memory_fraction={fraction!r}"]
    flags = parse_flags(argv)
    assert (flags.port, flags.model_name, flags.saved_model_tags) == (port, name, tags)
    assert (flags.enable_batching, flags.enable_model_warmup, flags.per_process_gpu_memory_fraction) == (batching, warmup, fraction)
