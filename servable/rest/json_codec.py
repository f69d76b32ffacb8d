"""TF Serving's REST request and response documents (``util/json_tensor.cc``).

Predict: ``parse_predict_request`` reads the body up to the signature name (TF Serving
checks the body before it looks the model up); ``decode_predict_inputs`` turns
``instances`` (row) or ``inputs`` (columnar) into arrays once the signature, and so each
input's dtype, is known; ``encode_predict_response`` writes ``predictions`` or
``outputs``. Classify/Regress: ``parse_examples_request`` gives serialized
``tf.Example``s (context merged as the gRPC path does); ``encode_classify_results`` and
``encode_regress_results`` write ``results``. Single values and arrays are converted by
``servable.rest.json_tensor``.

Pure functions, no aiohttp; the REST app calls them on request worker threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import orjson

from servable._proto.tensorflow.core.example import example_pb2
from servable.core.status import Code, ServingError, invalid_argument
from servable.rest.json_numeric import DenseNumeric, dense_numeric_value
from servable.rest.json_tensor import (
    _MAX_EXACT_INT,
    DEFAULT_JSON_LIMITS,
    DT_DOUBLE,
    DT_FLOAT,
    FLOAT_MAX,
    NUMPY_MAX_DIMS,
    JsonLimits,
    b64decode,
    fast_tensor,
    is_b64,
    json_value,
    mentions_bool,
    tensor_from_json,
    tensor_from_json_reference,
)
from servable.rest.json_text import dumps, format_decimal, json_type_string, json_value_to_string, parse_json


# -- request documents -------------------------------------------------------------------------


@dataclass
class PredictRequestJson:
    """A parsed :predict body, checked as far as TF Serving checks before the model lookup.

    ``dense`` is set when ``json_numeric`` read the body's tensor: ``doc`` then holds ``0``
    in its place, and ``decode_predict_inputs`` either uses the parsed array or reads
    ``body`` again the ordinary way.
    """

    doc: dict
    signature_name: str
    may_contain_bools: bool  # raw body mentions true/false: numeric fast path must check types
    body: bytes = b""
    dense: DenseNumeric | None = None


def _load_object(body: bytes) -> dict:
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {json_value_to_string(doc)} Is not object")
    return doc


def _signature_name(doc: dict) -> str:
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {json_value_to_string(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


def parse_predict_request(body: bytes) -> PredictRequestJson:
    """Parse a :predict body: JSON, top-level object, ``signature_name`` type."""
    dense = dense_numeric_value(body)
    if dense is not None and isinstance(dense.doc.get("signature_name", ""), str):
        return PredictRequestJson(dense.doc, dense.doc.get("signature_name", ""), False, body, dense)
    doc = _load_object(body)
    return PredictRequestJson(doc, _signature_name(doc), mentions_bool(body))


def _decode_dense(request: PredictRequestJson, inputs: Mapping[str, Any], limits: JsonLimits) -> dict[str, np.ndarray] | None:
    """The array ``json_numeric`` read, typed as ``fast_tensor`` would type it; None to fall back.

    Only for a one-input signature of a float dtype (the common case); an all-integer
    array is exact only up to the dtype's integer precision, a float array only within
    its range, as in ``fast_tensor``.
    """
    dense = request.dense
    if dense is None or len(inputs) != 1:
        return None
    name, info = next(iter(inputs.items()))
    dtype = _dtype_of(info)
    if dtype not in (DT_FLOAT, DT_DOUBLE) or dense.values.ndim > limits.max_depth:
        return None
    values = dense.values
    if values.dtype == np.int64:
        if max(abs(int(values.max())), abs(int(values.min()))) > _MAX_EXACT_INT[dtype]:
            return None
    else:
        finite = values[np.isfinite(values)]
        # Beyond the dtype's exact integers a float reading may hide an integer token
        # (``[0.5, 1435774380]``), which TF Serving refuses: let the reference decide.
        if finite.size and float(np.abs(finite).max()) > _MAX_EXACT_INT[dtype]:
            return None
    return {name: values.astype(np.float32 if dtype == DT_FLOAT else np.float64)}




def _dtype_of(info: Any) -> int:
    return int(getattr(info, "dtype", info))


def _instances_reference(instances: list, inputs: Mapping[str, Any], named: bool, limits: JsonLimits) -> dict[str, np.ndarray]:
    """``FillTensorMapFromInstancesList`` element by element, with TF Serving's messages."""
    shapes: dict[str, list[int]] = {}
    columns: dict[str, list[np.ndarray]] = {}
    names = set(inputs)

    def add(item: Any, name: str) -> None:
        if name not in inputs:
            raise invalid_argument(f"JSON object: does not have named input: {name}")
        array = tensor_from_json_reference(item, _dtype_of(inputs[name]), limits)
        if array.ndim >= NUMPY_MAX_DIMS:  # the batch dimension is added below
            raise invalid_argument(f"JSON value is nested deeper than the limit of {NUMPY_MAX_DIMS - 1} levels")
        shape = list(array.shape)
        if name not in shapes:
            shapes[name] = shape
        elif int(np.prod(shapes[name])) != array.size:
            raise invalid_argument(f"Expecting tensor size: {int(np.prod(shapes[name]))} but got: {array.size}")
        elif shapes[name] != shape:
            raise invalid_argument(
                f"Expecting shape [{','.join(map(str, shapes[name]))}] but got: [{','.join(map(str, shape))}]"
            )
        columns.setdefault(name, []).append(array)

    only = next(iter(inputs))
    for index, element in enumerate(instances):
        element_is_object = isinstance(element, dict) and not is_b64(element)
        if named:
            if not element_is_object:
                raise invalid_argument(f"Expecting object but got list at item {index} of input list")
            for name, item in element.items():
                try:
                    add(item, name)
                except ServingError as error:
                    raise invalid_argument(
                        f"Failed to process element: {index} key: {name} of 'instances' list. Error: {error.status_text()}"
                    ) from None
            if set(element) != names:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{json_value_to_string(element)} must only have keys: {','.join(sorted(names))}"
                )
        else:
            if element_is_object:
                raise invalid_argument(f"Expecting value/list but got object at item {index} of input list")
            try:
                add(element, only)
            except ServingError as error:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. Error: {error.status_text()}"
                ) from None
    result = {}
    for name, arrays in columns.items():
        # ravel + concatenate: object arrays of 0-d strings must not nest arrays in cells.
        result[name] = np.concatenate([array.ravel() for array in arrays]).reshape(len(arrays), *shapes[name])
    return result


