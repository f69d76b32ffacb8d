"""TF Serving's REST API end to end: endpoints, formats and error rows (tfserving.md §5)."""

from __future__ import annotations

import base64
import gzip
import math

import pytest

from tests.rest.conftest import METRICS_PATH

JSON = "application/json"


def assert_json(reply, status: int = 200):
    assert reply.status == status, reply.body
    assert reply.headers["content-type"].startswith(JSON)
    return reply.json()


# -- predict ----------------------------------------------------------------------------------


def test_predict_row_docker_quick_start(client):
    reply = client.post("/v1/models/default:predict", {"instances": [1.0, 2.0, 5.0]})
    assert assert_json(reply) == {"predictions": [2.5, 3.0, 4.5]}
    assert b"3.0" in reply.body  # floats keep their ".0"


def test_predict_columnar(client):
    assert assert_json(client.post("/v1/models/default:predict", {"inputs": [2.0, 3.0, 4.0]})) == {"outputs": [3.0, 3.5, 4.0]}
    assert assert_json(client.post("/v1/models/default:predict", {"inputs": 2.0})) == {"outputs": 3.0}


def test_predict_nested_instances(client):
    reply = client.post("/v1/models/default:predict", {"instances": [[1.0, 2.0], [3.0, 4.0]]})
    assert assert_json(reply) == {"predictions": [[2.5, 3.0], [3.5, 4.0]]}


def test_predict_named_instances_and_integers(client):
    reply = client.post("/v1/models/default:predict", {"instances": [{"x": 1}, {"x": 2}]})
    assert assert_json(reply) == {"predictions": [2.5, 3.0]}


@pytest.mark.parametrize("path", ["/v1/models/default/versions/123:predict", "/v1/models/default/labels/stable:predict",
                                  "/V1/MODELS/default:predict"])
def test_predict_version_label_and_case(client, path):
    assert assert_json(client.post(path, {"instances": [1.0]})) == {"predictions": [2.5]}


def test_predict_signature_name(client):
    reply = client.post("/v1/models/default:predict", {"signature_name": "regress_x2_to_y3", "inputs": [2.0]})
    assert assert_json(reply) == {"outputs": [4.0]}
    reply = client.post("/v1/models/half_plus_three:predict", {"instances": [1.0, 2.0, 5.0]})
    assert assert_json(reply) == {"predictions": [3.5, 4.0, 5.5]}


def test_predict_nan_and_infinity(client):
    reply = client.post("/v1/models/default:predict", b'{"instances": [NaN, Infinity, -Infinity]}')
    assert reply.status == 200
    assert b"NaN" in reply.body and b"-Infinity" in reply.body
    values = reply.json()["predictions"]
    assert math.isnan(values[0]) and values[1] == math.inf and values[2] == -math.inf


def test_predict_gzip_body(client):
    assert assert_json(client.post_gzip("/v1/models/default:predict", {"instances": [1.0, 2.0]})) == {"predictions": [2.5, 3.0]}


@pytest.mark.parametrize("encoding", ["br", "deflate", "identity", "zstd"])
def test_other_content_encodings_are_ignored_as_tf_serving_does(client, encoding):
    # TF Serving decodes gzip only; the body of any other encoding is parsed as sent.
    reply = client.call(
        "POST", "/v1/models/default:predict", b'{"instances": [1.0]}', headers={"Content-Encoding": encoding}
    )
    assert reply.status == 200
    assert reply.json() == {"predictions": [2.5]}


def test_gzip_encoding_name_is_case_insensitive(client):
    body = gzip.compress(b'{"instances": [1.0, 2.0]}')
    reply = client.call("POST", "/v1/models/default:predict", body, headers={"Content-Encoding": "GZIP"})
    assert reply.status == 200
    assert reply.json() == {"predictions": [2.5, 3.0]}


def test_predict_strings_b64_and_bytes_suffix(client):
    payload = "héllo".encode()
    body = {"instances": [{"b64": base64.b64encode(payload).decode()}, "abc"]}
    predictions = assert_json(client.post("/v1/models/strings:predict", body))["predictions"]
    assert predictions[0]["upper"] == "HéLLO"
    assert predictions[0]["length"] == len(payload)
    assert predictions[0]["echo_bytes"] == {"b64": base64.b64encode(payload).decode()}
    assert predictions[1] == {"upper": "ABC", "length": 3, "echo_bytes": {"b64": "YWJj"}}
    outputs = assert_json(client.post("/v1/models/strings:predict", {"inputs": ["a", "bb"]}))["outputs"]
    assert outputs == {"upper": ["A", "BB"], "length": [1, 2], "echo_bytes": [{"b64": "YQ=="}, {"b64": "YmI="}]}


# -- classify / regress ----------------------------------------------------------------------------


