"""JSON <-> ndarray / tf.Example conversions (servable.rest.json_codec, json_tensor), no server."""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servable._proto.tensorflow.core.example import example_pb2
from servable.core.status import Code, ServingError
from servable.rest import json_codec as jc
from servable.rest import json_tensor as jt
from servable.rest.json_text import format_decimal, json_value_to_string, parse_json


@dataclass
class Info:
    dtype: int


@dataclass
class Sig:
    inputs: dict = field(default_factory=dict)


def sig(**inputs: int) -> Sig:
    return Sig({name: Info(dtype) for name, dtype in inputs.items()})


def decode(body: dict | bytes, signature: Sig, limits: jc.JsonLimits = jc.DEFAULT_JSON_LIMITS) -> dict:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return jc.decode_predict_inputs(jc.parse_predict_request(raw), signature, limits)


def error_of(fn, *args) -> ServingError:
    with pytest.raises(ServingError) as info:
        fn(*args)
    return info.value


# -- parsing ---------------------------------------------------------------------------------


def test_parse_errors_match_tf_serving():
    assert error_of(parse_json, b"").message == "JSON Parse error: The document is empty"
    assert error_of(parse_json, b"instances = [1, 2]").message.startswith("JSON Parse error: Invalid value. at offset: 0")
    error = error_of(jc.parse_predict_request, b"[1, 2]")
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message == "JSON Value: [\n    1,\n    2\n] Is not object"
    error = error_of(jc.parse_predict_request, b'{"signature_name": 100, "instances": [1]}')
    assert error.message.endswith("not formatted correctly. 'signature_name' key must be a string value.")


def test_nan_and_infinity_tokens_accepted():
    arrays = decode(b'{"instances": [NaN, Infinity, -Infinity, 1.5]}', sig(x=jt.DT_FLOAT))
    values = arrays["x"]
    assert values.dtype == np.float32
    assert math.isnan(values[0]) and values[1] == np.inf and values[2] == -np.inf and values[3] == 1.5


# -- predict: formats ----------------------------------------------------------------------------


def test_row_single_input():
    arrays = decode({"instances": [1.0, 2.0, 5.0]}, sig(x=jt.DT_FLOAT))
    assert arrays["x"].dtype == np.float32 and arrays["x"].tolist() == [1.0, 2.0, 5.0]
    arrays = decode({"instances": [[1.0, 2.0], [3.0, 4.0]]}, sig(x=jt.DT_FLOAT))
    assert arrays["x"].shape == (2, 2)


def test_row_named_inputs():
    body = {"instances": [{"a": [1, 2], "b": "x"}, {"a": [3, 4], "b": "y"}]}
    arrays = decode(body, sig(a=jt.DT_INT64, b=jt.DT_STRING))
    assert arrays["a"].dtype == np.int64 and arrays["a"].tolist() == [[1, 2], [3, 4]]
    assert arrays["b"].dtype == object and arrays["b"].tolist() == [b"x", b"y"]


def test_row_named_errors():
    signature = sig(a=jt.DT_INT64, b=jt.DT_STRING)
    error = error_of(decode, {"instances": [1, 2]}, signature)
    assert error.message.startswith("instances is a plain list, but expecting list of objects")
    error = error_of(decode, {"instances": [{"a": 1, "b": "x"}, [1]]}, signature)
    assert error.message == "Expecting object but got list at item 1 of input list"
    error = error_of(decode, {"instances": [{"a": 1}]}, signature)
    assert "of 'instances' list. JSON object:" in error.message and "must only have keys: a,b" in error.message
    error = error_of(decode, {"instances": [{"a": 1, "b": "x", "c": 2}]}, signature)
    assert error.message == (
        "Failed to process element: 0 key: c of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON object: does not have named input: c"
    )


def test_columnar_single_and_named():
    arrays = decode({"inputs": [2.0, 3.0, 4.0]}, sig(x=jt.DT_FLOAT))
    assert arrays["x"].tolist() == [2.0, 3.0, 4.0]
    arrays = decode({"inputs": 3.0}, sig(x=jt.DT_FLOAT))
    assert arrays["x"].shape == () and float(arrays["x"]) == 3.0
    arrays = decode({"inputs": {"a": [1, 2, 3], "b": [[True], [False]], "extra": 1}}, sig(a=jt.DT_INT32, b=jt.DT_BOOL))
    assert arrays["a"].dtype == np.int32 and arrays["b"].dtype == np.bool_ and arrays["b"].shape == (2, 1)
    error = error_of(decode, {"inputs": {"a": [1]}}, sig(a=jt.DT_INT32, b=jt.DT_BOOL))
    assert error.message == "Missing named input: b in 'inputs' object."
    error = error_of(decode, {"inputs": [1]}, sig(a=jt.DT_INT32, b=jt.DT_BOOL))
    assert error.message.startswith("inputs is a plain value/list, but expecting an object")