def _decode_instances(request: PredictRequestJson, inputs: Mapping[str, Any], limits: JsonLimits) -> dict[str, np.ndarray]:
    doc = request.doc
    instances = doc["instances"]
    if "inputs" in doc:
        raise invalid_argument(
            f"JSON Value: {json_value_to_string(doc)} Not formatted correctly expecting only one of "
            "'inputs' or 'instances' keys to exist "
        )
    if not isinstance(instances, list):
        raise invalid_argument(f"JSON Value: {json_value_to_string(doc)} Excepting 'instances' to be an list/array")
    if not instances:
        raise invalid_argument(f"JSON Value: {json_value_to_string(doc)} No values in 'instances' array")
    first = instances[0]
    if not isinstance(first, dict) and len(inputs) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors required as per tensorinfo_map"
        )
    named = isinstance(first, dict) and not is_b64(first)
    if named:
        names = set(inputs)
        if not all(isinstance(row, dict) and row.keys() == names for row in instances):
            return _instances_reference(instances, inputs, True, limits)
        columns = {name: [row[name] for row in instances] for name in inputs}
    else:
        if len(inputs) != 1:
            return _instances_reference(instances, inputs, False, limits)
        columns = {next(iter(inputs)): instances}
    result = {}
    for name, column in columns.items():
        array = fast_tensor(column, _dtype_of(inputs[name]), request.may_contain_bools, limits)
        if array is None or array.ndim < 1 or array.shape[0] != len(instances):
            return _instances_reference(instances, inputs, named, limits)
        result[name] = array
    return result


