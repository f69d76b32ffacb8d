"""TensorProto <-> numpy conversion, hardened for bytes that come straight from clients.

Pure numpy + ``servable._proto`` (no TensorFlow import: this runs on every request and in
light tools). Callers:

- the gRPC front door decodes ``PredictRequest.inputs`` with ``tensor_proto_to_ndarray``
  and encodes outputs with ``ndarray_to_tensor_proto(..., proto=response.outputs[alias])``;
- anything else that needs dtype numbers, numpy dtypes or TF's dtype names.

All functions are pure and thread-safe; they run on request worker threads.

Decoding follows TensorFlow's ``Tensor::FromProto`` (tensor.cc):

- ``tensor_content`` (raw little-endian bytes; for DT_STRING TF's string-list encoding:
  all lengths as varints, then the bytes) wins over the typed ``*_val`` fields and must
  hold exactly the element count;
- otherwise the dtype's ``*_val`` field is read: an empty list gives zeros (empty strings),
  a shorter list is padded with its last value (so one value fills the whole shape, as
  ``tf.make_ndarray`` and the C++ runtime both do), values of other fields are ignored;
- a tensor with no elements ignores its values.

Two deliberate differences, both rejections of malformed input: a ``*_val`` list LONGER
than the element count (TF's C++ silently truncates, ``tf.make_ndarray`` fails) and an odd
number of floats in ``scomplex_val``/``dcomplex_val`` are INVALID_ARGUMENT.

Every problem with the client's data raises ``ServingError(INVALID_ARGUMENT)``; nothing
else escapes. Sizes are checked against ``servable.limits.InputLimits`` before anything
is allocated, so a small request cannot make the server allocate a huge array.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_dtypes
import numpy as np

from servable._proto.tensorflow.core.framework import tensor_pb2, types_pb2
from servable.core.status import ServingError, internal, invalid_argument
from servable.limits import DEFAULT_LIMITS, MAX_TENSOR_RANK, InputLimits

__all__ = [
    "dtype_enum",
    "dtype_name",
    "dtype_short_name",
    "is_supported_dtype",
    "ndarray_to_tensor_proto",
    "numpy_dtype",
    "tensor_proto_to_ndarray",
]

_INT64_MAX = (1 << 63) - 1
# numpy 2 arrays have at most 64 dimensions (TensorFlow allows 254).
_NUMPY_MAX_DIMS = 64


@dataclasses.dataclass(frozen=True)
class _Spec:
    """How one DataType maps to numpy and to the TensorProto fields."""

    enum: int
    dtype: np.dtype  # native numpy dtype of decoded arrays
    wire: np.dtype  # little-endian dtype of tensor_content (object for strings)
    field: str  # the *_val field
    field_number: int
    value_dtype: np.dtype | None  # numpy dtype of the *_val values (None: strings)
    kind: str  # "fixed" (packed fixed-width), "varint", "bits16" (half_val), "string"
    pairs: bool = False  # complex: two floats per element


def _spec(enum: int, dtype: Any, field: str, number: int, value_dtype: Any, kind: str, pairs: bool = False) -> _Spec:
    native = np.dtype(dtype)
    wire = native if native.kind == "O" else native.newbyteorder("<")
    values = None if value_dtype is None else np.dtype(value_dtype)
    return _Spec(enum, native, wire, field, number, values, kind, pairs)


_DT = types_pb2
_SPECS: dict[int, _Spec] = {
    spec.enum: spec
    for spec in (
        _spec(_DT.DT_FLOAT, np.float32, "float_val", 5, np.float32, "fixed"),
        _spec(_DT.DT_DOUBLE, np.float64, "double_val", 6, np.float64, "fixed"),
        _spec(_DT.DT_INT32, np.int32, "int_val", 7, np.int32, "varint"),
        _spec(_DT.DT_UINT8, np.uint8, "int_val", 7, np.int32, "varint"),
        _spec(_DT.DT_INT16, np.int16, "int_val", 7, np.int32, "varint"),
        _spec(_DT.DT_INT8, np.int8, "int_val", 7, np.int32, "varint"),
        _spec(_DT.DT_UINT16, np.uint16, "int_val", 7, np.int32, "varint"),
        _spec(_DT.DT_STRING, object, "string_val", 8, None, "string"),
        _spec(_DT.DT_COMPLEX64, np.complex64, "scomplex_val", 9, np.float32, "fixed", pairs=True),
        _spec(_DT.DT_INT64, np.int64, "int64_val", 10, np.int64, "varint"),
        _spec(_DT.DT_BOOL, np.bool_, "bool_val", 11, np.bool_, "varint"),
        _spec(_DT.DT_COMPLEX128, np.complex128, "dcomplex_val", 12, np.float64, "fixed", pairs=True),
        _spec(_DT.DT_HALF, np.float16, "half_val", 13, np.int32, "bits16"),
        _spec(_DT.DT_BFLOAT16, ml_dtypes.bfloat16, "half_val", 13, np.int32, "bits16"),
        _spec(_DT.DT_UINT32, np.uint32, "uint32_val", 16, np.uint32, "varint"),
        _spec(_DT.DT_UINT64, np.uint64, "uint64_val", 17, np.uint64, "varint"),
    )
}

# numpy dtype (native byte order) -> DataType; strings of any numpy flavour map to DT_STRING.
_ENUM_BY_DTYPE: dict[np.dtype, int] = {spec.dtype: spec.enum for spec in _SPECS.values()}


# -- dtype helpers --------------------------------------------------------------------


def is_supported_dtype(dtype_enum_value: int) -> bool:
    """Whether tensors of this DataType number can be decoded and encoded here."""
    return dtype_enum_value in _SPECS


def dtype_name(dtype_enum_value: int) -> str:
    """The enum's proto name, e.g. ``"DT_FLOAT"``; unknown numbers give ``"DT_<n>"``."""
    try:
        return types_pb2.DataType.Name(dtype_enum_value)
    except ValueError:
        return f"DT_{dtype_enum_value}"


