"""Model warmup: replay ``assets.extra/tf_serving_warmup_requests`` before a version serves.

``SavedModelLoader.load()`` calls ``run_warmup`` on its manager load thread after the
model (and any wrapper) is built and before the version becomes AVAILABLE, so no client
request pays for the first-call costs (function instantiation, graph optimization,
allocator growth). Semantics follow TF Serving (tfserving.md §7): TFRecord of
``tensorflow.serving.PredictionLog``, at most 1000 records, each replayed
``iterations`` times; any failing record raises ``ServingError`` and fails the load.

Without a warmup file, servable goes further than TF Serving: every signature is called
once per batch size with made-up inputs (zeros / empty strings, unknown dims set to the
batch size or 1). That is best effort: a signature that rejects such inputs (e.g. a
tf.Example parser with required features) is logged and skipped, never a failure.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Sequence

import numpy as np

from servable._proto.tensorflow_serving.apis import prediction_log_pb2
from servable.core.status import Code, ServingError, failed_precondition, invalid_argument, unimplemented

log = logging.getLogger(__name__)

WARMUP_DIR = "assets.extra"
WARMUP_FILENAME = "tf_serving_warmup_requests"
MAX_RECORDS = 1000
DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
DT_STRING = 7


def warmup_file_path(export_dir: str) -> str:
    return os.path.join(export_dir, WARMUP_DIR, WARMUP_FILENAME)


def read_warmup_records(path: str) -> list[bytes]:
    """Payloads of the TFRecord file at ``path`` (at most ``MAX_RECORDS``).

    INVALID_ARGUMENT past the limit, DATA_LOSS for a corrupt file (TF Serving's texts).
    """
    import tensorflow as tf

    records: list[bytes] = []
    try:
        for record in tf.data.TFRecordDataset(path):
            if len(records) >= MAX_RECORDS:
                raise invalid_argument(f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}")
            records.append(record.numpy())
    except tf.errors.OpError as error:
        from servable.tf.saved_model import clean_tf_message

        raise ServingError(
            Code.DATA_LOSS, f"{clean_tf_message(error.message)}. Please verify your warmup data is in TFRecord format."
        ) from None
    return records


def examples_from_input(input_proto: Any) -> list[bytes]:
    """Serialized tf.Examples of a ``tensorflow.serving.Input``, context merged in.

    Concatenating serialized messages merges them; the example comes last so its
    features win over the context's, as in TF Serving's InputToSerializedExampleTensor.
    """
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        return [example.SerializeToString() for example in input_proto.example_list.examples]
    if kind == "example_list_with_context":
        with_context = input_proto.example_list_with_context
        context = with_context.context.SerializeToString()
        return [context + example.SerializeToString() for example in with_context.examples]
    return []


def _replay(servable: Any, log_record: Any) -> bool:
    """Run one PredictionLog's request against ``servable``; False when it has none."""
    from servable.tf import tensors

    kind = log_record.WhichOneof("log_type")
    if kind is None:
        return False
    if kind == "predict_log":
        request = log_record.predict_log.request
        key = request.model_spec.signature_name or DEFAULT_SIGNATURE
        if key not in servable.signatures:
            raise failed_precondition(f'Serving signature key "{key}" not found.')
        inputs = {}
        for alias, proto in request.inputs.items():
            try:
                inputs[alias] = tensors.tensor_proto_to_ndarray(proto)
            except ServingError as error:
                raise invalid_argument(f"tensor parsing error: {alias}: {error.message}") from None
        servable.predict(key, inputs, list(request.output_filter))
    elif kind in ("classify_log", "regress_log"):
        request = getattr(log_record, kind).request
        _run_inference(servable, request.model_spec.signature_name, CLASSIFY_METHOD if kind == "classify_log" else REGRESS_METHOD, examples_from_input(request.input))
    elif kind == "multi_inference_log":
        request = log_record.multi_inference_log.request
        examples = examples_from_input(request.input)
        for task in request.tasks:
            if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
                raise unimplemented(f"Unsupported signature method_name: {task.method_name}")
            _run_inference(servable, task.model_spec.signature_name, task.method_name, examples)
    else:
        number = prediction_log_pb2.PredictionLog.DESCRIPTOR.fields_by_name[kind].number
        raise unimplemented(f"Unsupported log_type for warmup: {number}")
    return True


def _run_inference(servable: Any, signature_name: str, method: str, examples: list[bytes]) -> None:
    key = signature_name or DEFAULT_SIGNATURE
    if key not in servable.signatures:
        raise invalid_argument(f"No signature was found with the name: {key}")
    if not examples:
        raise invalid_argument("Input is empty.")
    if method == CLASSIFY_METHOD:
        servable.classify(key, examples)
    else:
        servable.regress(key, examples)


def replay_warmup_file(servable: Any, path: str, iterations: int = 1) -> int:
    """Replay every record of the warmup file at ``path``; the number of records replayed."""
    replayed = 0
    for payload in read_warmup_records(path):
        try:
            record = prediction_log_pb2.PredictionLog.FromString(payload)
        except Exception as error:  # protobuf DecodeError
            raise invalid_argument(f"Failed to parse warmup record: {error}") from None
        ran = False
        for _ in range(max(1, iterations)):
            try:
                ran = _replay(servable, record)
            except ServingError:
                raise
            except Exception as error:
                raise ServingError(Code.INTERNAL, f"Warmup request failed: {type(error).__name__}: {error}") from error
            if not ran:
                break
        replayed += int(ran)
    return replayed


def synthetic_inputs(signature: Any, batch_size: int) -> dict[str, np.ndarray]:
    """Made-up inputs for ``signature``: zeros or b"" of its dtypes; unknown leading dim
    (or unknown rank) -> ``batch_size``, other unknown dims -> 1."""
    from servable.tf import tensors

    inputs = {}
    for alias, info in signature.inputs.items():
        if info.shape is None:
            shape: tuple[int, ...] = (batch_size,)
        else:
            shape = tuple((batch_size if i == 0 else 1) if d < 0 else d for i, d in enumerate(info.shape))
        if info.dtype == DT_STRING:
            array = np.empty(shape, dtype=object)
            array.fill(b"")
        else:
            array = np.zeros(shape, dtype=tensors.numpy_dtype(info.dtype))
        inputs[alias] = array
    return inputs


def warm_up_signatures(servable: Any, batch_sizes: Sequence[int] = (1,)) -> list[str]:
    """Call each signature once per batch size with ``synthetic_inputs``; the keys that ran.

    Never raises: failures are logged at INFO and the signature is skipped.
    """
    warmed = []
    for key, signature in servable.signatures.items():
        ok = True
        for batch_size in batch_sizes:
            try:
                servable.predict(key, synthetic_inputs(signature, batch_size), ())
            except Exception as error:
                ok = False
                log.info("warmup: skipped signature %s (made-up inputs rejected: %s)", key, error)
                break
        if ok:
            warmed.append(key)
    return warmed


def run_warmup(
    servable: Any, path: str, iterations: int = 1, batch_sizes: Iterable[int] = (1,), *, synthetic: bool = True
) -> int:
    """Warm ``servable`` (loaded from version folder ``path``); the warmup records replayed.

    With a warmup file its records are replayed (errors raise ``ServingError``); without
    one, ``warm_up_signatures`` primes every signature (unless ``synthetic`` is False:
    a model whose signatures change state, e.g. a counter, must not be called with
    made-up inputs) and 0 is returned.
    """
    file_path = warmup_file_path(path)
    if os.path.isfile(file_path):
        return replay_warmup_file(servable, file_path, iterations)
    if not synthetic:
        log.info("No warmup data file found at %s; no warmup (--warmup_signatures_without_file=false)", file_path)
        return 0
    log.info("No warmup data file found at %s; warming signatures with made-up inputs", file_path)
    warm_up_signatures(servable, tuple(batch_sizes))
    return 0