def test_key_errors():
    signature = sig(x=jt.DT_FLOAT)
    assert error_of(decode, {"foo": 1}, signature).message == "Missing 'inputs' or 'instances' key"
    error = error_of(decode, {"inputs": [1], "instances": [1]}, signature)
    assert error.message.endswith("Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ")
    assert error_of(decode, {"instances": 1}, signature).message.endswith("Excepting 'instances' to be an list/array")
    assert error_of(decode, {"instances": []}, signature).message.endswith("No values in 'instances' array")


# -- predict: dtypes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype,values,expected",
    [
        (jt.DT_FLOAT, [1, 2.5], np.float32),
        (jt.DT_DOUBLE, [1, 0.1], np.float64),
        (jt.DT_INT32, [1, -2], np.int32),
        (jt.DT_INT8, [1, -2], np.int8),
        (jt.DT_UINT8, [1, 255], np.uint8),
        (jt.DT_INT16, [1, -2], np.int16),
        (jt.DT_INT64, [2**62, -1], np.int64),
        (jt.DT_UINT32, [2**32 - 1, 0], np.uint32),
        (jt.DT_UINT64, [2**64 - 1, 0], np.uint64),
        (jt.DT_BOOL, [True, False], np.bool_),
    ],
)
def test_dtype_from_signature(dtype, values, expected):
    array = decode({"instances": values}, sig(x=dtype))["x"]
    assert array.dtype == expected
    assert array.tolist() == [expected(v).item() for v in values]


@pytest.mark.parametrize(
    "dtype,value,type_name,json_type",
    [
        (jt.DT_FLOAT, '"x"', "float", "String"),
        (jt.DT_INT32, "2.0", "int32", "Number"),
        (jt.DT_INT32, "true", "int32", "True"),
        (jt.DT_FLOAT, "true", "float", "True"),
        (jt.DT_BOOL, "1", "bool", "Number"),
        (jt.DT_STRING, "1", "string", "Number"),
        (jt.DT_INT32, "2147483648", "int32", "Number"),
        (jt.DT_UINT32, "-1", "uint32", "Number"),
        (jt.DT_FLOAT, "null", "float", "Null"),
    ],
)
def test_type_mismatch_messages(dtype, value, type_name, json_type):
    body = f'{{"instances": [{value}]}}'.encode()
    error = error_of(decode, body, sig(x=dtype))
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message.startswith("Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: ")
    assert error.message.endswith(f"Type: {json_type} is not of expected type: {type_name}")


def test_bool_among_numbers_rejected():
    error = error_of(decode, b'{"inputs": [1.0, true]}', sig(x=jt.DT_FLOAT))
    assert error.message == "JSON Value: true Type: True is not of expected type: float"


def test_lossy_float_rejected():
    error = error_of(decode, {"inputs": [16777217]}, sig(x=jt.DT_FLOAT))
    assert error.message == "Cannot convert JSON value: 16777217 to float without loss of precision."
    assert decode({"inputs": [16777217]}, sig(x=jt.DT_DOUBLE))["x"].tolist() == [16777217.0]
    error = error_of(decode, {"inputs": [1e300]}, sig(x=jt.DT_FLOAT))
    assert "to float without loss of precision" in error.message


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": [0.5, 1435774380]}',
        b'{"inputs": [[0.5, 2.0], [1.0, 1435774380]]}',
        b'{"instances": [0.5, 1435774380]}',
        ('{"inputs": [' + ", ".join(["0.5"] * 600 + ["1435774380"]) + "]}").encode(),  # the simdjson reading
    ],
)
def test_lossy_integer_among_floats_rejected_as_alone(body):
    # TF Serving checks every JSON number on its own: an integer token beyond float's
    # exact range is refused even when floats surround it.
    error = error_of(decode, body, sig(x=jt.DT_FLOAT))
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message.endswith("Cannot convert JSON value: 1435774380 to float without loss of precision.")


