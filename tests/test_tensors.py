"""servable.tf.tensors: round trips, byte-for-byte agreement with TensorFlow, hardening.

TensorFlow is imported here only, as the reference: protos cross between TF's own
``TensorProto`` and ours through ``SerializeToString`` / ``FromString`` (two descriptor
pools never mix).
"""

from __future__ import annotations

import ast
import pathlib

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

from servable._proto.tensorflow.core.framework import tensor_pb2, types_pb2
from servable._proto.tensorflow_serving.apis import predict_pb2
from servable.core.status import Code, ServingError
from servable.limits import DEFAULT_LIMITS, InputLimits
from servable.tf import tensors
from servable.tf.tensors import (
    dtype_enum,
    dtype_name,
    dtype_short_name,
    ndarray_to_tensor_proto,
    numpy_dtype,
    tensor_proto_to_ndarray,
)

DTYPES = {
    types_pb2.DT_FLOAT: np.float32,
    types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_INT8: np.int8,
    types_pb2.DT_INT16: np.int16,
    types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT64: np.int64,
    types_pb2.DT_UINT8: np.uint8,
    types_pb2.DT_UINT16: np.uint16,
    types_pb2.DT_UINT32: np.uint32,
    types_pb2.DT_UINT64: np.uint64,
    types_pb2.DT_BOOL: np.bool_,
    types_pb2.DT_STRING: object,
    types_pb2.DT_HALF: np.float16,
    types_pb2.DT_BFLOAT16: ml_dtypes.bfloat16,
    types_pb2.DT_COMPLEX64: np.complex64,
    types_pb2.DT_COMPLEX128: np.complex128,
}
SHAPES = [(), (0,), (1,), (5,), (2, 3), (2, 0, 3), (1, 1, 1, 1), (3, 1, 2)]


def sample(dtype: object, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Values that exercise each dtype's range (negatives, extremes, non-ASCII bytes)."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape, dtype=np.int64))
    dtype = np.dtype(dtype)
    if dtype.kind == "O":
        flat = [bytes(rng.integers(0, 256, int(rng.integers(0, 6)), dtype=np.uint8)) for _ in range(size)]
        array = np.empty(size, dtype=object)
        array[:] = flat
    elif dtype.kind == "b":
        array = rng.integers(0, 2, size).astype(bool)
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size, dtype=dtype, endpoint=True)
        array[: min(size, 2)] = [info.min, info.max][: min(size, 2)]
    elif dtype.kind == "c":
        array = (rng.normal(size=size) * 1e3 + 1j * rng.normal(size=size)).astype(dtype)
    else:
        array = (rng.normal(size=size) * 100).astype(dtype)
    return array.reshape(shape)


def to_tf(proto: tensor_pb2.TensorProto):
    from tensorflow.core.framework import tensor_pb2 as tf_tensor_pb2

    return tf_tensor_pb2.TensorProto.FromString(proto.SerializeToString())


def from_tf(tf_proto) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto.FromString(tf_proto.SerializeToString())


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    if expected.dtype == object:
        assert actual.tolist() == expected.tolist()
        assert all(type(item) is bytes for item in actual.ravel().tolist())
    else:
        assert actual.tobytes() == expected.tobytes()


def make(dtype: int, shape: list[int], **fields) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype, **fields)
    proto.tensor_shape.SetInParent()
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    return proto


def invalid(proto: tensor_pb2.TensorProto, limits: InputLimits = DEFAULT_LIMITS) -> str:
    with pytest.raises(ServingError) as raised:
        tensor_proto_to_ndarray(proto, limits)
    assert raised.value.code == Code.INVALID_ARGUMENT
    return raised.value.message


# -- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("use_tensor_content", [False, True], ids=["val", "content"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("enum", list(DTYPES), ids=dtype_name)
def test_round_trip(enum: int, shape: tuple[int, ...], use_tensor_content: bool) -> None:
    array = sample(DTYPES[enum], shape)
    proto = ndarray_to_tensor_proto(array, use_tensor_content=use_tensor_content)
    assert proto.dtype == enum
    assert [dim.size for dim in proto.tensor_shape.dim] == list(shape)
    wire = tensor_pb2.TensorProto.FromString(proto.SerializeToString())
    assert_same(tensor_proto_to_ndarray(wire), array)


