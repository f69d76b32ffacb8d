"""Translation between TF Serving's gRPC messages and the internal request path."""

from __future__ import annotations

from typing import Any

import grpc

from servable.core.status import Code, ServingError, invalid_argument
from servable.serving.service import ModelSpecRef

_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}
MAX_MESSAGE_CHARS = 1024


def grpc_code(code: Code) -> grpc.StatusCode:
    return _GRPC_CODES.get(int(code), grpc.StatusCode.UNKNOWN)


def error_details(error: ServingError) -> str:
    """TF Serving truncates gRPC error messages to 1024 characters (grpc_status_util.cc)."""
    message = error.message
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + "...TRUNCATED"
    return message


def spec_from_proto(model_spec: Any, *, required: bool = True) -> ModelSpecRef:
    """Read a ``tensorflow.serving.ModelSpec`` (our generated class)."""
    choice = model_spec.WhichOneof("version_choice")
    version = model_spec.version.value if choice == "version" else None
    label = model_spec.version_label if choice == "version_label" else None
    return ModelSpecRef(model_spec.name, version, label, model_spec.signature_name)


def fill_spec(target: Any, name: str, version: int, signature_name: str | None) -> None:
    """Write the resolved model spec into a response (numeric version, signature filled in)."""
    target.name = name
    target.version.value = version
    if signature_name is not None:
        target.signature_name = signature_name


def examples_from_input(input_proto: Any) -> list[bytes]:
    """Serialized ``tf.Example``s of a ``tensorflow.serving.Input``, context merged.

    With ``ExampleListWithContext`` each example is fed as serialized(context) followed by
    serialized(example): protobuf merge semantics make the example's features win, as in
    TF Serving.
    """
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        return [example.SerializeToString() for example in input_proto.example_list.examples]
    if kind == "example_list_with_context":
        with_context = input_proto.example_list_with_context
        context = with_context.context.SerializeToString()
        return [context + example.SerializeToString() for example in with_context.examples]
    return []
