"""One JSON value <-> one numpy array, typed by the signature (``util/json_tensor.cc``).

``tensor_from_json`` converts vectorised: one ``np.array`` call over the nested lists,
checked against the signature's dtype. Whatever the fast path cannot vouch for (ragged
lists, strings, mixed types, bools among numbers, values out of range) goes through
``tensor_from_json_reference``, a walk that mirrors ``FillTensorProto`` and raises TF
Serving's exact messages. ``json_value`` turns an output array into something
``json_text.dumps`` writes as TF Serving does (NaN/Infinity tokens, ``_bytes`` -> b64).

Pure functions, no I/O; called on request worker threads.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from servable.core.status import ServingError, invalid_argument, unimplemented
from servable.rest.json_text import dumps, format_decimal, json_type_string, json_value_to_string

# DataType enum numbers (tensorflow/core/framework/types.proto).
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_INT64, DT_BOOL, DT_HALF, DT_UINT32, DT_UINT64 = 9, 10, 19, 22, 23

DTYPE_NAMES = {
    1: "float", 2: "double", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
    8: "complex64", 9: "int64", 10: "bool", 11: "qint8", 12: "quint8", 13: "qint32",
    14: "bfloat16", 15: "qint16", 16: "quint16", 17: "uint16", 18: "complex128", 19: "half",
    20: "resource", 21: "variant", 22: "uint32", 23: "uint64",
}

_NUMPY = {
    DT_FLOAT: np.float32, DT_DOUBLE: np.float64, DT_INT32: np.int32, DT_UINT8: np.uint8,
    DT_INT16: np.int16, DT_INT8: np.int8, DT_INT64: np.int64, DT_BOOL: np.bool_,
    DT_UINT32: np.uint32, DT_UINT64: np.uint64,
}
_INT_RANGES = {
    DT_INT32: (-(2**31), 2**31 - 1), DT_INT16: (-(2**31), 2**31 - 1), DT_INT8: (-(2**31), 2**31 - 1),
    DT_UINT8: (-(2**31), 2**31 - 1), DT_INT64: (-(2**63), 2**63 - 1), DT_UINT32: (0, 2**32 - 1),
    DT_UINT64: (0, 2**64 - 1),
}
_MAX_EXACT_INT = {DT_FLOAT: 2**24 - 1, DT_DOUBLE: 2**53 - 1}
FLOAT_MAX = {DT_FLOAT: float(np.finfo(np.float32).max), DT_DOUBLE: float(np.finfo(np.float64).max)}

BYTES_SUFFIX = "_bytes"
_WEB_SAFE = str.maketrans("-_", "+/")
NUMPY_MAX_DIMS = 64


@dataclass(frozen=True)
class JsonLimits:
    """Bounds on what one JSON request may ask of the server (servable.limits feeds these)."""

    max_depth: int = 32  # nesting of a tensor value (its rank)
    max_string_bytes: int = 64 * 1024 * 1024  # one string / b64 element after decoding
    max_examples: int = 1_000_000  # classify/regress examples per request

    @classmethod
    def from_input_limits(cls, limits: Any) -> "JsonLimits":
        """Read ``servable.limits.InputLimits`` (or anything with similar attributes)."""
        if limits is None:
            return cls()
        if isinstance(limits, JsonLimits):
            return limits

        def pick(default: int, *names: str) -> int:
            for name in names:
                value = getattr(limits, name, None)
                if isinstance(value, int) and value > 0:
                    return value
            return default

        base = cls()
        return cls(
            max_depth=min(pick(base.max_depth, "max_json_depth", "max_nesting_depth", "max_depth", "max_rank"), NUMPY_MAX_DIMS),
            max_string_bytes=pick(base.max_string_bytes, "max_string_bytes", "max_string_length", "max_bytes_per_string"),
            max_examples=pick(base.max_examples, "max_examples", "max_example_count", "max_examples_per_request"),
        )


DEFAULT_JSON_LIMITS = JsonLimits()



def mentions_bool(body: bytes) -> bool:
    """Whether ``true``/``false`` may occur in ``body`` (false positives allowed, no false negatives).

    ``bytes.__contains__`` is a scalar search (~1 ms on a 500 KB body); numpy finds the
    few candidate first letters at memory speed and only those are compared.
    """
    if len(body) < 4096:
        return b"true" in body or b"false" in body
    buffer = np.frombuffer(body, dtype=np.uint8)
    for first, word in ((0x74, b"true"), (0x66, b"false")):
        positions = np.flatnonzero(buffer == first)
        if len(positions) > 256:
            return True  # many candidates (strings, Infinity tokens): take the careful path
        if any(body.startswith(word, int(p)) for p in positions):
            return True
    return False



# -- JSON value -> ndarray ------------------------------------------------------------------------


def is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def b64decode(value: Any, limits: JsonLimits) -> bytes:
    if not is_b64(value):
        raise invalid_argument(f"JSON Value: {json_value_to_string(value)} not formatted correctly for base64 data")
    text = value["b64"]
    if len(text) // 4 * 3 > limits.max_string_bytes + 3:
        raise invalid_argument(f"String element of {len(text) // 4 * 3} bytes exceeds the limit of {limits.max_string_bytes} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:  # absl::Base64Unescape also accepts unpadded and web-safe input
        standard = text.rstrip("=").translate(_WEB_SAFE)
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _type_error(value: Any, dtype: int) -> ServingError:
    return invalid_argument(
        f"JSON Value: {json_value_to_string(value)} Type: {json_type_string(value)} "
        f"is not of expected type: {DTYPE_NAMES.get(dtype, str(dtype))}"
    )


def dense_shape(value: Any, limits: JsonLimits) -> list[int]:
    """``GetDenseTensorShape``: sizes along the first-element chain (bounded depth)."""
    shape: list[int] = []
    while isinstance(value, list):
        if len(shape) >= limits.max_depth:
            raise invalid_argument(f"JSON value is nested deeper than the limit of {limits.max_depth} levels")
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_scalar(value: Any, dtype: int, limits: JsonLimits) -> Any:
    """``AddValueToTensor``: validate one JSON scalar against ``dtype``; returns the value to store."""
    if dtype in (DT_FLOAT, DT_DOUBLE):
        if not _is_number(value):
            raise _type_error(value, dtype)
        if isinstance(value, int) and -(2**63) <= value < 2**64:
            lossless = abs(value) <= _MAX_EXACT_INT[dtype]
        else:
            number = float(value)
            lossless = not np.isfinite(number) or abs(number) <= FLOAT_MAX[dtype]
        if not lossless:
            raise invalid_argument(
                f"Cannot convert JSON value: {json_value_to_string(value)} to {DTYPE_NAMES[dtype]} without loss of precision."
            )
        return float(value)
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise _type_error(value, dtype)
        return value
    if dtype == DT_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    if dtype == DT_STRING:
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        data = value.encode("utf-8")
        if len(data) > limits.max_string_bytes:
            raise invalid_argument(f"String element of {len(data)} bytes exceeds the limit of {limits.max_string_bytes} bytes")
        return data
    raise unimplemented(f"Conversion of JSON Value: {json_value_to_string(value)} to type: {DTYPE_NAMES.get(dtype, str(dtype))}")


def _fill(value: Any, level: int, shape: list[int], dtype: int, out: list, limits: JsonLimits) -> None:
    """``FillTensorProto``: walk ``value`` checking levels and sizes against ``shape``."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {json_value_to_string(value)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {rank}"
            )
        if isinstance(value, dict):
            if dtype != DT_STRING:
                raise _type_error(value, dtype)
            out.append(b64decode(value, limits))
        else:
            out.append(_check_scalar(value, dtype, limits))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: {shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, dtype, out, limits)