def test_large_float_tokens_among_floats_accepted():
    assert decode(b'{"inputs": [0.5, 1.5e8, 1e20]}', sig(x=jt.DT_FLOAT))["x"].tolist() == [0.5, 1.5e8, float(np.float32(1e20))]


def test_unsupported_dtype_is_unimplemented():
    error = error_of(decode, {"inputs": [1.0]}, sig(x=jt.DT_HALF))
    assert error.code == Code.UNIMPLEMENTED
    assert error.message == "Conversion of JSON Value: 1.0 to type: half"


def test_strings_and_b64():
    payload = bytes(range(256))
    body = {"instances": [{"b64": base64.b64encode(payload).decode()}, "héllo"]}
    array = decode(body, sig(x=jt.DT_STRING))["x"]
    assert array.tolist() == [payload, "héllo".encode()]
    error = error_of(decode, {"instances": [{"b64": "!!!"}]}, sig(x=jt.DT_STRING))
    assert error.message.endswith("INVALID_ARGUMENT: Unable to base64 decode")
    error = error_of(decode, {"inputs": [{"b64": "AAAA"}]}, sig(x=jt.DT_FLOAT))
    assert error.message.endswith("Type: Object is not of expected type: float")
    # A lone b64 object counts as a value in columnar format.
    assert decode({"inputs": {"b64": "AAAA"}}, sig(x=jt.DT_STRING))["x"].tolist() == b"\x00\x00\x00"


def test_string_length_limit():
    limits = jc.JsonLimits(max_string_bytes=4)
    error = error_of(decode, {"inputs": ["abcdef"]}, sig(x=jt.DT_STRING), limits)
    assert "exceeds the limit of 4 bytes" in error.message


# -- predict: ragged and depth ------------------------------------------------------------------


def test_ragged_row_is_400_with_tf_message():
    error = error_of(decode, {"instances": [[1.0, 2.0], [3.0]]}, sig(x=jt.DT_FLOAT))
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message == (
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 but got: 1"
    )
    error = error_of(decode, {"instances": [[1.0, 2.0], [3.0, 4.0, 5.0, 6.0]]}, sig(x=jt.DT_FLOAT))
    assert "Expecting tensor size: 2 but got: 4" in error.message
    error = error_of(decode, {"instances": [[[1.0, 2.0]], [[3.0], [4.0]]]}, sig(x=jt.DT_FLOAT))
    assert error.message.endswith("Expecting shape [1,2] but got: [2,1]")


def test_ragged_columnar_is_400():
    error = error_of(decode, {"inputs": [[1, 2], [3]]}, sig(x=jt.DT_INT32))
    assert error.message == "Encountered list at unexpected size: 1 at level: 1 expected size: 2"
    error = error_of(decode, {"inputs": [1, [2]]}, sig(x=jt.DT_INT32))
    assert error.message == "Encountered list at unexpected level: 1 expected < 1"
    error = error_of(decode, {"inputs": [[1], 2]}, sig(x=jt.DT_INT32))
    assert error.message == "JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"


def test_nesting_depth_bound():
    limits = jc.JsonLimits(max_depth=4)
    value: object = 1.0
    for _ in range(6):
        value = [value]
    error = error_of(decode, {"inputs": value}, sig(x=jt.DT_FLOAT), limits)
    assert error.code == Code.INVALID_ARGUMENT and "nested deeper than the limit of 4" in error.message
    assert decode({"inputs": [[[[1.0]]]]}, sig(x=jt.DT_FLOAT), limits)["x"].shape == (1, 1, 1, 1)


def test_input_limits_are_read():
    from servable.limits import InputLimits

    limits = jc.JsonLimits.from_input_limits(InputLimits(max_json_depth=10, max_string_bytes=7, max_examples=3))
    assert (limits.max_depth, limits.max_string_bytes, limits.max_examples) == (10, 7, 3)


def test_empty_lists():
    array = decode({"inputs": [[], []]}, sig(x=jt.DT_FLOAT))["x"]
    assert array.shape == (2, 0) and array.dtype == np.float32


nested_floats = st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(nested_floats, min_size=1, max_size=4))
def test_fast_path_agrees_with_reference(rows):
    """Whatever the shape (ragged included), fast and reference paths agree."""
    try:
        expected = jt.tensor_from_json_reference(rows, jt.DT_FLOAT)
    except ServingError as error:
        assert error_of(jt.tensor_from_json, rows, jt.DT_FLOAT, False).message == error.message
        return
    got = jt.tensor_from_json(rows, jt.DT_FLOAT, False)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got, expected)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=8))