def dtype_short_name(dtype_enum_value: int) -> str:
    """TensorFlow's ``DataTypeString``: ``"float"``, ``"half"``, ``"string"``, ``"int32_ref"``...

    This is the spelling used in TF's error messages ("Expects arg[0] to be float but
    string is provided") and in TF Serving's REST errors.
    """
    if dtype_enum_value == types_pb2.DT_INVALID:
        return "INVALID"
    try:
        name = types_pb2.DataType.Name(dtype_enum_value)
    except ValueError:
        return f"unknown dtype enum ({dtype_enum_value})"
    return name[3:].lower()  # DT_FLOAT -> float, DT_HALF -> half, DT_INT32_REF -> int32_ref


def numpy_dtype(dtype_enum_value: int) -> np.dtype:
    """The numpy dtype of decoded tensors of this DataType (``object`` for DT_STRING).

    Raises INVALID_ARGUMENT for DataTypes this server does not carry (DT_INVALID,
    quantized, resource, variant, float8/int4, reference types, unknown numbers).
    """
    spec = _SPECS.get(dtype_enum_value)
    if spec is None:
        raise invalid_argument(_unsupported_dtype_message(dtype_enum_value))
    return spec.dtype


def dtype_enum(np_dtype: Any) -> int:
    """The DataType number for a numpy dtype (or anything ``np.dtype`` accepts).

    Byte order does not matter; ``object``, ``bytes_`` (``S``) and ``str_`` (``U``) all
    map to DT_STRING. Raises INVALID_ARGUMENT for dtypes TensorFlow has no type for.
    """
    try:
        dtype = np.dtype(np_dtype)
    except TypeError:
        raise invalid_argument(f"Not a numpy dtype: {np_dtype!r}") from None
    if dtype.kind in "OSU":
        return types_pb2.DT_STRING
    if not dtype.isnative:
        dtype = dtype.newbyteorder("=")
    enum = _ENUM_BY_DTYPE.get(dtype)
    if enum is None:
        raise invalid_argument(f"No TensorFlow DataType for numpy dtype {dtype}")
    return enum


def _unsupported_dtype_message(value: int) -> str:
    if value == types_pb2.DT_INVALID:
        return "Tensor has no dtype (DT_INVALID)"
    if dtype_short_name(value).startswith("unknown"):
        return f"Invalid tensor dtype: unknown DataType enum value {value}"
    return f"Unsupported tensor dtype: {dtype_name(value)}"


# -- decoding -------------------------------------------------------------------------


