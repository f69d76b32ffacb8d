"""``BatchingParameters``: TF Serving's batching knobs, their defaults and their validation.

The text form is TF Serving's ``BatchingParameters`` proto
(``servables/tensorflow/session_bundle_config.proto``) whose scalar fields are wrapper
messages, so a file reads ``max_batch_size { value: 128 }``. Parsing uses our own
generated proto (private descriptor pool) and yields a frozen, validated dataclass; every
error is a ``ServingError(INVALID_ARGUMENT)`` so the server reports it like TF Serving
fails a model load.

Semantics (TF Serving's ``SharedBatchScheduler`` queue options):
- ``max_batch_size`` bounds the size (0th dimension) of one request; without splitting it
  is also the largest batch run.
- With ``enable_large_batch_splitting`` a request may be split, and batches run with at
  most ``max_execution_batch_size`` rows (default: ``max_batch_size``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from google.protobuf import text_format

from servable._proto.tensorflow_serving.servables.tensorflow import session_bundle_config_pb2
from servable.core.status import ServingError, invalid_argument

DEFAULT_THREAD_POOL_NAME = "batch_threads"
# TF Serving's name when --enable_batching is given without a parameters file.
MODEL_SERVER_THREAD_POOL_NAME = "model_server_batch_threads"


def default_num_batch_threads() -> int:
    """Schedulable CPUs of this process (TF Serving: ``port::MaxParallelism()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class BatchingParameters:
    """Validated batching parameters; constructing an invalid set raises ``ServingError``.

    ``max_enqueued_batches == 0`` without splitting is rewritten to 1, as TF Serving does
    for old configs. ``max_execution_batch_size`` is only meaningful with splitting.
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=default_num_batch_threads)
    thread_pool_name: str = DEFAULT_THREAD_POOL_NAME
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_batch_sizes", tuple(int(s) for s in self.allowed_batch_sizes))
        if self.max_enqueued_batches == 0 and not self.enable_large_batch_splitting:
            object.__setattr__(self, "max_enqueued_batches", 1)
        _validate(self)

    @property
    def execution_batch_size(self) -> int:
        """The largest batch handed to the model."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size is not None:
            return self.max_execution_batch_size
        return self.max_batch_size

    def padded_size(self, batch_size: int) -> int:
        """The smallest allowed batch size >= ``batch_size`` (``batch_size`` if none)."""
        for allowed in self.allowed_batch_sizes:
            if allowed >= batch_size:
                return allowed
        return batch_size

    def replace(self, **changes: object) -> "BatchingParameters":
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    # -- proto ---------------------------------------------------------------------

    @classmethod
    def from_proto(
        cls, proto: session_bundle_config_pb2.BatchingParameters, *, thread_pool_name: str | None = None
    ) -> "BatchingParameters":
        """Fields absent from ``proto`` take TF Serving's defaults."""
        kwargs: dict[str, object] = {}
        for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
            if proto.HasField(name):
                kwargs[name] = int(getattr(proto, name).value)
        if proto.HasField("thread_pool_name"):
            kwargs["thread_pool_name"] = proto.thread_pool_name.value
        elif thread_pool_name is not None:
            kwargs["thread_pool_name"] = thread_pool_name
        kwargs["allowed_batch_sizes"] = tuple(int(s) for s in proto.allowed_batch_sizes)
        kwargs["pad_variable_length_inputs"] = bool(proto.pad_variable_length_inputs)
        if proto.HasField("enable_large_batch_splitting"):
            kwargs["enable_large_batch_splitting"] = bool(proto.enable_large_batch_splitting.value)
        if proto.HasField("max_execution_batch_size"):
            kwargs["max_execution_batch_size"] = int(proto.max_execution_batch_size.value)
        return cls(**kwargs)  # type: ignore[arg-type]

    def to_proto(self) -> session_bundle_config_pb2.BatchingParameters:
        proto = session_bundle_config_pb2.BatchingParameters()
        proto.max_batch_size.value = self.max_batch_size
        proto.batch_timeout_micros.value = self.batch_timeout_micros
        proto.max_enqueued_batches.value = self.max_enqueued_batches
        proto.num_batch_threads.value = self.num_batch_threads
        proto.thread_pool_name.value = self.thread_pool_name
        proto.allowed_batch_sizes.extend(self.allowed_batch_sizes)
        proto.pad_variable_length_inputs = self.pad_variable_length_inputs
        proto.enable_large_batch_splitting.value = self.enable_large_batch_splitting
        if self.max_execution_batch_size is not None:
            proto.max_execution_batch_size.value = self.max_execution_batch_size
        return proto


def _validate(p: BatchingParameters) -> None:
    """TF Serving's checks (SharedBatchScheduler::AddQueue, CreateBasicBatchingSession)."""
    if p.max_batch_size <= 0:
        raise invalid_argument(f"max_batch_size must be positive; was {p.max_batch_size}")
    if p.batch_timeout_micros < 0:
        raise invalid_argument(f"batch_timeout_micros must be non-negative; was {p.batch_timeout_micros}")
    if p.max_enqueued_batches <= 0:
        raise invalid_argument(f"max_enqueued_batches must be positive; was {p.max_enqueued_batches}")
    if p.num_batch_threads <= 0:
        raise invalid_argument(f"num_batch_threads must be positive; was {p.num_batch_threads}")
    if p.max_execution_batch_size is not None and p.max_execution_batch_size <= 0:
        raise invalid_argument(f"max_execution_batch_size must be positive; was {p.max_execution_batch_size}")
    if p.enable_large_batch_splitting and p.max_batch_size < p.execution_batch_size:
        raise invalid_argument(
            "When enable_large_batch_splitting is true, input_batch_size_limit must be greater than or "
            f"equal to max_execution_batch_size; max_batch_size was {p.max_batch_size}, "
            f"max_execution_batch_size was {p.execution_batch_size}"
        )
    sizes = p.allowed_batch_sizes
    if not sizes:
        return
    if any(s <= 0 for s in sizes):
        raise invalid_argument(f"allowed_batch_sizes entries must be positive; got {list(sizes)}")
    if any(b <= a for a, b in zip(sizes, sizes[1:])):
        raise invalid_argument("allowed_batch_sizes entries must be monotonically increasing")
    last = sizes[-1]
    if p.enable_large_batch_splitting:
        if last > p.max_batch_size:
            raise invalid_argument(
                "Last entry in allowed_batch_sizes must be less than or equal to max_batch_size; "
                f"last entry was {last}; expected {p.max_batch_size}"
            )
        if last != p.execution_batch_size:
            raise invalid_argument(
                "Last entry in allowed_batch_sizes must be equal to max_execution_batch_size; "
                f"last entry was {last}; expected {p.execution_batch_size}"
            )
    elif last != p.max_batch_size:
        raise invalid_argument(
            "Last entry in allowed_batch_sizes must match max_batch_size; "
            f"last entry was {last}; expected {p.max_batch_size}"
        )


def parse_batching_parameters(
    text: str, source: str = "<string>", *, thread_pool_name: str | None = None
) -> BatchingParameters:
    """Parse a ``BatchingParameters`` text proto; errors name ``source`` and the line."""
    proto = session_bundle_config_pb2.BatchingParameters()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as err:
        line, column = err.GetLine(), err.GetColumn()
        where = f"{source}:{line}:{column}" if line is not None else source
        detail = str(err)
        if line is not None and detail.startswith(f"{line}:{column} : "):
            detail = detail[len(f"{line}:{column} : ") :]
        # TF Serving's two diagnostics first, as for the model config file (config/errors.py).
        raise invalid_argument(
            f"Invalid protobuf file: '{source}': Error parsing text-format {proto.DESCRIPTOR.full_name}: "
            f"{line}:{column}: {detail} (at {where})"
        ) from None
    try:
        return BatchingParameters.from_proto(proto, thread_pool_name=thread_pool_name)
    except ServingError as err:
        raise invalid_argument(f"Invalid batching parameters in {source}: {err.message}") from None


def load_batching_parameters(path: str, *, thread_pool_name: str | None = None) -> BatchingParameters:
    """Read and parse a batching parameters file (``--batching_parameters_file``)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise invalid_argument(f"Could not read batching parameters file {path}: {err}") from None
    return parse_batching_parameters(text, path, thread_pool_name=thread_pool_name)
