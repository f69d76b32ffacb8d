"""A few lines of gRPC client plumbing shared by the example clients and the web app.

The examples talk to the server with servable's own generated copy of TF Serving's
protos (``servable._proto``), so a client needs numpy, protobuf and grpcio only, not the
1 GB TensorFlow wheel the official ``tensorflow-serving-api`` package depends on. The
messages are byte-for-byte TF Serving's, so the official client works the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from servable._proto.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from servable._proto.tensorflow_serving.apis import prediction_service_pb2_grpc

# 64 MB each way: a batch of images easily passes gRPC's 4 MB default.
CHANNEL_OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]

_NUMERIC = {
    np.dtype(np.float32): (types_pb2.DT_FLOAT, "float_val"),
    np.dtype(np.float64): (types_pb2.DT_DOUBLE, "double_val"),
    np.dtype(np.int32): (types_pb2.DT_INT32, "int_val"),
    np.dtype(np.int64): (types_pb2.DT_INT64, "int64_val"),
}
_FROM_ENUM = {enum: (dtype, field) for dtype, (enum, field) in _NUMERIC.items()}


def make_tensor_proto(values: Any) -> tensor_pb2.TensorProto:
    """numpy array (float32/64, int32/64, or bytes/str objects) -> TensorProto."""
    array = np.asarray(values)
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape])
    if array.dtype.kind in "OSU":
        flat = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]
        return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=flat)
    if array.dtype not in _NUMERIC:
        raise TypeError(f"unsupported dtype {array.dtype}")
    enum, _ = _NUMERIC[array.dtype]
    return tensor_pb2.TensorProto(dtype=enum, tensor_shape=shape,
                                  tensor_content=array.astype(array.dtype.newbyteorder("<")).tobytes())


def make_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """TensorProto -> numpy array (strings as an object array of bytes)."""
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if proto.dtype == types_pb2.DT_STRING:
        return np.array(list(proto.string_val), dtype=object).reshape(shape)
    if proto.dtype not in _FROM_ENUM:
        raise TypeError(f"unsupported DataType {proto.dtype}")
    dtype, field = _FROM_ENUM[proto.dtype]
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    values = np.array(getattr(proto, field), dtype=dtype)
    count = int(np.prod(shape)) if shape else 1
    if values.size == 1 and count != 1:  # a single value fills the whole tensor
        values = np.full(count, values[0], dtype=dtype)
    return values.reshape(shape)


def prediction_stub(channel: Any) -> prediction_service_pb2_grpc.PredictionServiceStub:
    """A PredictionService stub over a ``grpc`` or ``grpc.aio`` channel."""
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)