def _build(flat: list, shape: list[int], dtype: int) -> np.ndarray:
    if dtype == DT_STRING:
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    if dtype in (DT_FLOAT, DT_DOUBLE):
        return np.array(flat, dtype=np.float64).astype(_NUMPY[dtype]).reshape(shape)
    if dtype == DT_BOOL:
        return np.array(flat, dtype=np.bool_).reshape(shape)
    wide = np.uint64 if dtype == DT_UINT64 else np.int64
    return np.array(flat, dtype=wide).astype(_NUMPY[dtype]).reshape(shape)


def tensor_from_json_reference(value: Any, dtype: int, limits: JsonLimits = DEFAULT_JSON_LIMITS) -> np.ndarray:
    """The element-by-element conversion with TF Serving's exact errors (slow, always right)."""
    shape = dense_shape(value, limits)
    flat: list = []
    _fill(value, 0, shape, dtype, flat, limits)
    return _build(flat, shape, dtype)


def fast_tensor(value: Any, dtype: int, may_contain_bools: bool, limits: JsonLimits) -> np.ndarray | None:
    """One ``np.array`` call; ``None`` when the result cannot be trusted to match the reference."""
    target = _NUMPY.get(dtype)
    if target is None or (may_contain_bools and dtype != DT_BOOL):
        return None
    if not isinstance(value, list):
        return None  # scalars: the reference path is as cheap
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if array.ndim > limits.max_depth:
        return None
    kind = array.dtype.kind
    if array.size == 0:
        return np.empty(array.shape, dtype=target) if kind == "f" and array.shape[-1:] == (0,) else None
    if dtype in (DT_FLOAT, DT_DOUBLE):
        if kind == "f":
            finite = array[np.isfinite(array)]
            # Past the dtype's exact integers the list may mix in an integer token
            # (``[0.5, 1435774380]``) that TF Serving refuses: the reference decides.
            if finite.size and float(np.abs(finite).max()) > _MAX_EXACT_INT[dtype]:
                return None
            return array.astype(target)
        if kind in "iu":
            if max(abs(int(array.max())), abs(int(array.min()))) > _MAX_EXACT_INT[dtype]:
                return None
            return array.astype(target)
        return None
    if dtype == DT_BOOL:
        return array if kind == "b" else None
    if kind in "iu":
        low, high = _INT_RANGES[dtype]
        if int(array.min()) < low or int(array.max()) > high:
            return None
        return array.astype(target)
    return None