def test_float32_round_trip_through_json(values):
    """float32 outputs printed and parsed back give the same float32 bits (NaN as NaN)."""
    array = np.array(values, dtype=np.float32)
    body = jc.encode_predict_response({"y": array}, row_format=False)
    parsed = parse_json(body)["outputs"]
    back = np.array(parsed, dtype=np.float32)
    assert np.array_equal(back, array, equal_nan=True)


# -- predict: responses ---------------------------------------------------------------------------


def test_encode_row_and_columnar():
    y = np.array([[2.5], [3.0]], dtype=np.float32)
    assert orjson.loads(jc.encode_predict_response({"y": y}, True)) == {"predictions": [[2.5], [3.0]]}
    assert orjson.loads(jc.encode_predict_response({"y": y}, False)) == {"outputs": [[2.5], [3.0]]}
    z = np.array([1, 2], dtype=np.int64)
    rows = orjson.loads(jc.encode_predict_response({"y": y, "z": z}, True))
    assert rows == {"predictions": [{"y": [2.5], "z": 1}, {"y": [3.0], "z": 2}]}
    cols = orjson.loads(jc.encode_predict_response({"y": y, "z": z}, False))
    assert cols == {"outputs": {"y": [[2.5], [3.0]], "z": [1, 2]}}


def test_encode_float_text_is_shortest_and_has_point():
    body = jc.encode_predict_response({"y": np.array([0.1, 3.0, 2.5], dtype=np.float32)}, True)
    assert body == b'{"predictions":[0.1,3.0,2.5]}'


def test_encode_nonfinite_tokens():
    y = np.array([np.nan, np.inf, -np.inf, 1.0], dtype=np.float32)
    body = jc.encode_predict_response({"y": y}, True)
    assert body == b'{"predictions":[NaN,Infinity,-Infinity,1.0]}'
    rows = jc.encode_predict_response({"y": y, "z": np.arange(4)}, True)
    assert b'"y":NaN' in rows and b'"y":-Infinity' in rows


def test_encode_strings_and_bytes_suffix():
    values = np.array([b"abc", b"\xff\x00"], dtype=object)
    body = orjson.loads(jc.encode_predict_response({"out_bytes": values, "text": np.array([b"a", b"b"], dtype=object)}, False))
    assert body["outputs"]["out_bytes"] == [{"b64": "YWJj"}, {"b64": base64.b64encode(b"\xff\x00").decode()}]
    assert body["outputs"]["text"] == ["a", "b"]


def test_encode_row_errors():
    error = error_of(jc.encode_predict_response, {"y": np.float32(1.0)}, True)
    assert error.message == "Tensor name: y has no shape information "
    error = error_of(jc.encode_predict_response, {"a": np.zeros(2), "b": np.zeros(3)}, True)
    assert error.message == "Tensor name: b has inconsistent batch size: 3 expecting: 2"
    error = error_of(jc.encode_predict_response, {"c": np.zeros(2, dtype=np.complex64)}, False)
    assert error.message == "Failed to write JSON value for tensor type: complex64"


def test_format_decimal_matches_write_decimal():
    assert format_decimal(3.0) == "3.0"
    assert format_decimal(9000000.0) == "9e+06"
    assert format_decimal(0.5) == "0.5"
    assert format_decimal(float("nan")) == "NaN"
    assert format_decimal(float("-inf")) == "-Infinity"
    assert json_value_to_string({"a": [1, "x"]}) == '{\n    "a": [\n        1,\n        "x"\n    ]\n}'


# -- classify / regress ------------------------------------------------------------------------


def parse_example(data: bytes) -> example_pb2.Example:
    example = example_pb2.Example()
    example.ParseFromString(data)
    return example


def test_examples_type_inference():
    body = orjson.dumps(
        {"examples": [{"f": 2.0, "i": 3, "b": True, "s": "hi", "raw": {"b64": "AAE="}, "l": [1.5, 2.5], "e": []}]}
    )
    request = jc.parse_examples_request(body)
    feature = parse_example(request.examples[0]).features.feature
    assert list(feature["f"].float_list.value) == [2.0]
    assert list(feature["i"].int64_list.value) == [3]
    assert list(feature["b"].int64_list.value) == [1]
    assert list(feature["s"].bytes_list.value) == [b"hi"]
    assert list(feature["raw"].bytes_list.value) == [b"\x00\x01"]
    assert list(feature["l"].float_list.value) == [1.5, 2.5]
    assert feature["e"].WhichOneof("kind") is None


