"""``tensorflow.serving.PredictionService`` and ``ModelService`` on grpc.aio.

Each RPC handler runs on the event loop only long enough to hand the request to the
service's worker pool (``ServingService.run_blocking``); decoding tensors, running the
model and encoding the answer happen there. GetModelStatus is answered on the loop (a
dictionary read), so status stays responsive while every worker is busy.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

import grpc
from google.protobuf.message import DecodeError

from servable._proto.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    predict_pb2,
    regression_pb2,
)
from servable.core.status import Code, ServingError, invalid_argument
from servable.grpc_api.convert import error_details, examples_from_input, fill_spec, grpc_code, spec_from_proto
from servable.serving.service import INLINE_BYTES, InferenceTask, ServingService
from servable.tf import tensors

log = logging.getLogger(__name__)

ConfigReloader = Callable[[Any], None]


async def _abort(context: grpc.aio.ServicerContext, error: ServingError) -> None:
    await context.abort(grpc_code(error.code), error_details(error))


class _Received:
    """A Predict request with its serialized size (what the size-checking deserializer saw)."""

    __slots__ = ("message", "size")

    def __init__(self, message: Any, size: int) -> None:
        self.message = message
        self.size = size


class _Refused:
    """Placeholder a deserializer returns instead of a request it would not parse.

    Why: an exception raised in a grpc.aio deserializer reaches the client as UNKNOWN
    with Python's exception text; the handler instead aborts with ``error``.
    """

    __slots__ = ("error",)

    def __init__(self, error: ServingError) -> None:
        self.error = error


class PredictionService:
    """Handlers of ``tensorflow.serving.PredictionService``."""

    def __init__(self, service: ServingService, *, tensor_content_outputs: bool = False, limits: Any = None) -> None:
        from servable.limits import DEFAULT_LIMITS

        self.service = service
        self.tensor_content_outputs = tensor_content_outputs
        self.limits = limits or DEFAULT_LIMITS

    def _examples(self, input_proto: Any) -> list[bytes]:
        """The request's examples, refused beyond ``limits.max_examples`` before serializing them."""
        kind = input_proto.WhichOneof("kind")
        count = len(getattr(input_proto, kind).examples) if kind else 0
        if count > self.limits.max_examples:
            raise invalid_argument(f"Request has {count} examples, more than the limit of {self.limits.max_examples}")
        return examples_from_input(input_proto)

    async def _run(self, context: grpc.aio.ServicerContext, fn: Callable[[Any], Any], request: Any) -> Any:
        """Answer one RPC: ``fn(request)`` on the worker pool, or awaited when it is a coroutine function."""
        if isinstance(request, _Refused):
            await _abort(context, request.error)
        try:
            if asyncio.iscoroutinefunction(fn):
                return await fn(request)
            return await self.service.run_blocking(fn, request)
        except ServingError as error:
            await _abort(context, error)

    # -- Predict ----------------------------------------------------------------------

    async def Predict(self, received: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(received, _Received):
            inline = received.size <= INLINE_BYTES
            return await self._run(context, self.predict_async if inline else self.predict_sync, received.message)
        return await self._run(context, self.predict_sync, received)

    async def predict_async(self, request: Any) -> Any:
        """Predict for a small request, decoded and encoded on the event loop.

        Why: with batching on, a request then waits for its batch without holding a
        worker thread (see ``ServingService.predict_async``); decoding and encoding a
        request of at most ``INLINE_BYTES`` takes tens of microseconds, less than the two
        thread hand-offs it saves. Larger outputs are encoded on the worker pool.
        """
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        spec = spec_from_proto(request.model_spec)
        result = await self.service.predict_async(
            spec, self._decoder(request), list(request.output_filter), entrypoint="GRPC"
        )
        if sum(getattr(array, "nbytes", 0) for array in result.outputs.values()) > INLINE_BYTES:
            return await self.service.run_blocking(self._predict_response, spec, result)
        return self._predict_response(spec, result)

    def predict_sync(self, request: Any) -> Any:
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        spec = spec_from_proto(request.model_spec)
        result = self.service.predict(spec, self._decoder(request), list(request.output_filter), entrypoint="GRPC")
        return self._predict_response(spec, result)

    def _decoder(self, request: Any) -> Callable[[Any], dict]:
        inputs_proto = request.inputs

        def decode(_signature: Any) -> dict:
            arrays = {}
            for alias, proto in inputs_proto.items():
                try:
                    arrays[alias] = tensors.tensor_proto_to_ndarray(proto, self.limits)
                except ServingError as error:
                    raise invalid_argument(f"tensor parsing error: {alias}: {error.message}") from None
            return arrays

        return decode

    def _predict_response(self, spec: Any, result: Any) -> Any:
        response = predict_pb2.PredictResponse()
        fill_spec(response.model_spec, spec.name, result.id.version, result.signature_name)
        outputs_info = result.signature.outputs
        for alias, array in result.outputs.items():
            info = outputs_info.get(alias)
            tensors.ndarray_to_tensor_proto(
                array,
                dtype=info.dtype if info is not None else None,
                use_tensor_content=self.tensor_content_outputs,
                proto=response.outputs[alias],
            )
        return response

    # -- Classify / Regress / MultiInference -------------------------------------------

    async def Classify(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._run(context, self.classify_sync, request)

    def classify_sync(self, request: Any) -> Any:
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        spec = spec_from_proto(request.model_spec)
        result = self.service.classify(spec, self._examples(request.input), entrypoint="GRPC")
        response = classification_pb2.ClassificationResponse()
        fill_spec(response.model_spec, spec.name, result.id.version, result.signature_name)
        _fill_classifications(response.result, result.classes, result.scores)
        return response

    async def Regress(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._run(context, self.regress_sync, request)

    def regress_sync(self, request: Any) -> Any:
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        spec = spec_from_proto(request.model_spec)
        result = self.service.regress(spec, self._examples(request.input), entrypoint="GRPC")
        response = regression_pb2.RegressionResponse()
        fill_spec(response.model_spec, spec.name, result.id.version, result.signature_name)
        _fill_regressions(response.result, result.values)
        return response

    async def MultiInference(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._run(context, self.multi_inference_sync, request)

    def multi_inference_sync(self, request: Any) -> Any:
        tasks = [InferenceTask(spec_from_proto(task.model_spec), task.method_name) for task in request.tasks]
        results = self.service.multi_inference(tasks, self._examples(request.input), entrypoint="GRPC")
        response = inference_pb2.MultiInferenceResponse()
        for task, result in zip(tasks, results):
            item = response.results.add()
            fill_spec(item.model_spec, task.spec.name, result.id.version, result.signature_name)
            if hasattr(result, "values"):
                _fill_regressions(item.regression_result, result.values)
            else:
                _fill_classifications(item.classification_result, result.classes, result.scores)
        return response

    # -- GetModelMetadata ----------------------------------------------------------------

    async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._run(context, self.metadata_sync, request)

    def metadata_sync(self, request: Any) -> Any:
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        spec = spec_from_proto(request.model_spec)
        result = self.service.model_metadata(spec, list(request.metadata_field))
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, serialized in result.signature_defs.items():
            signature_map.signature_def[key].ParseFromString(serialized)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        fill_spec(response.model_spec, spec.name, result.id.version, None)
        response.metadata["signature_def"].Pack(signature_map)
        return response


def _fill_classifications(result_proto: Any, classes: Any, scores: Any) -> None:
    rows = len(classes) if classes is not None else len(scores)
    for i in range(rows):
        item = result_proto.classifications.add()
        width = classes.shape[1] if classes is not None else scores.shape[1]
        for j in range(width):
            cls = item.classes.add()
            if classes is not None:
                label = classes[i][j]
                cls.label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            if scores is not None:
                cls.score = float(scores[i][j])


def _fill_regressions(result_proto: Any, values: Any) -> None:
    for value in values.reshape(-1).tolist():
        result_proto.regressions.add().value = value


class ModelService:
    """Handlers of ``tensorflow.serving.ModelService``."""

    def __init__(self, service: ServingService, reload_config: ConfigReloader | None) -> None:
        self.service = service
        self.reload_config = reload_config

    async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Refused):
            await _abort(context, request.error)
        try:
            return self.status_sync(request)
        except ServingError as error:
            await _abort(context, error)

    def status_sync(self, request: Any) -> Any:
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        spec = request.model_spec
        version = spec.version.value if spec.WhichOneof("version_choice") == "version" else None
        states = self.service.model_status(spec.name, version)
        response = get_model_status_pb2.GetModelStatusResponse()
        for state in states:
            item = response.model_version_status.add()
            item.version = state.id.version
            item.state = int(state.state.value)
            item.status.SetInParent()  # TF Serving always writes it: "status {}" when OK
            if state.error is not None:
                item.status.error_code = int(state.error.code)
                item.status.error_message = state.error.message
        return response

    async def HandleReloadConfigRequest(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Refused):
            await _abort(context, request.error)
        try:
            return await asyncio.to_thread(self.reload_sync, request)
        except ServingError as error:
            await _abort(context, error)

    def reload_sync(self, request: Any) -> Any:
        """Replace the served model list; returns once the new config is in effect.

        Only a ``model_config_list`` is accepted (INVALID_ARGUMENT otherwise, TF Serving's
        text). A refused config (the reloader raises ServingError) raises it with its code
        and message, and the previous config keeps serving; a bug while applying is
        UNKNOWN. On success the response carries an OK status. Blocks: called on a worker
        thread by either front door.
        """
        response = model_management_pb2.ReloadConfigResponse()
        response.status.SetInParent()  # OK, written as TF Serving does ("status {}")
        try:
            if self.reload_config is None:
                raise ServingError(Code.UNIMPLEMENTED, "Config reload is not available in this server.")
            if request.config.WhichOneof("config") != "model_config_list":
                raise invalid_argument(
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                    "Only ModelConfigList is currently supported"
                )
            self.reload_config(request.config)
        except ServingError as error:
            log.error("HandleReloadConfigRequest refused: %s: %s", error.code.name, error.message)
            raise
        except Exception as error:  # a bug while applying: report it, keep serving
            log.exception("HandleReloadConfigRequest failed")
            raise ServingError(Code.UNKNOWN, f"{type(error).__name__}: {error}") from error
        return response


def request_too_large_message(size: int, limit: int) -> str:
    return (
        f"Request of {size} bytes is larger than the server's limit of {limit} bytes; "
        "raise it with --grpc_max_message_bytes."
    )


def checked_deserializer(
    from_string: Callable[[bytes], Any], limit: int, type_name: str, *, keep_size: bool = False
) -> Callable[[bytes], Any]:
    """Deserializer that refuses oversized or unparsable requests with a clear status.

    Beyond ``limit`` bytes (0: none) it yields RESOURCE_EXHAUSTED naming the flag (gRPC's
    own limit answers with a message that names no flag, so the transport limit is set
    to the maximum and the check happens here, before parsing); bytes that are not a
    ``type_name`` are the client's malformed input: INVALID_ARGUMENT. With
    ``keep_size`` the message comes wrapped in a ``_Received`` that keeps its size.
    """

    def deserialize(data: bytes) -> Any:
        if 0 < limit < len(data):
            return _Refused(ServingError(Code.RESOURCE_EXHAUSTED, request_too_large_message(len(data), limit)))
        try:
            message = from_string(data)
        except DecodeError:
            return _Refused(invalid_argument(f"Failed to parse the request as a {type_name}"))
        return _Received(message, len(data)) if keep_size else message

    return deserialize


PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"

# (service, method) -> (request class, response class): the RPCs both front doors serve.
METHODS: dict[tuple[str, str], tuple[Any, Any]] = {
    (PREDICTION_SERVICE, "Classify"): (classification_pb2.ClassificationRequest, classification_pb2.ClassificationResponse),
    (PREDICTION_SERVICE, "Regress"): (regression_pb2.RegressionRequest, regression_pb2.RegressionResponse),
    (PREDICTION_SERVICE, "Predict"): (predict_pb2.PredictRequest, predict_pb2.PredictResponse),
    (PREDICTION_SERVICE, "MultiInference"): (inference_pb2.MultiInferenceRequest, inference_pb2.MultiInferenceResponse),
    (PREDICTION_SERVICE, "GetModelMetadata"): (
        get_model_metadata_pb2.GetModelMetadataRequest,
        get_model_metadata_pb2.GetModelMetadataResponse,
    ),
    (MODEL_SERVICE, "GetModelStatus"): (get_model_status_pb2.GetModelStatusRequest, get_model_status_pb2.GetModelStatusResponse),
    (MODEL_SERVICE, "HandleReloadConfigRequest"): (
        model_management_pb2.ReloadConfigRequest,
        model_management_pb2.ReloadConfigResponse,
    ),
}


def method_handlers(
    behaviors: dict[tuple[str, str], Callable[..., Any]], *, max_message_bytes: int = 0
) -> list[grpc.GenericRpcHandler]:
    """Generic handlers serving ``METHODS`` with ``behaviors`` (async or sync functions).

    Built by hand to control deserialization (``checked_deserializer``); Predict requests
    arrive wrapped in ``_Received`` (their size decides where they are decoded).
    """
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for (service, method), (request_cls, response_cls) in METHODS.items():
        by_service.setdefault(service, {})[method] = grpc.unary_unary_rpc_method_handler(
            behaviors[(service, method)],
            request_deserializer=checked_deserializer(
                request_cls.FromString, max_message_bytes, request_cls.DESCRIPTOR.full_name, keep_size=method == "Predict"
            ),
            response_serializer=response_cls.SerializeToString,
        )
    return [grpc.method_handlers_generic_handler(service, methods) for service, methods in by_service.items()]


def generic_handlers(
    prediction: PredictionService, model: ModelService, *, max_message_bytes: int = 0
) -> list[grpc.GenericRpcHandler]:
    """The grpc.aio front door's handlers: every RPC is a coroutine on the event loop."""
    # The aio handlers carry the RPC names themselves.
    behaviors = {(svc, method): getattr(prediction if svc == PREDICTION_SERVICE else model, method) for svc, method in METHODS}
    return method_handlers(behaviors, max_message_bytes=max_message_bytes)
