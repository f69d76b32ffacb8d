"""Send the MNIST test set to the model server over gRPC and print the error rate.

The counterpart of TF Serving's ``mnist_client.py``::

    python -m examples.mnist.client --server=127.0.0.1:8500 --dataset=digits

``--api predict`` (default) calls ``Predict`` on the ``predict_images`` signature with
batches of images; ``--api classify`` calls ``Classify`` on ``serving_default`` with one
``tf.Example`` per image (feature ``x``). Prints ``Inference error rate: 3.1%`` and exits 0.
"""

from __future__ import annotations

import argparse
import concurrent.futures
from typing import Sequence

import grpc
import numpy as np

from examples import grpc_client
from examples.mnist import data
from servable._proto.tensorflow.core.example import example_pb2, feature_pb2
from servable._proto.tensorflow_serving.apis import classification_pb2, predict_pb2


def _predict_batch(stub, model_name: str, version: int | None, images: np.ndarray, timeout: float) -> np.ndarray:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = "predict_images"
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["images"].CopyFrom(grpc_client.make_tensor_proto(images.astype(np.float32)))
    response = stub.Predict(request, timeout=timeout)
    return grpc_client.make_ndarray(response.outputs["scores"]).argmax(axis=1)


def _classify_batch(stub, model_name: str, version: int | None, images: np.ndarray, timeout: float) -> np.ndarray:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = "serving_default"
    if version is not None:
        request.model_spec.version.value = version
    for image in images:
        example = example_pb2.Example(features=feature_pb2.Features(feature={
            "x": feature_pb2.Feature(float_list=feature_pb2.FloatList(value=image.tolist())),
        }))
        request.input.example_list.examples.append(example)
    response = stub.Classify(request, timeout=timeout)
    # Classes come best first, so the first label of each answer is the prediction.
    return np.array([int(c.classes[0].label) for c in response.result.classifications])


def error_rate(server: str, model_name: str = "mnist", dataset: str = "digits", api: str = "predict",
               num_tests: int | None = None, batch_size: int = 100, concurrency: int = 2,
               version: int | None = None, timeout: float = 30.0) -> float:
    """Classify the first ``num_tests`` test images (all by default); return the fraction wrong.

    gRPC errors propagate as ``grpc.RpcError``.
    """
    split = data.load(dataset)
    images, labels = split.test_images[:num_tests], split.test_labels[:num_tests]
    call = _predict_batch if api == "predict" else _classify_batch
    with grpc.insecure_channel(server, options=grpc_client.CHANNEL_OPTIONS) as channel:
        stub = grpc_client.prediction_stub(channel)
        starts = range(0, len(images), batch_size)
        with concurrent.futures.ThreadPoolExecutor(max(1, concurrency)) as pool:
            batches = pool.map(lambda s: call(stub, model_name, version, images[s:s + batch_size], timeout), starts)
            predicted = np.concatenate(list(batches)) if len(images) else np.zeros(0, np.int64)
    return float(np.mean(predicted != labels)) if len(labels) else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Send the MNIST test set to the server and print the error rate.")
    parser.add_argument("--server", default="127.0.0.1:8500", help="host:port of the gRPC API")
    parser.add_argument("--model_name", default="mnist")
    parser.add_argument("--model_version", type=int, default=None, help="a specific version (default: latest)")
    parser.add_argument("--dataset", choices=data.DATASETS, default="digits")
    parser.add_argument("--api", choices=("predict", "classify"), default="predict")
    parser.add_argument("--num_tests", type=int, default=None, help="how many test images (default: all)")
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight at once")
    args = parser.parse_args(argv)
    try:
        rate = error_rate(args.server, args.model_name, args.dataset, args.api, args.num_tests,
                          args.batch_size, args.concurrency, args.model_version)
    except grpc.RpcError as error:
        print(f"Request failed: {error.code().name}: {error.details()}")
        return 1
    print(f"Inference error rate: {rate * 100:.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
