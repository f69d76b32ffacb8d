"""BatchingParameters: TF Serving defaults, validation messages, text-proto parsing."""

from __future__ import annotations

import pytest

from servable.batching import BatchingParameters, load_batching_parameters, parse_batching_parameters
from servable.batching.parameters import default_num_batch_threads
from servable.core.status import Code, ServingError


def test_defaults_match_tf_serving() -> None:
    p = BatchingParameters()
    assert p.max_batch_size == 1000
    assert p.batch_timeout_micros == 0
    assert p.max_enqueued_batches == 10
    assert p.num_batch_threads == default_num_batch_threads() >= 1
    assert p.thread_pool_name == "batch_threads"
    assert p.allowed_batch_sizes == ()
    assert p.pad_variable_length_inputs is False
    assert p.enable_large_batch_splitting is False
    assert p.execution_batch_size == 1000


def test_execution_batch_size_only_with_splitting() -> None:
    assert BatchingParameters(max_batch_size=8, max_execution_batch_size=4).execution_batch_size == 8
    split = BatchingParameters(max_batch_size=8, max_execution_batch_size=4, enable_large_batch_splitting=True)
    assert split.execution_batch_size == 4
    assert BatchingParameters(max_batch_size=8, enable_large_batch_splitting=True).execution_batch_size == 8


def test_padded_size() -> None:
    p = BatchingParameters(max_batch_size=8, allowed_batch_sizes=(2, 4, 8))
    assert [p.padded_size(n) for n in range(1, 9)] == [2, 2, 4, 4, 8, 8, 8, 8]
    assert BatchingParameters(max_batch_size=8).padded_size(3) == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_batch_size": 0}, "max_batch_size must be positive; was 0"),
        ({"batch_timeout_micros": -1}, "batch_timeout_micros must be non-negative; was -1"),
        ({"max_enqueued_batches": -2}, "max_enqueued_batches must be positive; was -2"),
        (
            {"max_enqueued_batches": 0, "enable_large_batch_splitting": True},
            "max_enqueued_batches must be positive; was 0",
        ),
        ({"num_batch_threads": 0}, "num_batch_threads must be positive; was 0"),
        (
            {"max_batch_size": 8, "allowed_batch_sizes": (2, 8, 4, 8)},
            "allowed_batch_sizes entries must be monotonically increasing",
        ),
        (
            {"max_batch_size": 8, "allowed_batch_sizes": (2, 4)},
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; expected 8",
        ),
        (
            {"max_batch_size": 8, "allowed_batch_sizes": (2, 16), "enable_large_batch_splitting": True},
            "Last entry in allowed_batch_sizes must be less than or equal to max_batch_size; "
            "last entry was 16; expected 8",
        ),
        (
            {
                "max_batch_size": 8,
                "max_execution_batch_size": 4,
                "allowed_batch_sizes": (2, 8),
                "enable_large_batch_splitting": True,
            },
            "Last entry in allowed_batch_sizes must be equal to max_execution_batch_size; "
            "last entry was 8; expected 4",
        ),
    ],
)
def test_validation_messages(kwargs: dict, message: str) -> None:
    with pytest.raises(ServingError) as info:
        BatchingParameters(**kwargs)
    assert info.value.code == Code.INVALID_ARGUMENT
    assert info.value.message == message


def test_splitting_requires_execution_size_not_above_max() -> None:
    with pytest.raises(ServingError, match="greater than or equal to max_execution_batch_size"):
        BatchingParameters(max_batch_size=4, max_execution_batch_size=8, enable_large_batch_splitting=True)


def test_zero_enqueued_batches_rewritten_to_one_without_splitting() -> None:
    assert BatchingParameters(max_enqueued_batches=0).max_enqueued_batches == 1


def test_valid_allowed_sizes_with_splitting() -> None:
    p = BatchingParameters(
        max_batch_size=16, max_execution_batch_size=8, allowed_batch_sizes=(4, 8), enable_large_batch_splitting=True
    )
    assert p.padded_size(5) == 8


def test_parse_tf_serving_example_file() -> None:
    text = """
    max_batch_size { value: 128 }
    batch_timeout_micros { value: 0 }
    max_enqueued_batches { value: 1000000 }
    num_batch_threads { value: 8 }
    """
    p = parse_batching_parameters(text)
    assert (p.max_batch_size, p.batch_timeout_micros, p.max_enqueued_batches, p.num_batch_threads) == (
        128,
        0,
        1000000,
        8,
    )
    assert p.thread_pool_name == "batch_threads"


def test_parse_every_field_and_round_trip() -> None:
    text = """
    max_batch_size { value: 32 }
    batch_timeout_micros { value: 5000 }
    max_enqueued_batches { value: 4 }
    num_batch_threads { value: 3 }
    thread_pool_name { value: "pool" }
    allowed_batch_sizes: 8
    allowed_batch_sizes: 16
    pad_variable_length_inputs: true
    enable_large_batch_splitting { value: true }
    max_execution_batch_size { value: 16 }
    """
    p = parse_batching_parameters(text)
    assert p == BatchingParameters(
        max_batch_size=32,
        batch_timeout_micros=5000,
        max_enqueued_batches=4,
        num_batch_threads=3,
        thread_pool_name="pool",
        allowed_batch_sizes=(8, 16),
        pad_variable_length_inputs=True,
        enable_large_batch_splitting=True,
        max_execution_batch_size=16,
    )
    assert BatchingParameters.from_proto(p.to_proto()) == p


def test_thread_pool_name_override_when_absent() -> None:
    p = parse_batching_parameters("", thread_pool_name="model_server_batch_threads")
    assert p.thread_pool_name == "model_server_batch_threads"


def test_syntax_error_names_file_and_line(tmp_path) -> None:
    path = tmp_path / "batching.txt"
    path.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { valu: 3 }\n")
    with pytest.raises(ServingError) as info:
        load_batching_parameters(str(path))
    assert info.value.code == Code.INVALID_ARGUMENT
    assert f"{path}:2:" in info.value.message
    assert "valu" in info.value.message
    # TF Serving's diagnostics first, as for the model config file.
    assert info.value.message.startswith(
        f"Invalid protobuf file: '{path}': Error parsing text-format tensorflow.serving.BatchingParameters: 2:"
    )


def test_invalid_values_in_file_name_the_file(tmp_path) -> None:
    path = tmp_path / "batching.txt"
    path.write_text("max_batch_size { value: 8 }\nallowed_batch_sizes: 4\n")
    with pytest.raises(ServingError) as info:
        load_batching_parameters(str(path))
    assert str(path) in info.value.message
    assert "Last entry in allowed_batch_sizes must match max_batch_size" in info.value.message


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ServingError) as info:
        load_batching_parameters(str(tmp_path / "absent.txt"))
    assert info.value.code == Code.INVALID_ARGUMENT
