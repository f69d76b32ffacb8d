"""The transport floor: a bare grpc.aio PredictionService whose Predict echoes its inputs.

``python benchmarks/peers/echo_server.py PORT``. It parses the PredictRequest and builds a
PredictResponse with the official ``tensorflow_serving.apis`` stubs, so it pays exactly the
gRPC and protobuf cost a Python model server cannot avoid, and nothing else. Prints
``LISTENING <port>`` once it serves.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import grpc  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402


class EchoPrediction(prediction_service_pb2_grpc.PredictionServiceServicer):
    async def Predict(self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext) -> predict_pb2.PredictResponse:
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = 1
        for name, tensor in request.inputs.items():
            response.outputs[name].CopyFrom(tensor)
        return response


async def serve(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 1 << 30), ("grpc.max_send_message_length", 1 << 30)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(EchoPrediction(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"LISTENING {port}", flush=True)
    await stop.wait()
    await server.stop(0.5)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