def _decode_inputs(request: PredictRequestJson, inputs: Mapping[str, Any], limits: JsonLimits) -> dict[str, np.ndarray]:
    value = request.doc["inputs"]
    if not isinstance(value, dict) or is_b64(value):
        if len(inputs) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors required as per tensorinfo_map"
            )
        name, info = next(iter(inputs.items()))
        return {name: tensor_from_json(value, _dtype_of(info), request.may_contain_bools, limits)}
    result = {}
    for name in sorted(inputs):
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        result[name] = tensor_from_json(value[name], _dtype_of(inputs[name]), request.may_contain_bools, limits)
    return result


def decode_predict_inputs(
    request: PredictRequestJson, signature: Any, limits: JsonLimits = DEFAULT_JSON_LIMITS
) -> dict[str, np.ndarray]:
    """``instances`` or ``inputs`` as arrays typed by ``signature.inputs`` (``TensorInfo.dtype``).

    Called by ``ServingService.predict`` (on a request worker thread) once the signature
    is known. Raises ``ServingError`` with TF Serving's messages.
    """
    inputs: Mapping[str, Any] = signature.inputs
    if not inputs:
        raise invalid_argument(f"Failed to get input map for signature: {request.signature_name or 'DEFAULT'}")
    if request.dense is not None:
        fast = _decode_dense(request, inputs, limits)
        if fast is not None:
            return fast
        doc = _load_object(request.body)  # anything else: the ordinary reading, its errors
        request = PredictRequestJson(doc, _signature_name(doc), mentions_bool(request.body))
    doc = request.doc
    if "instances" in doc:
        return _decode_instances(request, inputs, limits)
    if "inputs" in doc:
        return _decode_inputs(request, inputs, limits)
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def request_format(request: PredictRequestJson) -> str:
    """"row" or "columnar" (decided by the key present, as TF Serving does)."""
    return "row" if "instances" in request.doc else "columnar"