# -- agreement with TensorFlow -------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("enum", [enum for enum in DTYPES if enum != types_pb2.DT_STRING], ids=dtype_name)
def test_tensor_content_matches_tf_serialize_tensor(enum: int, shape: tuple[int, ...]) -> None:
    """``tf.io.serialize_tensor`` is TF's ``AsProtoTensorContent``: the same bytes.

    (Except for strings, which that op writes to ``string_val``; TF Serving's
    ``AsProtoTensorContent`` string encoding is checked against the C++ decoder below.)
    """
    array = sample(DTYPES[enum], shape, seed=1)
    expected = tf.io.serialize_tensor(tf.constant(array, dtype=tf.as_dtype(enum))).numpy()
    assert ndarray_to_tensor_proto(array, use_tensor_content=True).SerializeToString() == expected
    assert_same(tensor_proto_to_ndarray(tensor_pb2.TensorProto.FromString(expected)), array)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("enum", list(DTYPES), ids=dtype_name)
def test_val_encoding_matches_tf(enum: int, shape: tuple[int, ...]) -> None:
    """Our ``*_val`` encoding is what ``tf.make_ndarray`` reads back, and byte-identical to
    ``tf.make_tensor_proto`` wherever TF's Python also writes ``*_val`` fields."""
    array = sample(DTYPES[enum], shape, seed=2)
    ours = ndarray_to_tensor_proto(array)
    assert not ours.tensor_content
    if array.size:
        assert_same(tf.make_ndarray(to_tf(ours)).astype(array.dtype, copy=False), array)
    reference = tf.make_tensor_proto(array, dtype=tf.as_dtype(enum))
    if not reference.tensor_content:
        assert ours.SerializeToString() == reference.SerializeToString()


def _tf_made_protos():
    """TensorProtos as TF's Python client builds them, including broadcasts and padding."""
    for enum, dtype in DTYPES.items():
        tf_dtype = tf.as_dtype(enum)
        for shape in SHAPES:
            yield f"{dtype_name(enum)}{shape}", tf.make_tensor_proto(sample(dtype, shape, seed=3), dtype=tf_dtype)
        one = sample(dtype, (1,), seed=4)
        yield f"{dtype_name(enum)}-broadcast", tf.make_tensor_proto(one, dtype=tf_dtype, shape=[2, 3])
        two = sample(dtype, (2,), seed=5)
        yield f"{dtype_name(enum)}-padded", tf.make_tensor_proto(two, dtype=tf_dtype, shape=[5])
        empty = make(enum, [2, 2])
        yield f"{dtype_name(enum)}-zeros", to_tf(empty)
    yield "python-scalar", tf.make_tensor_proto(7)
    yield "python-list", tf.make_tensor_proto([[1.0, 2.0], [3.0, 4.0]])
    yield "python-strings", tf.make_tensor_proto(["a", "bé", ""])


@pytest.mark.parametrize("name_and_proto", list(_tf_made_protos()), ids=lambda item: item[0])
def test_decode_matches_tf_make_ndarray(name_and_proto) -> None:
    _, tf_proto = name_and_proto
    expected = tf.make_ndarray(tf_proto)
    if tf_proto.dtype == types_pb2.DT_STRING:
        # make_ndarray pads an empty string_val with str "" where the runtime has b"".
        flat = [item.encode() if isinstance(item, str) else item for item in expected.ravel().tolist()]
        expected = np.empty(len(flat), dtype=object)
        expected[:] = flat
        expected = expected.reshape(tf.make_ndarray(tf_proto).shape)
    assert_same(tensor_proto_to_ndarray(from_tf(tf_proto)), expected)


def test_decode_matches_tf_runtime_for_string_tensor_content() -> None:
    """String ``tensor_content`` (TF's EncodeStringList) is what the C++ runtime decodes."""
    array = np.array([[b"", b"a" * 200], [b"\x00\xff", "é".encode()]], dtype=object)
    content = ndarray_to_tensor_proto(array, use_tensor_content=True).tensor_content
    assert content == b"\x00\xc8\x01\x02\x02" + b"a" * 200 + b"\x00\xff" + "é".encode()
    parsed = tf.io.parse_tensor(ndarray_to_tensor_proto(array, use_tensor_content=True).SerializeToString(), tf.string)
    assert parsed.numpy().tolist() == array.tolist()


# -- decoding rules ------------------------------------------------------------------


