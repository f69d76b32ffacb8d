"""Bounds on what one client request may make the server decode or allocate.

Every decoder that takes client bytes (``servable.tf.tensors``, the REST JSON decoder, the
tf.Example paths) checks its counts against an ``InputLimits`` BEFORE it allocates, so a
small request can never ask for a huge buffer (for example one ``float_val`` broadcast to a
shape of ``[2**40]``). A limit that is hit is the client's fault and answers
INVALID_ARGUMENT with a message naming the limit.

The defaults are generous enough for any request TF Serving itself would serve from a
machine with a few GiB of memory, and small enough that a single request cannot take the
process down. Operators wanting other bounds build their own ``InputLimits`` and pass it to
the decoders; nothing here is global mutable state.
"""

from __future__ import annotations

import dataclasses

GiB = 1 << 30

# TensorFlow's TensorShape::MaxDimensions(): a tensor has at most 254 dimensions.
MAX_TENSOR_RANK = 254


@dataclasses.dataclass(frozen=True)
class InputLimits:
    """Per-request decoding bounds (all counts are upper bounds, inclusive).

    Attributes:
        max_request_bytes: largest request body the REST front door reads (the gRPC front
            door has its own message-size flag). Default 1 GiB.
        max_tensor_elements: most elements one decoded tensor may have, whatever its dtype.
            Default 2**31 - 1 (TF's int32-indexed kernels misbehave beyond it).
        max_tensor_bytes: most bytes one decoded tensor may occupy (element count times the
            item size; 8 bytes of pointer per element for string tensors). This is what
            stops a one-value ``*_val`` list from broadcasting into gigabytes. Default 1 GiB.
        max_string_bytes: most bytes the elements of one string tensor may add up to, after
            broadcasting (TensorFlow copies every element into its own buffer). Default 1 GiB.
        max_examples: most tf.Examples one Classify/Regress request may carry. Default 2**20.
        max_json_depth: deepest JSON nesting the REST decoder accepts; a rank-254 tensor
            needs 254 levels plus a few for the request object. Default 300.
    """

    max_request_bytes: int = GiB
    max_tensor_elements: int = 2**31 - 1
    max_tensor_bytes: int = GiB
    max_string_bytes: int = GiB
    max_examples: int = 1 << 20
    max_json_depth: int = 300

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"InputLimits.{field.name} must be a non-negative int, got {value!r}")


DEFAULT_LIMITS = InputLimits()