def encode_predict_response(outputs: Mapping[str, np.ndarray], row_format: bool) -> bytes:
    """``{"predictions": ...}`` (row) or ``{"outputs": ...}`` (columnar)."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    arrays = {alias: np.asarray(array) for alias, array in outputs.items()}
    if not row_format:
        if len(arrays) == 1:
            alias, array = next(iter(arrays.items()))
            return dumps({"outputs": json_value(array, alias)})
        return dumps({"outputs": {alias: json_value(array, alias) for alias, array in arrays.items()}})
    batch = -1
    for alias, array in arrays.items():
        if array.ndim == 0:
            raise invalid_argument(f"Tensor name: {alias} has no shape information ")
        if batch >= 0 and array.shape[0] != batch:
            raise invalid_argument(f"Tensor name: {alias} has inconsistent batch size: {array.shape[0]} expecting: {batch}")
        batch = array.shape[0]
    if len(arrays) == 1:
        alias, array = next(iter(arrays.items()))
        return dumps({"predictions": json_value(array, alias)})
    rows = [{alias: json_value(array[i], alias) for alias, array in arrays.items()} for i in range(batch)]
    return dumps({"predictions": rows})




# -- classify / regress -----------------------------------------------------------------------


def _add_feature_value(value: Any, name: str, feature: Any, kind: list[str], limits: JsonLimits) -> None:
    def expect(wanted: str) -> None:
        if kind[0] and kind[0] != wanted:
            raise invalid_argument(f"Unexpected element type in feature: {name} expecting type: {kind[0]}")
        kind[0] = wanted

    if isinstance(value, bool):
        expect("int64")
        feature.int64_list.value.append(1 if value else 0)
    elif isinstance(value, str):
        expect("bytes")
        feature.bytes_list.value.append(value.encode("utf-8"))
    elif isinstance(value, dict):
        if not is_b64(value):
            raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: Object")
        expect("bytes")
        feature.bytes_list.value.append(b64decode(value, limits))
    elif isinstance(value, float) or (isinstance(value, int) and not -(2**63) <= value < 2**64):
        expect("float")
        number = float(value)
        if np.isfinite(number) and abs(number) > FLOAT_MAX[DT_FLOAT]:
            raise invalid_argument(f"Cannot convert JSON value: {json_value_to_string(value)} to float without loss of precision.")
        feature.float_list.value.append(number)
    elif isinstance(value, int):
        expect("int64")
        if value >= 2**63:
            raise invalid_argument(f"Feature: {name} has uint64 element. Only int64 is supported.")
        feature.int64_list.value.append(value)
    else:
        raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: {json_type_string(value)}")


def example_from_json(value: Any, limits: JsonLimits = DEFAULT_JSON_LIMITS) -> Any:
    """``MakeExampleFromJsonObject``: one JSON object as a ``tf.Example`` (our proto class)."""
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type_string(value)}")
    example = example_pb2.Example()
    features = example.features.feature
    for name, content in value.items():
        feature = features[name]
        kind = [""]
        for item in content if isinstance(content, list) else (content,):
            _add_feature_value(item, name, feature, kind, limits)
    return example


@dataclass
class ExamplesRequestJson:
    signature_name: str
    examples: list[bytes]


def parse_examples_request(body: bytes, limits: JsonLimits = DEFAULT_JSON_LIMITS) -> ExamplesRequestJson:
    """A :classify or :regress body as serialized examples (context merged, as gRPC does)."""
    doc = _load_object(body)
    signature_name = _signature_name(doc)
    context = b""
    if "context" in doc:
        context = example_from_json(doc["context"], limits).SerializeToString()
    if "examples" not in doc:
        raise invalid_argument(
            f"JSON Value: {json_value_to_string(doc)} When method is classify, key 'examples' is expected and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise invalid_argument(f"JSON Value: {json_value_to_string(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid_argument(f"JSON Value: {json_value_to_string(doc)} 'examples' value is an empty array")
    if len(examples) > limits.max_examples:
        raise ServingError(
            Code.INVALID_ARGUMENT, f"Request has {len(examples)} examples, more than the limit of {limits.max_examples}"
        )
    serialized = [context + example_from_json(item, limits).SerializeToString() for item in examples]
    return ExamplesRequestJson(signature_name, serialized)


def _score(value: Any) -> Any:
    value = np.float32(value)
    return value if np.isfinite(value) else orjson.Fragment(format_decimal(float(value)).encode())


def encode_classify_results(classes: np.ndarray | None, scores: np.ndarray | None) -> bytes:
    """``{"results": [[[label, score], ...], ...]}``; label "" without classes, score 0.0 without scores."""
    reference = classes if classes is not None else scores
    if reference is None or len(reference) == 0:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    rows = []
    for i in range(len(reference)):
        width = reference.shape[1] if reference.ndim > 1 else 1
        row = []
        for j in range(width):
            label = ""
            if classes is not None:
                item = classes[i][j] if classes.ndim > 1 else classes[i]
                label = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            score = np.float32(0.0)
            if scores is not None:
                score = scores[i][j] if scores.ndim > 1 else scores[i]
            row.append([label, _score(score)])
        rows.append(row)
    return dumps({"results": rows})


def encode_regress_results(values: np.ndarray) -> bytes:
    """``{"results": [v1, v2, ...]}``."""
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    if flat.size == 0:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    return dumps({"results": json_value(flat)})


def encode_error(message: str) -> bytes:
    """``{"error": "<message>"}``; never raises (a message orjson refuses, e.g. one holding
    a lone surrogate, is written with ASCII escapes instead)."""
    try:
        return dumps({"error": message})
    except TypeError:
        import json

        return json.dumps({"error": str(message)}).encode()