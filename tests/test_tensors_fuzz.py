"""Property tests: whatever a client sends, decoding gives an ndarray or INVALID_ARGUMENT.

Bounded to a few seconds (``max_examples``); the open-ended search lives in
``fuzz/fuzz_tensors.py`` (atheris). Memory is checked with tracemalloc, which sees numpy's
allocations: decoding never takes much more than the limits allow.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from servable._proto.tensorflow.core.framework import tensor_pb2, types_pb2
from servable.core.status import Code, ServingError
from servable.limits import InputLimits
from servable.tf.tensors import ndarray_to_tensor_proto, numpy_dtype, tensor_proto_to_ndarray

LIMITS = InputLimits(max_tensor_elements=1 << 16, max_tensor_bytes=1 << 18, max_string_bytes=1 << 18)
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INT32 = st.integers(-(2**31), 2**31 - 1)
DTYPE_NUMBERS = st.one_of(
    st.sampled_from(types_pb2.DataType.values()),
    st.integers(-10, 200),
    st.integers(-(2**31), 2**31 - 1),
)
DIM = st.one_of(
    st.integers(0, 4),
    st.integers(0, 70000),
    st.sampled_from([-1, -2, 2**31 - 1, 2**31, 2**32, 2**62, 2**63 - 1, -(2**63)]),
)
SHAPES = st.one_of(st.lists(DIM, max_size=6), st.lists(st.integers(0, 2), min_size=250, max_size=260))

FIELDS = {
    "float_val": st.lists(st.floats(width=32), max_size=8),
    "double_val": st.lists(st.floats(), max_size=8),
    "int_val": st.lists(INT32, max_size=8),
    "int64_val": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=8),
    "uint32_val": st.lists(st.integers(0, 2**32 - 1), max_size=8),
    "uint64_val": st.lists(st.integers(0, 2**64 - 1), max_size=8),
    "bool_val": st.lists(st.booleans(), max_size=8),
    "half_val": st.lists(INT32, max_size=8),
    "scomplex_val": st.lists(st.floats(width=32), max_size=9),
    "dcomplex_val": st.lists(st.floats(), max_size=9),
    "string_val": st.lists(st.binary(max_size=40), max_size=8),
}


@st.composite
def tensor_protos(draw: st.DrawFn) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=draw(DTYPE_NUMBERS))
    shape = draw(SHAPES)
    if draw(st.booleans()) or shape:
        proto.tensor_shape.SetInParent()
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    proto.tensor_shape.unknown_rank = draw(st.booleans())
    if draw(st.booleans()):
        proto.tensor_content = draw(st.binary(max_size=96))
    for name in draw(st.sets(st.sampled_from(sorted(FIELDS)), max_size=3)):
        getattr(proto, name).extend(draw(FIELDS[name]))
    return proto


def check_outcome(proto: tensor_pb2.TensorProto, limits: InputLimits = LIMITS) -> np.ndarray | None:
    """Decode under tracemalloc; the only outcomes are a well-formed array or INVALID_ARGUMENT."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        try:
            array = tensor_proto_to_ndarray(proto, limits)
        except ServingError as error:
            assert error.code == Code.INVALID_ARGUMENT, error
            assert error.message
            return None
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    wire = proto.ByteSize()
    assert peak <= 2 * limits.max_tensor_bytes + 4 * wire + (1 << 16), (peak, wire)
    assert isinstance(array, np.ndarray)
    assert array.dtype == numpy_dtype(proto.dtype)
    assert array.shape == tuple(dim.size for dim in proto.tensor_shape.dim)
    assert array.size <= limits.max_tensor_elements
    assert array.nbytes <= limits.max_tensor_bytes
    if array.dtype == object:
        items = array.ravel().tolist()
        assert all(type(item) is bytes for item in items)
        assert sum(map(len, items)) <= limits.max_string_bytes
    return array


@FAST
@given(tensor_protos())
def test_arbitrary_tensor_protos(proto: tensor_pb2.TensorProto) -> None:
    wire = tensor_pb2.TensorProto.FromString(proto.SerializeToString())
    check_outcome(wire)


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    try:
        proto = tensor_pb2.TensorProto.FromString(data)
    except DecodeError:
        return  # the gRPC layer answers unparsable messages itself
    check_outcome(proto)


@FAST
@given(tensor_protos(), st.data())
def test_mutated_wire_bytes(proto: tensor_pb2.TensorProto, data: st.DataObject) -> None:
    wire = bytearray(proto.SerializeToString())
    for _ in range(data.draw(st.integers(1, 4))):
        if not wire:
            break
        index = data.draw(st.integers(0, len(wire) - 1))
        wire[index] = data.draw(st.integers(0, 255))
    try:
        mutated = tensor_pb2.TensorProto.FromString(bytes(wire))
    except DecodeError:
        return
    check_outcome(mutated)


SUPPORTED = st.sampled_from(
    [np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_, np.complex64, np.complex128]
)


@FAST
@given(
    SUPPORTED.flatmap(lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))),
    st.booleans(),
)
def test_numeric_round_trip(array: np.ndarray, use_tensor_content: bool) -> None:
    proto = ndarray_to_tensor_proto(array, use_tensor_content=use_tensor_content)
    decoded = check_outcome(tensor_pb2.TensorProto.FromString(proto.SerializeToString()))
    assert decoded is not None
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    assert decoded.tobytes() == array.tobytes()  # bitwise: NaN payloads and -0.0 survive


@FAST
@given(
    st.lists(st.binary(max_size=300), max_size=20).map(lambda items: np.array(items + [b""], dtype=object)[:-1]),
    st.booleans(),
)
def test_string_round_trip(array: np.ndarray, use_tensor_content: bool) -> None:
    proto = ndarray_to_tensor_proto(array, use_tensor_content=use_tensor_content)
    decoded = check_outcome(tensor_pb2.TensorProto.FromString(proto.SerializeToString()))
    assert decoded is not None and decoded.tolist() == array.tolist()