def test_examples_context_merged():
    body = orjson.dumps({"context": {"c": 1.0, "x": 9.0}, "examples": [{"x": 2.0}], "signature_name": "s"})
    request = jc.parse_examples_request(body)
    assert request.signature_name == "s"
    merged = parse_example(request.examples[0]).features.feature
    assert list(merged["c"].float_list.value) == [1.0]
    assert list(merged["x"].float_list.value) == [2.0]  # the example's feature wins


@pytest.mark.parametrize(
    "examples,message",
    [
        ([{"x": [1.0, 2]}], "Unexpected element type in feature: x expecting type: float"),
        ([{"x": None}], "Feature: x has element with unexpected JSON type: Null"),
        ([{"x": [[1.0]]}], "Feature: x has element with unexpected JSON type: Array"),
        ([{"x": {"a": 1}}], "Feature: x has element with unexpected JSON type: Object"),
        ([{"x": 2**63}], "Feature: x has uint64 element. Only int64 is supported."),
        ([3], "Example must be JSON object but got JSON Number"),
    ],
)
def test_example_errors(examples, message):
    error = error_of(jc.parse_examples_request, orjson.dumps({"examples": examples}))
    assert error.code == Code.INVALID_ARGUMENT and error.message == message


def test_examples_key_errors():
    assert error_of(jc.parse_examples_request, b"{}").message.endswith(
        "When method is classify, key 'examples' is expected and was not found"
    )
    assert error_of(jc.parse_examples_request, b'{"examples": 1}').message.endswith(
        "Expecting 'examples' value to be an list/array"
    )
    assert error_of(jc.parse_examples_request, b'{"examples": []}').message.endswith("'examples' value is an empty array")
    limits = jc.JsonLimits(max_examples=1)
    error = error_of(jc.parse_examples_request, b'{"examples": [{}, {}]}', limits)
    assert "more than the limit of 1" in error.message


def test_encode_results():
    classes = np.array([[b"a", b"b"]], dtype=object)
    scores = np.array([[0.25, np.nan]], dtype=np.float32)
    assert jc.encode_classify_results(classes, scores) == b'{"results":[[["a",0.25],["b",NaN]]]}'
    assert orjson.loads(jc.encode_classify_results(None, np.array([[3.0]], dtype=np.float32))) == {"results": [[["", 3.0]]]}
    assert jc.encode_regress_results(np.array([3.0, 42.0], dtype=np.float32)) == b'{"results":[3.0,42.0]}'


def test_mentions_bool_has_no_false_negatives():
    big = orjson.dumps({"instances": [[0.5] * 1000] * 8})
    assert len(big) > 4096 and not jt.mentions_bool(big)
    assert jt.mentions_bool(big[:-2] + b",true]}")
    assert jt.mentions_bool(b'{"instances": [false]}')
    error = error_of(decode, big[:-2] + b",[" + b"1.0," * 999 + b"false]]}", sig(x=jt.DT_FLOAT))
    assert error.message.endswith("Type: False is not of expected type: float")


def test_repeated_request_key_first_one_wins():
    # rapidjson's FindMember (TF Serving) returns the first of repeated members.
    assert decode(b'{"instances": [1.0], "instances": [2.0, 3.0]}', sig(x=jt.DT_FLOAT))["x"].tolist() == [1.0]
    big = ", ".join(["0.5"] * 9000)
    body = f'{{"inputs": [{big}], "inputs": [1.0]}}'.encode()  # large enough for the simdjson reading
    assert decode(body, sig(x=jt.DT_FLOAT))["x"].shape == (9000,)


def test_lone_surrogate_escape_is_a_parse_error():
    error = error_of(decode, b'{"inputs": ["\\ud800"]}', sig(x=jt.DT_STRING))
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message == "JSON Parse error: The surrogate pair in string is invalid. at offset: 13"
    assert decode(b'{"inputs": ["\\ud83d\\ude00"]}', sig(x=jt.DT_STRING))["x"].tolist() == ["\U0001f600".encode()]


@pytest.mark.parametrize(
    "array, name",
    [(np.array([1.0], np.float16), "half"), (np.array([1 + 2j], np.complex64), "complex64")],
)
def test_outputs_json_cannot_write_are_refused_with_tf_servings_text(array, name):
    error = error_of(jt.json_value, array)
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message == f"Failed to write JSON value for tensor type: {name}"
