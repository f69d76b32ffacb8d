"""Send photos to the image classifier over gRPC and print the answer as JSON.

    python -m examples.image_classifier.client --server=127.0.0.1:8500 --model_name=inception photo.jpg

With no file given it sends scikit-learn's bundled sample photo ``china.jpg``. The output::

    {"model_name": "inception", "model_version": 1, "predictions": [
      {"file": "photo.jpg", "classes": [{"label": "pagoda", "score": 0.93}, ...]}]}

``build_request``/``parse_response`` are shared with the web app (``examples.webapp``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

import grpc

from examples import grpc_client
from servable._proto.tensorflow_serving.apis import predict_pb2


def sample_photo() -> str:
    """Path of a real JPEG that ships with scikit-learn (427x640, CC-BY 2.0)."""
    import sklearn

    return os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images", "china.jpg")


def build_request(model_name: str, images: Sequence[bytes], signature_name: str = "serving_default",
                  input_key: str = "image_bytes", version: int | None = None) -> predict_pb2.PredictRequest:
    """One PredictRequest carrying ``images`` (encoded files) as a tf.string ``[n]`` tensor."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = version
    request.inputs[input_key].CopyFrom(grpc_client.make_tensor_proto(list(images)))
    request.output_filter.extend(["classes", "scores"])
    return request


def parse_response(response: predict_pb2.PredictResponse, names: Sequence[str]) -> dict[str, Any]:
    """PredictResponse -> the JSON-ready dict printed above (one entry per name in ``names``)."""
    classes = grpc_client.make_ndarray(response.outputs["classes"])
    scores = grpc_client.make_ndarray(response.outputs["scores"])
    predictions = []
    for name, labels, values in zip(names, classes, scores):
        predictions.append({
            "file": name,
            "classes": [{"label": label.decode("utf-8", "replace"), "score": round(float(score), 6)}
                        for label, score in zip(labels, values)],
        })
    return {
        "model_name": response.model_spec.name,
        "model_version": response.model_spec.version.value,
        "predictions": predictions,
    }


def classify_files(server: str, model_name: str, paths: Sequence[str], signature_name: str = "serving_default",
                   input_key: str = "image_bytes", timeout: float = 30.0) -> dict[str, Any]:
    """Classify the image files at ``paths`` in one request; gRPC errors raise ``grpc.RpcError``."""
    images = []
    for path in paths:
        with open(path, "rb") as f:
            images.append(f.read())
    with grpc.insecure_channel(server, options=grpc_client.CHANNEL_OPTIONS) as channel:
        stub = grpc_client.prediction_stub(channel)
        response = stub.Predict(build_request(model_name, images, signature_name, input_key), timeout=timeout)
    return parse_response(response, [os.path.basename(p) for p in paths])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify photos through the model server's gRPC API.")
    parser.add_argument("images", nargs="*", help="image files (default: a sample photo)")
    parser.add_argument("--server", default="127.0.0.1:8500", help="host:port of the gRPC API")
    parser.add_argument("--model_name", default="inception")
    parser.add_argument("--signature_name", default="serving_default")
    parser.add_argument("--input_key", default="image_bytes")
    args = parser.parse_args(argv)
    try:
        result = classify_files(args.server, args.model_name, args.images or [sample_photo()],
                                args.signature_name, args.input_key)
    except grpc.RpcError as error:
        print(json.dumps({"error": error.details(), "code": error.code().name}), file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