def test_single_value_fills_shape_and_empty_list_gives_zeros() -> None:
    assert_same(tensor_proto_to_ndarray(make(types_pb2.DT_FLOAT, [2, 2], float_val=[1.5])), np.full((2, 2), 1.5, np.float32))
    assert_same(tensor_proto_to_ndarray(make(types_pb2.DT_INT32, [3])), np.zeros(3, np.int32))
    assert_same(tensor_proto_to_ndarray(make(types_pb2.DT_INT32, [4], int_val=[1, 2])), np.array([1, 2, 2, 2], np.int32))
    strings = tensor_proto_to_ndarray(make(types_pb2.DT_STRING, [2]))
    assert strings.dtype == object and strings.tolist() == [b"", b""]
    filled = tensor_proto_to_ndarray(make(types_pb2.DT_STRING, [3], string_val=[b"x", b"y"]))
    assert filled.tolist() == [b"x", b"y", b"y"]
    scalar = tensor_proto_to_ndarray(make(types_pb2.DT_COMPLEX64, [], scomplex_val=[1.0, -2.0]))
    assert scalar.shape == () and scalar.dtype == np.complex64 and scalar == 1 - 2j


def test_values_of_other_fields_and_empty_tensors_are_ignored() -> None:
    """TF reads only the dtype's own field, and nothing at all for zero elements."""
    assert_same(tensor_proto_to_ndarray(make(types_pb2.DT_FLOAT, [2], int_val=[5, 6])), np.zeros(2, np.float32))
    empty = tensor_proto_to_ndarray(make(types_pb2.DT_FLOAT, [0, 3], float_val=[1, 2, 3], tensor_content=b"junk"))
    assert empty.shape == (0, 3) and empty.dtype == np.float32


def test_int_val_narrow_types_wrap_like_static_cast() -> None:
    assert tensor_proto_to_ndarray(make(types_pb2.DT_UINT8, [2], int_val=[256 + 7, -1])).tolist() == [7, 255]
    assert tensor_proto_to_ndarray(make(types_pb2.DT_INT8, [1], int_val=[200])).tolist() == [-56]


def test_half_val_holds_bits() -> None:
    half = make(types_pb2.DT_HALF, [2], half_val=[0x3C00, 0xC000])
    assert_same(tensor_proto_to_ndarray(half), np.array([1.0, -2.0], np.float16))
    bf16 = make(types_pb2.DT_BFLOAT16, [1], half_val=[0x3F80])
    assert_same(tensor_proto_to_ndarray(bf16), np.array([1.0], ml_dtypes.bfloat16))


def test_tensor_content_bool_bytes_are_normalised() -> None:
    array = tensor_proto_to_ndarray(make(types_pb2.DT_BOOL, [3], tensor_content=b"\x00\x02\x01"))
    assert array.tolist() == [False, True, True]
    assert array.view(np.uint8).tolist() == [0, 1, 1]


def test_tensor_content_is_not_copied() -> None:
    array = tensor_proto_to_ndarray(make(types_pb2.DT_FLOAT, [2], tensor_content=np.ones(2, "<f4").tobytes()))
    assert not array.flags.writeable and array.flags.aligned
    assert array.tolist() == [1.0, 1.0]


# -- malformed input: INVALID_ARGUMENT, nothing else ---------------------------------


@pytest.mark.parametrize(
    "enum",
    [types_pb2.DT_INVALID, types_pb2.DT_QINT8, types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT, types_pb2.DT_FLOAT_REF, 29, 999, -3],
)
def test_unsupported_dtype(enum: int) -> None:
    message = invalid(make(enum, [1], float_val=[1.0]))
    assert "dtype" in message.lower() or "DT_" in message


@pytest.mark.parametrize(
    "shape, fragment",
    [
        ([-1], "fully defined"),
        ([2, -5], "fully defined"),
        ([1] * 255, "255 dimensions"),
        ([1] * 65, "at most 64"),
        ([2**40], "limit"),
        ([2**31, 2**31, 2**31], "int64"),
        ([2**28], "bytes"),  # 2**28 floats is 1 GiB + allowed elements, over the byte limit
    ],
)
def test_bad_shapes(shape: list[int], fragment: str) -> None:
    proto = make(types_pb2.DT_DOUBLE, shape, double_val=[1.0])
    assert fragment in invalid(proto)


