"""Generated protobuf modules, registered in a private descriptor pool.

See tools/gen_protos.py for why the pool is private. Import messages from the
submodules, e.g. ``from servable._proto.tensorflow_serving.apis import predict_pb2``.
"""

from google.protobuf import any_pb2, descriptor_pool, wrappers_pb2

POOL = descriptor_pool.DescriptorPool()
POOL.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)
POOL.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