def test_classify(client):
    reply = client.post("/v1/models/default:classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
    assert assert_json(reply) == {"results": [[["", 3.0]]]}
    reply = client.post("/v1/models/default:classify", {"signature_name": "classify_x_to_y",
                                                        "examples": [{"x": 20.0}, {"x": 10.0}]})
    assert assert_json(reply) == {"results": [[["", 12.0]], [["", 7.0]]]}


def test_classify_with_labels(client):
    from servable.tf.testing_models import mlp_reference
    import numpy as np

    images = np.linspace(0, 1, 784, dtype=np.float32)
    reply = client.post("/v1/models/mlp:classify", {"signature_name": "classify", "examples": [{"images": images.tolist()}]})
    results = assert_json(reply)["results"]
    assert [label for label, _ in results[0]] == [str(i) for i in range(10)]
    expected = mlp_reference(images[None])[0]
    assert np.allclose([score for _, score in results[0]], expected, rtol=1e-5)


def test_regress(client):
    reply = client.post("/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}, {"x": 80.0}]})
    assert assert_json(reply) == {"results": [3.0, 42.0]}
    reply = client.post("/v1/models/default:regress", {"signature_name": "regress_x_to_y2", "examples": [{"x": 2.0}]})
    assert assert_json(reply) == {"results": [4.0]}
    reply = client.post("/v1/models/half_plus_three:regress", {"signature_name": "tensorflow/serving/regress",
                                                               "examples": [{"x": 1.0}, {"x": 2.0}]})
    assert assert_json(reply) == {"results": [3.5, 4.0]}


def test_regress_with_context(client):
    reply = client.post("/v1/models/default:regress", {"signature_name": "regress_x_to_y", "context": {"x": 2.0},
                                                       "examples": [{}, {"x": 4.0}]})
    assert assert_json(reply) == {"results": [3.0, 4.0]}


def test_classify_errors(client):
    reply = client.post("/v1/models/default:classify", {"signature_name": "nope", "examples": [{"x": 2.0}]})
    assert assert_json(reply, 400) == {"error": "No signature was found with the name: nope"}
    reply = client.post("/v1/models/default:regress", {"examples": []})
    assert assert_json(reply, 400)["error"].endswith("'examples' value is an empty array")
    reply = client.post("/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2}]})
    assert reply.status == 400  # int64 feature against a float parse spec, as in TF Serving


# -- status and metadata ---------------------------------------------------------------------------


AVAILABLE_123 = {"model_version_status": [{"version": "123", "state": "AVAILABLE",
                                           "status": {"error_code": "OK", "error_message": ""}}]}


@pytest.mark.parametrize("path", ["/v1/models/default", "/v1/models/default/versions/123", "/v1/models/default/labels/whatever"])
def test_status(client, path):
    assert assert_json(client.get(path)) == AVAILABLE_123


def test_status_errors(client):
    assert assert_json(client.get("/v1/models/foo"), 404) == {"error": "Could not find any versions of model foo"}
    assert assert_json(client.get("/v1/models/default/versions/99"), 404) == {"error": "Could not find version 99 of model default"}


@pytest.mark.parametrize("path", ["/v1/models/default/metadata", "/v1/models/default/versions/123/metadata",
                                  "/v1/models/default/labels/stable/metadata"])
def test_metadata(client, path):
    body = assert_json(client.get(path))
    assert body["model_spec"] == {"name": "default", "signature_name": "", "version": "123"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["x"] == {
        "dtype": "DT_FLOAT",
        "tensor_shape": {"dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": False},
        "name": "x:0",
    }
    assert default["defaults"] == {}
    assert signatures["classify_x_to_y"]["inputs"]["inputs"]["tensor_shape"] == {"dim": [], "unknown_rank": True}


def test_metadata_errors(client):
    assert assert_json(client.get("/v1/models/foo/metadata"), 404) == {"error": "Servable not found for request: Latest(foo)"}
    reply = client.get("/v1/models/default/labels/nope/metadata")
    assert assert_json(reply, 400) == {"error": "Unrecognized servable version label: nope"}


# -- error rows ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,body,status,message",
    [
        ("/v1/models/foo:predict", {"instances": [1.0]}, 404, "Servable not found for request: Latest(foo)"),
        ("/v1/models/default/versions/99:predict", {"instances": [1.0]}, 404,
         "Servable not found for request: Specific(default, 99)"),
        ("/v1/models/default/labels/Version_Nonexistent:predict", {"instances": [1.0]}, 400,
         "Unrecognized servable version label: Version_Nonexistent"),
        ("/v1/models/default:predict", {"signature_name": "nope", "instances": [1.0]}, 400,
         'Serving signature name: "nope" not found in signature def'),
        ("/v1/models/default:predict", {"instances": ["x", "y"]}, 400,
         'Failed to process element: 0 of \'instances\' list. Error: INVALID_ARGUMENT: JSON Value: "x" Type: String '
         "is not of expected type: float"),
        ("/v1/models/default:predict", {"instances": [[1.0, 2.0], [3.0]]}, 400,
         "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 but got: 1"),
        ("/v1/models/default:predict", {"signature_name": 100}, 400,
         "JSON Value: {\n    \"signature_name\": 100\n} not formatted correctly. 'signature_name' key must be a string value."),
        ("/v1/models/default:predict", b"", 400, "JSON Parse error: The document is empty"),
        ("/v1/models/default:predict", b"instances = [1, 2]", 400, "JSON Parse error: Invalid value. at offset: 0"),
        ("/v1/models/foo:predict", b"{", 400, "JSON Parse error: Missing a name for object member. at offset: 1"),
        ("/v1/models/default:predict", {"foo": 1}, 400, "Missing 'inputs' or 'instances' key"),
        ("/v1/models/default:predict", rb'{"instances": ["\ud800"]}', 400,
         "JSON Parse error: The surrogate pair in string is invalid. at offset: 16"),
        ("/v1/models/default:predict", rb'{"signature_name": "\udc00", "instances": [1.0]}', 400,
         "JSON Parse error: The surrogate pair in string is invalid. at offset: 20"),
        ("/v1/models/default:predict", rb'{"instances": ["\ud83d\ude00"]}', 400,
         'Failed to process element: 0 of \'instances\' list. Error: INVALID_ARGUMENT: JSON Value: "\U0001f600" '
         "Type: String is not of expected type: float"),
        ("/v1/models/default/versions/99999999999999999999:predict", {"instances": [1.0]}, 400,
         "Failed to convert version: 99999999999999999999 to numeric."),
    ],
)
def test_predict_error_rows(client, path, body, status, message):
    assert assert_json(client.post(path, body), status) == {"error": message}


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v1/models/default:predict"),
        ("POST", "/v1/models/default"),
        ("POST", "/v1/models/default/metadata"),
        ("PUT", "/v1/models/default:predict"),
        ("DELETE", "/v1/models/default"),
        ("PATCH", "/v1/models/default"),
        ("POST", "/v1/models/default:PREDICT"),
        ("POST", "/v1/models/default:explain"),
        ("GET", "/v1/models/default/versions/abc"),
        ("GET", "/v1/foo"),
    ],
)
def test_malformed_requests(client, method, path):
    reply = client.call(method, path, b"{}")
    assert assert_json(reply, 400) == {"error": f"Malformed request: {method} {path}"}


def test_missing_model_name(client):
    assert assert_json(client.get("/v1/models"), 400) == {"error": "Missing model name in request."}


@pytest.mark.parametrize("path", ["/v2/models/default", "/v1", "/V1"])
def test_outside_v1_is_plain_404(client, path):
    reply = client.get(path)  # TF Serving routes (?i)/v1/.* only; libevent answers the rest
    assert reply.status == 404
    assert not reply.headers["content-type"].startswith(JSON)


def test_url_encoded_model_name(client):
    assert assert_json(client.post("/v1/models/%64efault:predict", {"instances": [1.0]})) == {"predictions": [2.5]}


# -- CORS, health, metrics ------------------------------------------------------------------------


def test_cors_headers_when_enabled(client):
    reply = client.post("/v1/models/default:predict", {"instances": [1.0]})
    assert reply.headers["access-control-allow-origin"] == "*"
    assert reply.headers["access-control-allow-methods"] == "POST, GET"
    assert reply.headers["access-control-allow-headers"] == "Content-Type"
    assert client.get("/v1/models/foo").headers["access-control-allow-origin"] == "*"


def test_cors_preflight(client):
    reply = client.call("OPTIONS", "/v1/models/default:predict", headers={"Origin": "https://example.com"})
    assert reply.status == 200 and reply.body == b""
    reply = client.call("OPTIONS", "/v1/models/default:predict")
    assert reply.status == 400
    assert reply.json() == {"error": "Origin header is missing in CORS preflight"}


def test_health_and_readiness(client):
    assert assert_json(client.get("/v1/healthz")) == {"status": "alive"}
    assert assert_json(client.get("/v1/readyz")) == {"status": "ready"}


def test_metrics_endpoint_counts_rest_requests(client, rest_server):
    before = rest_server.metrics.request_count("default", "INVALID_ARGUMENT")
    client.post("/v1/models/default:predict", b"not json")
    assert rest_server.metrics.request_count("default", "INVALID_ARGUMENT") == before + 1
    client.post("/v1/models/default:predict", {"instances": [1.0]})
    reply = client.get(METRICS_PATH)
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/plain; version=0.0.4"
    text = reply.body.decode()
    assert ':tensorflow:serving:request_count{model_name="default",status="OK"}' in text
    assert ':tensorflow:serving:request_latency_bucket{model_name="default",API="predict",entrypoint="REST"' in text