def test_limits_checked_before_allocation() -> None:
    tight = InputLimits(max_tensor_elements=100, max_tensor_bytes=64, max_string_bytes=10)
    assert "limit of 100" in invalid(make(types_pb2.DT_INT8, [101], int_val=[1]), tight)
    assert "limit of 64" in invalid(make(types_pb2.DT_INT64, [9], int64_val=[1]), tight)
    assert "limit of 10" in invalid(make(types_pb2.DT_STRING, [4], string_val=[b"abc"]), tight)
    assert "limit of 10" in invalid(make(types_pb2.DT_STRING, [2], string_val=[b"abcdef", b"abcdef"]), tight)
    assert tensor_proto_to_ndarray(make(types_pb2.DT_STRING, [2], string_val=[b"abcde"]), tight).tolist() == [b"abcde"] * 2
    # Empty, but walking its rows (tolist, batching, JSON rows) would take forever.
    assert "multiply to 1000" in invalid(make(types_pb2.DT_FLOAT, [10, 10, 10, 0]), tight)
    assert tensor_proto_to_ndarray(make(types_pb2.DT_FLOAT, [10, 10, 0]), tight).shape == (10, 10, 0)


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"\x00" * 9, b"\x00" * 3, b"\x00" * 800])
def test_tensor_content_wrong_length(content: bytes) -> None:
    proto = make(types_pb2.DT_FLOAT, [2], tensor_content=content)
    if content:
        assert "needs 8" in invalid(proto)
    else:
        assert_same(tensor_proto_to_ndarray(proto), np.zeros(2, np.float32))  # empty content = no content


def test_too_many_values() -> None:
    assert "only 2 elements" in invalid(make(types_pb2.DT_FLOAT, [2], float_val=[1, 2, 3]))
    assert "only 1 elements" in invalid(make(types_pb2.DT_STRING, [1], string_val=[b"a", b"b"]))
    assert "only 1 elements" in invalid(make(types_pb2.DT_HALF, [], half_val=[1, 2]))


def test_complex_needs_pairs() -> None:
    assert "pair" in invalid(make(types_pb2.DT_COMPLEX64, [1], scomplex_val=[1.0, 2.0, 3.0]))
    assert "pair" in invalid(make(types_pb2.DT_COMPLEX128, [2], dcomplex_val=[1.0]))


@pytest.mark.parametrize(
    "content",
    [
        b"\x05ab",  # lengths add up to more than the data
        b"\x01ab",  # and to less
        b"\x80",  # truncated varint
        b"\xff\xff\xff\xff\xff\xff\x01",  # varint longer than 32 bits
        b"\x00",  # fewer bytes than the two strings need for their lengths
    ],
)
def test_malformed_string_tensor_content(content: bytes) -> None:
    invalid(make(types_pb2.DT_STRING, [2] if content == b"\x00" else [1], tensor_content=content))


def test_string_tensor_content_of_many_empty_strings() -> None:
    assert tensor_proto_to_ndarray(make(types_pb2.DT_STRING, [3], tensor_content=b"\x00\x00\x00")).tolist() == [b""] * 3


def test_grpc_layer_can_prefix_messages() -> None:
    error = pytest.raises(ServingError, tensor_proto_to_ndarray, make(types_pb2.DT_FLOAT, [-1])).value
    assert error.code == Code.INVALID_ARGUMENT and isinstance(error.message, str) and error.message


# -- encoding ------------------------------------------------------------------------


def test_fills_response_output_in_place() -> None:
    response = predict_pb2.PredictResponse()
    response.outputs["y"].float_val.extend([9.0, 9.0])  # stale content is cleared
    returned = ndarray_to_tensor_proto(np.array([[1.0, 2.0]], np.float32), proto=response.outputs["y"])
    assert returned is response.outputs["y"] or returned == response.outputs["y"]
    decoded = predict_pb2.PredictResponse.FromString(response.SerializeToString()).outputs["y"]
    assert list(decoded.float_val) == [1.0, 2.0]
    assert [dim.size for dim in decoded.tensor_shape.dim] == [1, 2]


def test_encode_converts_to_requested_dtype_and_native_order() -> None:
    proto = ndarray_to_tensor_proto(np.array([1, 2], dtype=">i4"), dtype=types_pb2.DT_FLOAT)
    assert proto.dtype == types_pb2.DT_FLOAT and list(proto.float_val) == [1.0, 2.0]
    big = ndarray_to_tensor_proto(np.array([1.5], dtype=">f8"), use_tensor_content=True)
    assert big.dtype == types_pb2.DT_DOUBLE and big.tensor_content == np.array([1.5], "<f8").tobytes()
    scalar = ndarray_to_tensor_proto(3)
    assert scalar.dtype == types_pb2.DT_INT64 and list(scalar.int64_val) == [3]


