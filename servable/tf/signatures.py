"""Signatures of a SavedModel, read from ``saved_model.pb`` with servable's own protos.

The loader calls ``read_signatures(export_dir, tags)`` once per version, before TensorFlow
loads the model, so a missing tag set fails fast with TF Serving's message. The result
feeds two consumers: ``SignatureInfo`` (typed view the request path validates inputs
against) and the serialized ``SignatureDef`` bytes exactly as stored on disk (what
GetModelMetadata returns, method names included).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

from servable._proto.tensorflow.core.protobuf import meta_graph_pb2
from servable.core.status import Code, ServingError

SAVED_MODEL_FILENAME_PB = "saved_model.pb"
SAVED_MODEL_FILENAME_PBTXT = "saved_model.pbtxt"
INIT_OP_SIGNATURE_KEY = "__saved_model_init_op"

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

# tensorflow::DataTypeString names, used in TF-compatible error messages.
_DTYPE_NAMES = {
    0: "invalid", 1: "float", 2: "double", 3: "int32", 4: "uint8", 5: "int16", 6: "int8",
    7: "string", 8: "complex64", 9: "int64", 10: "bool", 11: "qint8", 12: "quint8",
    13: "qint32", 14: "bfloat16", 15: "qint16", 16: "quint16", 17: "uint16",
    18: "complex128", 19: "half", 20: "resource", 21: "variant", 22: "uint32", 23: "uint64",
}


def dtype_name(dtype: int) -> str:
    """TensorFlow's short name for a ``DataType`` enum value ("float", "string", ...)."""
    return _DTYPE_NAMES.get(dtype, f"unknown dtype enum ({dtype})")


@dataclass(frozen=True)
class TensorInfo:
    """One signature input or output: graph tensor name, ``DataType`` enum, shape.

    ``shape`` is None for unknown rank; ``-1`` marks an unknown dimension.
    """

    name: str
    dtype: int
    shape: tuple[int, ...] | None


@dataclass(frozen=True)
class SignatureInfo:
    """A ``SignatureDef`` reduced to what the request path needs; aliases are the keys."""

    key: str
    method_name: str
    inputs: dict[str, TensorInfo] = field(default_factory=dict)
    outputs: dict[str, TensorInfo] = field(default_factory=dict)


def _tensor_info(proto: meta_graph_pb2.TensorInfo) -> TensorInfo:
    shape: tuple[int, ...] | None
    if not proto.HasField("tensor_shape") or proto.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = tuple(int(dim.size) for dim in proto.tensor_shape.dim)
    encoding = proto.WhichOneof("encoding")
    name = proto.name if encoding == "name" else ""
    return TensorInfo(name=name, dtype=int(proto.dtype), shape=shape)


def signature_info(key: str, proto: meta_graph_pb2.SignatureDef) -> SignatureInfo:
    """Typed view of one ``SignatureDef``."""
    return SignatureInfo(
        key=key,
        method_name=proto.method_name,
        inputs={alias: _tensor_info(info) for alias, info in sorted(proto.inputs.items())},
        outputs={alias: _tensor_info(info) for alias, info in sorted(proto.outputs.items())},
    )


# ---------------------------------------------------------------------- saved_model.pb

def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _meta_graphs_from_saved_model(data: bytes) -> list[meta_graph_pb2.MetaGraphDef]:
    """Decode ``tensorflow.SavedModel`` (field 2: repeated MetaGraphDef).

    servable's generated protos do not include saved_model.proto (its one message is a
    wrapper), so the outer message is walked by hand; each MetaGraphDef is parsed with
    the generated class.
    """
    try:  # prefer the generated module if a later proto set includes it
        from servable._proto.tensorflow.core.protobuf import saved_model_pb2  # type: ignore[attr-defined]

        return list(saved_model_pb2.SavedModel.FromString(data).meta_graphs)
    except ImportError:
        pass
    graphs: list[meta_graph_pb2.MetaGraphDef] = []
    pos = 0
    while pos < len(data):
        tag, pos = _read_varint(data, pos)
        field_number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            _, pos = _read_varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated length-delimited field")
            if field_number == 2:
                graphs.append(meta_graph_pb2.MetaGraphDef.FromString(data[pos : pos + length]))
            pos += length
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
    return graphs


def _tags_string(tags: Sequence[str]) -> str:
    return "{ " + " ".join(tags) + " }"


def find_meta_graph(export_dir: str, tags: Sequence[str]) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef of ``export_dir`` whose tag set equals ``tags`` (order ignored).

    Raises ``ServingError``: NOT_FOUND when no saved_model.pb exists or no tag set
    matches (TF's loader messages), DATA_LOSS when the file does not parse.
    """
    pb_path = os.path.join(export_dir, SAVED_MODEL_FILENAME_PB)
    if not os.path.isfile(pb_path):
        if os.path.isfile(os.path.join(export_dir, SAVED_MODEL_FILENAME_PBTXT)):
            raise ServingError(Code.UNIMPLEMENTED, f"saved_model.pbtxt is not supported, export saved_model.pb: {export_dir}")
        raise ServingError(
            Code.NOT_FOUND,
            f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {export_dir}",
        )
    with open(pb_path, "rb") as handle:
        data = handle.read()
    try:
        graphs = _meta_graphs_from_saved_model(data)
    except Exception as error:  # protobuf DecodeError or our ValueError
        raise ServingError(Code.DATA_LOSS, f"Could not parse SavedModel proto at {pb_path}: {error}") from None
    wanted = set(tags)
    for graph in graphs:
        if set(graph.meta_info_def.tags) == wanted:
            return graph
    raise ServingError(
        Code.NOT_FOUND,
        f"Could not find meta graph def matching supplied tags: {_tags_string(tags)}. "
        "To inspect available tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli`",
    )


@dataclass(frozen=True)
class ModelSignatures:
    """Everything ``read_signatures`` found: typed signatures and their stored bytes."""

    infos: dict[str, SignatureInfo]
    serialized: dict[str, bytes]


def read_signatures(export_dir: str, tags: Sequence[str] = ("serve",)) -> ModelSignatures:
    """Signatures of the tag-matched MetaGraphDef of ``export_dir``.

    ``infos`` leaves out ``__saved_model_init_op`` (not callable); ``serialized`` keeps
    every stored SignatureDef, as TF Serving's metadata does.
    """
    graph = find_meta_graph(export_dir, tags)
    infos: dict[str, SignatureInfo] = {}
    serialized: dict[str, bytes] = {}
    for key in sorted(graph.signature_def):
        proto = graph.signature_def[key]
        serialized[key] = proto.SerializeToString(deterministic=True)
        if key != INIT_OP_SIGNATURE_KEY:
            infos[key] = signature_info(key, proto)
    return ModelSignatures(infos=infos, serialized=serialized)
