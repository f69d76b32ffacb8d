"""The big-body numeric fast path reads exactly what the ordinary path reads.

``json_numeric`` parses a large ``instances``/``inputs`` array with simdjson straight into
numpy; these tests compare it with the reference reading (``orjson`` + ``json_tensor``)
bit for bit, and check that every malformed or unusual body falls back to the reference,
so values, errors and messages never differ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servable.core.status import ServingError
from servable.rest import json_codec as jc
from servable.rest.json_numeric import FAST_PATH_MIN_BYTES, dense_numeric_value

DT_FLOAT, DT_DOUBLE, DT_INT32 = 1, 2, 3


@dataclass
class Info:
    dtype: int


@dataclass
class Sig:
    inputs: dict = field(default_factory=dict)


def _reference(body: bytes, signature: Sig) -> dict:
    doc = jc._load_object(body)
    request = jc.PredictRequestJson(doc, jc._signature_name(doc), jc.mentions_bool(body))
    return jc.decode_predict_inputs(request, signature)


def _fast(body: bytes, signature: Sig) -> dict:
    return jc.decode_predict_inputs(jc.parse_predict_request(body), signature)


def _outcome(fn, body: bytes, signature: Sig):
    try:
        return {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in fn(body, signature).items()}
    except ServingError as error:
        return ("error", error.code, error.message)


def _same(body: bytes, signature: Sig) -> None:
    assert _outcome(_fast, body, signature) == _outcome(_reference, body, signature)


def _big_rows(rows: int = 64, width: int = 100, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, width)).astype(np.float32)


def test_a_typical_big_body_takes_the_fast_path_and_matches() -> None:
    x = _big_rows()
    body = json.dumps({"instances": x.tolist()}).encode()
    assert len(body) >= FAST_PATH_MIN_BYTES
    dense = dense_numeric_value(body)
    assert dense is not None and dense.key == "instances" and dense.values.shape == x.shape
    for dtype in (DT_FLOAT, DT_DOUBLE, DT_INT32):
        _same(body, Sig({"x": Info(dtype)}))
    np.testing.assert_array_equal(_fast(body, Sig({"x": Info(DT_FLOAT)}))["x"], x)


def test_columnar_inputs_and_signature_name() -> None:
    x = _big_rows(seed=1)
    body = orjson.dumps({"signature_name": "serving_default", "inputs": x.tolist()})
    request = jc.parse_predict_request(body)
    assert request.dense is not None and request.signature_name == "serving_default"
    assert jc.request_format(request) == "columnar"
    _same(body, Sig({"x": Info(DT_FLOAT)}))
    _same(body, Sig({"x": Info(DT_FLOAT), "y": Info(DT_FLOAT)}))  # two inputs: the reference's error


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=2),
    ints=st.booleans(),
    spaced=st.booleans(),
    scale=st.sampled_from([1e-30, 1e-3, 1.0, 1e5, 1e30, 3.4e38, 1e300]),
    dtype=st.sampled_from([DT_FLOAT, DT_DOUBLE, DT_INT32]),
    seed=st.integers(0, 2**16),
)
def test_random_arrays_read_bit_for_bit_like_the_reference(shape, ints, spaced, scale, dtype, seed) -> None:
    rng = np.random.default_rng(seed)
    values = np.abs(rng.standard_normal(shape)) * scale + 1e-300  # no -0.0 (its own test below)
    values[..., 0] *= -1
    payload = np.rint(values * 1000).astype(np.int64).tolist() if ints and scale <= 1e5 else values.tolist()
    filler = "x" * FAST_PATH_MIN_BYTES  # makes the body big enough for the fast path
    doc = {"signature_name": "serving_default", "instances": payload, "comment": filler}
    body = json.dumps(doc, separators=(", ", ": ") if spaced else (",", ":")).encode()
    if not (ints and scale <= 1e5 and np.any(np.rint(values * 1000) == 0)):
        assert dense_numeric_value(body) is not None  # the fast path is what is being compared
    _same(body, Sig({"x": Info(dtype)}))


MALFORMED = [
    "+1", "01", "-01", "1.", ".5", "1e", "1e+", "--1", "5-3", "1 2", "NaN", "Infinity", "-Infinity",
    "1e400", "0x10", "1_0", "true", "null", '"1"', "{}", "[]", "[1]", "1,,2", "", "-0", "-0.0",
    "9223372036854775808", "18446744073709551616", "16777217", "1e39",
]


@pytest.mark.parametrize("token", MALFORMED)
def test_unusual_tokens_fall_back_to_the_reference(token: str) -> None:
    rows = ",".join(["[1.5, 2.5]"] * 4000)
    body = f'{{"instances": [{rows}, [{token}, 2.5]]}}'.encode()
    _same(body, Sig({"x": Info(DT_FLOAT)}))
    int_rows = ",".join(["[1, 2]"] * 4000)
    body = f'{{"instances": [{int_rows}, [{token}, 2]]}}'.encode()
    _same(body, Sig({"x": Info(DT_FLOAT)}))


@pytest.mark.parametrize(
    "text",
    [
        '{"instances": [[1,2],[3]]}',  # ragged
        '{"instances": [[1,2],[3],[4,5,6]]}',  # ragged with the right total
        '{"instances": [[1,2],3]}',  # mixed depth
        '{"instances": [[1,2],[3,[4]]]}',  # nested deeper in one row
        '{"instances": [[[1,2]],[[3,4]]]}',  # rank 3
        '{"instances": [], "pad": "PAD"}',
        '{"instances": [[1,2]], "inputs": [[1,2]]}',  # both keys
        '{"instances": [[1,2]], "instances": [[3,4]]}',  # duplicate key
        '{"nested": {"instances": [[1,2]]}}',  # not top-level
        '{"signature_name": 3, "instances": [[1,2]]}',
        '{"signature_name": "[", "instances": [[1,2]]}',  # a bracket inside a string
        '{"instances": [[1,2]], "flag": true}',  # bools elsewhere in the body
        '{"instances": [[1,2]], "extra": [1]}',  # another array
        '[[1,2]]',  # not an object
        '{"instances": [[1,2]]',  # truncated
        '{"instances": [{"a": 1}]}',  # named instances
    ],
)
def test_structures_the_fast_path_must_not_take(text: str) -> None:
    pad = "[0.5,0.25]," * 4000
    body = text.replace("[[1,2]", "[" + pad + "[1,2]", 1).replace('"PAD"', '"' + "p" * FAST_PATH_MIN_BYTES + '"')
    for signature in (Sig({"x": Info(DT_FLOAT)}), Sig({"x": Info(DT_FLOAT), "y": Info(DT_FLOAT)})):
        _same(body.encode(), signature)


def test_integer_bodies_follow_the_reference_precision_rules() -> None:
    pad = ",".join(["[1, 2]"] * 4000)
    for big in (2**24 - 1, 2**24, 2**53, -(2**53) - 2, 2**63 - 1):
        body = f'{{"instances": [{pad}, [{big}, 0]]}}'.encode()
        for dtype in (DT_FLOAT, DT_DOUBLE):
            _same(body, Sig({"x": Info(dtype)}))


def test_rank_one_and_small_bodies() -> None:
    flat = ",".join(["0.5"] * 10000)
    body = f'{{"inputs": [{flat}]}}'.encode()
    assert dense_numeric_value(body) is not None
    _same(body, Sig({"x": Info(DT_FLOAT)}))
    assert dense_numeric_value(b'{"instances": [[1.0, 2.0]]}') is None  # small: the ordinary path


def test_booleans_found_by_type_send_the_body_to_the_reference() -> None:
    rows = _big_rows().tolist()
    plain = orjson.dumps({"instances": rows})
    assert dense_numeric_value(plain) is not None
    rows[3][7] = True
    assert dense_numeric_value(orjson.dumps({"instances": rows})) is None
    assert dense_numeric_value(orjson.dumps({"instances": _big_rows().tolist(), "flag": False})) is None


def test_the_parsed_array_is_its_own_writable_buffer() -> None:
    first = dense_numeric_value(orjson.dumps({"instances": _big_rows(seed=1).tolist()}))
    second = dense_numeric_value(orjson.dumps({"instances": _big_rows(seed=2).tolist()}))
    assert first is not None and second is not None
    assert first.values.flags.writeable
    np.testing.assert_array_equal(first.values, _big_rows(seed=1).astype(np.float64))