def test_encode_strings_from_any_numpy_flavour() -> None:
    for array in (
        np.array(["a", "é"]),
        np.array([b"a", "é".encode()]),
        np.array(["a", b"\xc3\xa9", np.bytes_(b"a"), bytearray(b"q")], dtype=object),
    ):
        proto = ndarray_to_tensor_proto(array)
        assert proto.dtype == types_pb2.DT_STRING
        assert list(proto.string_val)[:2] == [b"a", "é".encode()]
        content = ndarray_to_tensor_proto(array, use_tensor_content=True)
        assert tensor_proto_to_ndarray(content).tolist() == list(proto.string_val)


def test_encode_rejects_what_tensorflow_cannot_carry() -> None:
    with pytest.raises(ServingError) as raised:
        ndarray_to_tensor_proto(np.array(["2020-01-01"], dtype="datetime64[D]"))
    assert raised.value.code == Code.INVALID_ARGUMENT
    with pytest.raises(ServingError) as raised:
        ndarray_to_tensor_proto(np.array([1.0]), dtype=types_pb2.DT_RESOURCE)
    assert raised.value.code == Code.INVALID_ARGUMENT
    with pytest.raises(ServingError) as raised:
        ndarray_to_tensor_proto(np.array([None, 1], dtype=object))
    assert raised.value.code == Code.INTERNAL


@pytest.mark.parametrize(
    "values",
    [[0, 1, 127, 128, 16383, 16384, 2**32 - 1, 2**63, 2**64 - 1], [2**64 - 1] * 3, [0] * 4, [300] * 5],
)
def test_varint_encoder_matches_protobuf(values: list[int]) -> None:
    expected = tensor_pb2.TensorProto(uint64_val=values).SerializeToString()
    assert ndarray_to_tensor_proto(np.array(values, np.uint64)).SerializeToString().endswith(expected)
    signed = [v - 2**63 for v in values]
    assert tensor_pb2.TensorProto(int64_val=signed).SerializeToString() in ndarray_to_tensor_proto(
        np.array(signed, np.int64)
    ).SerializeToString()


# -- dtype helpers -------------------------------------------------------------------


def test_dtype_helpers() -> None:
    for enum, dtype in DTYPES.items():
        assert numpy_dtype(enum) == np.dtype(dtype)
        assert dtype_enum(np.dtype(dtype)) == enum
        assert dtype_short_name(enum) == tf.as_dtype(enum).name or (enum, dtype_short_name(enum)) in {
            (types_pb2.DT_FLOAT, "float"),
            (types_pb2.DT_DOUBLE, "double"),
            (types_pb2.DT_HALF, "half"),
        }
    assert dtype_enum(np.dtype(">f4")) == types_pb2.DT_FLOAT
    assert dtype_enum("U3") == dtype_enum("S") == types_pb2.DT_STRING
    assert dtype_name(types_pb2.DT_FLOAT) == "DT_FLOAT" and dtype_name(999) == "DT_999"
    assert dtype_short_name(types_pb2.DT_STRING) == "string"
    assert dtype_short_name(types_pb2.DT_INT32_REF) == "int32_ref"
    assert dtype_short_name(types_pb2.DT_INVALID) == "INVALID"
    assert dtype_short_name(999) == "unknown dtype enum (999)"
    for bad in (types_pb2.DT_INVALID, types_pb2.DT_QINT8, 999):
        with pytest.raises(ServingError):
            numpy_dtype(bad)
    with pytest.raises(ServingError):
        dtype_enum(np.dtype("datetime64[s]"))


def test_limits_validate_their_fields() -> None:
    with pytest.raises(ValueError):
        InputLimits(max_tensor_elements=-1)
    with pytest.raises(Exception):
        DEFAULT_LIMITS.max_request_bytes = 1  # type: ignore[misc]


def test_tensors_module_does_not_import_tensorflow() -> None:
    tree = ast.parse(pathlib.Path(tensors.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name == "tensorflow" or name.startswith("tensorflow.") for name in imported)