def tensor_proto_to_ndarray(proto: Any, limits: InputLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode a client's ``tensorflow.TensorProto`` into a numpy array.

    Numeric dtypes come back in native byte order with the numpy dtype of
    ``numpy_dtype(proto.dtype)``; DT_STRING as an object array of ``bytes``. An array
    decoded from ``tensor_content`` is a read-only view of the proto's bytes (no copy);
    callers that write into inputs must copy first.

    Raises ``ServingError(INVALID_ARGUMENT)`` and nothing else.
    """
    try:
        return _decode(proto, limits)
    except ServingError:
        raise
    except (ValueError, TypeError, OverflowError, AttributeError, MemoryError) as error:
        # Defensive: the checks above should make this unreachable.
        raise invalid_argument(f"Cannot decode tensor: {error}") from None


def _decode(proto: Any, limits: InputLimits) -> np.ndarray:
    spec = _SPECS.get(proto.dtype)
    if spec is None:
        raise invalid_argument(_unsupported_dtype_message(proto.dtype))
    shape = _checked_shape(proto.tensor_shape)
    count = _element_count(shape, spec, limits)
    if count == 0:
        return np.empty(shape, spec.dtype)  # TF ignores any values of an empty tensor
    content = proto.tensor_content
    if spec.kind == "string":
        if content:
            values = _decode_string_list(content, count)
        else:
            values = list(proto.string_val)
        return _string_array(values, shape, count, limits)
    if content:
        return _from_content(content, spec, shape, count)
    return _from_values(getattr(proto, spec.field), spec, shape, count)


def _checked_shape(shape_proto: Any) -> tuple[int, ...]:
    dims = shape_proto.dim
    if len(dims) > MAX_TENSOR_RANK:
        raise invalid_argument(f"Tensor has {len(dims)} dimensions, more than the maximum of {MAX_TENSOR_RANK}")
    if len(dims) > _NUMPY_MAX_DIMS:
        raise invalid_argument(f"Tensor has {len(dims)} dimensions; this server supports at most {_NUMPY_MAX_DIMS}")
    shape = tuple(dim.size for dim in dims)
    product = 1
    for index, size in enumerate(shape):
        if size < 0:
            raise invalid_argument(
                f"Tensor shape dimension {index} has size {size}; tensors sent to the server need a fully defined shape"
            )
        product *= size
        if product > _INT64_MAX:
            raise invalid_argument(f"Tensor shape {list(shape)} has more elements than int64 can count")
    return shape


def _element_count(shape: tuple[int, ...], spec: _Spec, limits: InputLimits) -> int:
    count = 1
    nominal = 1  # ignoring zero dims: [2**40, 0] is empty but would still be walked row by row
    for size in shape:
        count *= size
        nominal *= max(size, 1)
    if count > limits.max_tensor_elements:
        raise invalid_argument(
            f"Tensor of shape {list(shape)} has {count} elements, more than the limit of {limits.max_tensor_elements}"
        )
    if nominal > limits.max_tensor_elements:
        raise invalid_argument(
            f"Tensor of shape {list(shape)} has dimensions whose non-zero sizes multiply to {nominal}, "
            f"more than the limit of {limits.max_tensor_elements} elements"
        )
    nbytes = count * spec.dtype.itemsize
    if nbytes > limits.max_tensor_bytes:
        raise invalid_argument(
            f"Tensor of shape {list(shape)} and dtype {dtype_short_name(spec.enum)} needs {nbytes} bytes, "
            f"more than the limit of {limits.max_tensor_bytes}"
        )
    return count


def _from_content(content: bytes, spec: _Spec, shape: tuple[int, ...], count: int) -> np.ndarray:
    expected = count * spec.wire.itemsize
    if len(content) != expected:
        raise invalid_argument(
            f"tensor_content has {len(content)} bytes but a {dtype_short_name(spec.enum)} tensor of shape "
            f"{list(shape)} needs {expected} ({count} elements of {spec.wire.itemsize} bytes)"
        )
    array = np.frombuffer(content, dtype=spec.wire)
    if spec.enum == types_pb2.DT_BOOL:
        raw = array.view(np.uint8)
        if raw.max() > 1:  # TF reads any non-zero byte as true; numpy would keep the byte
            array = raw != 0
    elif not array.dtype.isnative:
        array = array.astype(spec.dtype)
    if not array.flags.aligned:
        array = array.copy()
    return array.reshape(shape)


def _from_values(field: Any, spec: _Spec, shape: tuple[int, ...], count: int) -> np.ndarray:
    given = len(field)
    if spec.pairs:
        if given % 2:
            raise invalid_argument(
                f"{spec.field} has {given} values; a {dtype_short_name(spec.enum)} tensor needs a (real, imaginary) pair per element"
            )
        given //= 2
    if given == 0:
        return np.zeros(shape, spec.dtype)
    if given > count:
        raise invalid_argument(
            f"{spec.field} has {given} values but a tensor of shape {list(shape)} has only {count} elements"
        )
    values = np.asarray(field, dtype=spec.value_dtype)
    if spec.pairs:
        values = values.view(spec.dtype)
    elif spec.kind == "bits16":
        values = values.astype(np.uint16).view(spec.dtype)
    elif values.dtype != spec.dtype:
        values = values.astype(spec.dtype)  # int_val -> int8/16, uint8/16 wraps like static_cast
    if given < count:
        padded = np.empty(count, spec.dtype)
        padded[:given] = values
        padded[given:] = values[-1]
        values = padded
    return values.reshape(shape)


def _decode_string_list(content: bytes, count: int) -> list[bytes]:
    """TF's EncodeStringList format: ``count`` varint32 lengths, then the bytes back to back.

    The length prefix is parsed with numpy (a varint ends at the first byte below 0x80),
    so a long list of tiny strings costs one Python slice per string and no more.
    """
    size = len(content)
    if count > size:
        raise invalid_argument(f"tensor_content of {size} bytes cannot hold {count} strings")
    head = np.frombuffer(content, dtype=np.uint8, count=min(size, 5 * count))
    ends = np.flatnonzero(head < 0x80)[:count]
    if len(ends) < count:
        raise invalid_argument("tensor_content of a string tensor has a malformed length prefix")
    starts = np.empty(count, dtype=np.int64)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    widths = ends - starts + 1
    if int(widths.max()) > 5:
        raise invalid_argument("tensor_content of a string tensor has a malformed length prefix")
    lengths = np.zeros(count, dtype=np.uint64)
    for k in range(int(widths.max())):
        has = widths > k
        groups = head[starts[has] + k].astype(np.uint64) & np.uint64(0x7F)
        lengths[has] |= groups << np.uint64(7 * k)
    if int(lengths.max()) > 0xFFFFFFFF:
        raise invalid_argument("tensor_content of a string tensor has a malformed length prefix")
    data_start = int(ends[-1]) + 1
    total = int(lengths.sum())
    if total != size - data_start:
        raise invalid_argument(
            f"tensor_content of a string tensor holds {size - data_start} bytes of data but its lengths add up to {total}"
        )
    offsets = np.empty(count + 1, dtype=np.int64)
    offsets[0] = data_start
    np.cumsum(lengths.astype(np.int64), out=offsets[1:])
    offsets[1:] += data_start
    bounds = offsets.tolist()
    return [content[bounds[i] : bounds[i + 1]] for i in range(count)]


def _string_array(values: list[bytes], shape: tuple[int, ...], count: int, limits: InputLimits) -> np.ndarray:
    given = len(values)
    if given > count:
        raise invalid_argument(f"string_val has {given} values but a tensor of shape {list(shape)} has only {count} elements")
    total = sum(map(len, values))
    if given:
        total += (count - given) * len(values[-1])
    if total > limits.max_string_bytes:
        raise invalid_argument(
            f"String tensor of shape {list(shape)} holds {total} bytes, more than the limit of {limits.max_string_bytes}"
        )
    array = np.empty(count, dtype=object)
    if given == 0:
        array.fill(b"")
    else:
        array[:given] = values
        if given < count:
            array[given:] = values[-1]
    return array.reshape(shape)


# -- encoding -------------------------------------------------------------------------


def ndarray_to_tensor_proto(
    array: Any,
    dtype: int | None = None,
    use_tensor_content: bool = False,
    proto: Any = None,
) -> Any:
    """Encode ``array`` as TF Serving encodes a response tensor.

    ``dtype`` (a DataType number, usually the signature's) defaults to the array's own;
    when given and different, the array is converted to it. By default values go to the
    typed ``*_val`` field (``Tensor::AsProtoField``); ``use_tensor_content`` writes raw
    little-endian bytes instead (``AsProtoTensorContent``, TF Serving's
    ``--enable_serialization_as_tensor_content``; DT_STRING then uses TF's string-list
    encoding). ``proto`` is cleared and filled in place when given (e.g.
    ``response.outputs[alias]``), else a new ``TensorProto`` is made; it is returned.

    String elements may be ``bytes`` or ``str`` (UTF-8 encoded). Raises INVALID_ARGUMENT
    for dtypes TensorFlow cannot carry and INTERNAL for values that cannot be converted.
    """
    try:
        source = np.asarray(array)
    except (ValueError, TypeError) as error:
        raise internal(f"Cannot convert output to a tensor: {error}") from None
    enum = dtype_enum(source.dtype) if dtype is None else int(dtype)
    spec = _SPECS.get(enum)
    if spec is None:
        raise invalid_argument(_unsupported_dtype_message(enum))
    if proto is None:
        proto = tensor_pb2.TensorProto()
    else:
        proto.Clear()
    proto.dtype = enum
    shape_proto = proto.tensor_shape
    shape_proto.SetInParent()
    for size in source.shape:
        shape_proto.dim.add().size = size
    if source.size == 0:
        return proto
    if spec.kind == "string":
        values = _string_values(source)
        if use_tensor_content:
            proto.tensor_content = _encode_string_list(values)
        else:
            proto.string_val.extend(values)
        return proto
    try:
        data = np.ascontiguousarray(source, dtype=spec.wire).ravel()
    except (ValueError, TypeError, OverflowError) as error:
        raise internal(f"Cannot convert output to {dtype_short_name(enum)}: {error}") from None
    if use_tensor_content:
        proto.tensor_content = data.tobytes()
        return proto
    proto.MergeFromString(_packed_field(spec, data))
    return proto


_BYTES_TYPES = {bytes, np.bytes_}


def _string_values(source: np.ndarray) -> list[bytes]:
    items = source.ravel().tolist()
    if source.dtype.kind == "S" or set(map(type, items)) <= _BYTES_TYPES:
        return items
    values = []
    for item in items:
        if isinstance(item, bytes):
            values.append(item)
        elif isinstance(item, str):
            values.append(item.encode("utf-8"))
        elif isinstance(item, (bytearray, memoryview, np.bytes_)):
            values.append(bytes(item))
        else:
            raise internal(f"String tensor element of type {type(item).__name__} is neither bytes nor str")
    return values


def _packed_field(spec: _Spec, data: np.ndarray) -> bytes:
    """Wire bytes of one packed repeated ``*_val`` field holding ``data``.

    Building the packed field with numpy and letting the C parser merge it is an order of
    magnitude faster than ``field.extend(data.tolist())`` for large tensors, and
    serializes to the very same bytes.
    """
    if spec.kind == "fixed":
        payload = data.view(spec.value_dtype.newbyteorder("<")).tobytes()  # complex -> float pairs
    elif spec.kind == "bits16":
        payload = _varints(data.view(np.uint16).astype(np.uint64))
    elif spec.value_dtype.kind == "i" or spec.dtype.kind == "i":
        payload = _varints(data.astype(np.int64).view(np.uint64))  # negatives sign-extend to 10 bytes
    else:
        payload = _varints(data.astype(np.uint64))
    tag = _varint_bytes((spec.field_number << 3) | 2)
    return tag + _varint_bytes(len(payload)) + payload


def _varints(values: np.ndarray) -> bytes:
    """Protobuf varint encoding of a 1-D uint64 array, vectorized.

    Column j of an (n, width) matrix holds every value's j-th 7-bit group with its
    continuation bit; a row-major boolean selection of the groups each value needs gives
    the bytes in wire order.
    """
    if values.size == 0:
        return b""
    top = int(values.max())
    if top < 0x80:
        return values.astype(np.uint8).tobytes()
    width = (top.bit_length() + 6) // 7
    groups = np.empty((values.size, width), dtype=np.uint8)
    keep = np.empty((values.size, width), dtype=np.bool_)
    keep[:, 0] = True
    for j in range(width):
        shifted = values >> np.uint64(7 * j)
        group = shifted.astype(np.uint8) & np.uint8(0x7F)
        if j + 1 < width:
            more = shifted >= np.uint64(0x80)
            keep[:, j + 1] = more
            group |= more.view(np.uint8) << np.uint8(7)
        groups[:, j] = group
    return groups[keep].tobytes()


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode_string_list(values: list[bytes]) -> bytes:
    """TF's EncodeStringList: every length as a varint32, then all the bytes."""
    for value in values:
        if len(value) > 0xFFFFFFFF:
            raise internal("String tensor element longer than 4 GiB cannot be encoded")
    lengths = np.fromiter(map(len, values), dtype=np.uint64, count=len(values))
    return _varints(lengths) + b"".join(values)