def tensor_from_json(value: Any, dtype: int, may_contain_bools: bool = True, limits: JsonLimits = DEFAULT_JSON_LIMITS) -> np.ndarray:
    """A JSON value as an array of the signature's ``dtype`` (fast path, else reference)."""
    array = fast_tensor(value, dtype, may_contain_bools, limits)
    if array is not None:
        return array
    return tensor_from_json_reference(value, dtype, limits)



# -- ndarray -> JSON value --------------------------------------------------------------------


def _nonfinite_fragment(array: np.ndarray) -> orjson.Fragment:
    """Render a float array whose non-finite values orjson would print as ``null``."""
    if array.ndim == 0:
        value = float(array)
        return orjson.Fragment(format_decimal(value).encode() if not np.isfinite(value) else dumps(array[()]))
    text = dumps(np.ascontiguousarray(array))
    bad = array[~np.isfinite(array)].ravel()
    tokens = [b"NaN" if np.isnan(v) else (b"-Infinity" if v < 0 else b"Infinity") for v in bad.tolist()]
    pieces = text.split(b"null")
    out = bytearray(pieces[0])
    for token, piece in zip(tokens, pieces[1:]):
        out += token
        out += piece
    return orjson.Fragment(bytes(out))


def _strings(array: np.ndarray, as_bytes: bool) -> Any:
    def one(item: Any) -> Any:
        data = item if isinstance(item, bytes) else (item.encode("utf-8") if isinstance(item, str) else bytes(item))
        if as_bytes:
            return {"b64": base64.b64encode(data).decode("ascii")}
        return data.decode("utf-8", "replace")

    if array.ndim == 0:
        return one(array[()])
    flat = [one(item) for item in array.ravel().tolist()]
    nested = np.empty(len(flat), dtype=object)
    nested[:] = flat
    return nested.reshape(array.shape).tolist()


def json_value(array: np.ndarray, alias: str = "") -> Any:
    """An output tensor as something ``dumps`` writes the way TF Serving does."""
    array = np.asarray(array)
    kind = array.dtype.kind
    if kind in "OSU":
        return _strings(array, alias.endswith(BYTES_SUFFIX))
    if kind == "f" and array.dtype.itemsize in (4, 8):  # half is not written (TF Serving's rule)
        if not np.isfinite(array).all():
            return _nonfinite_fragment(array)
        return array[()] if array.ndim == 0 else np.ascontiguousarray(array)
    if kind in "iub":
        return array[()] if array.ndim == 0 else np.ascontiguousarray(array)
    name = _TF_TYPE_NAMES.get(array.dtype.name, array.dtype.name)
    raise invalid_argument(f"Failed to write JSON value for tensor type: {name}")


# TensorFlow's DataTypeString for the numpy dtypes whose names differ.
_TF_TYPE_NAMES = {"float16": "half"}

