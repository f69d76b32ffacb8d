"""Write the .proto sources in ``protos/`` from the descriptors of installed packages.

Maintainer tool, not used at run time. The official wire contract lives in the
serialized ``FileDescriptorProto``s embedded in the ``tensorflow-serving-api`` and
``tensorflow`` wheels; this script prints them back as .proto text so that
``protos/`` holds exactly the messages (names, numbers, types, json names) that
existing clients speak. Run it in an environment holding both packages::

    python tools/extract_protos.py protos/

Files that those wheels do not ship (monitoring, SSL and batching configs) are
written by hand in ``protos/`` and are not touched here.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Iterable

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor

ROOT_MODULES = [
    "tensorflow_serving.apis.prediction_service_pb2",
    "tensorflow_serving.apis.model_service_pb2",
    "tensorflow_serving.apis.prediction_log_pb2",
    "tensorflow_serving.apis.session_service_pb2",
    "tensorflow_serving.config.model_server_config_pb2",
    "tensorflow_serving.config.platform_config_pb2",
]

_TYPE_NAMES = {
    descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE: "double",
    descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT: "float",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64: "uint64",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: "int32",
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED64: "fixed64",
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED32: "fixed32",
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: "bool",
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "string",
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "bytes",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT32: "uint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED32: "sfixed32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED64: "sfixed64",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT32: "sint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT64: "sint64",
}


def _camel(name: str) -> str:
    parts = name.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def _field_options(field: descriptor_pb2.FieldDescriptorProto, syntax: str) -> str:
    opts = []
    if field.HasField("json_name") and field.json_name != _camel(field.name):
        opts.append(f'json_name = "{field.json_name}"')
    if field.options.deprecated:
        opts.append("deprecated = true")
    if field.options.HasField("packed"):
        opts.append(f"packed = {'true' if field.options.packed else 'false'}")
    if field.options.lazy:
        opts.append("lazy = true")
    if field.HasField("default_value") and syntax == "proto2":
        value = field.default_value
        if field.type in (field.TYPE_STRING, field.TYPE_BYTES):
            value = '"' + value + '"'
        opts.append(f"default = {value}")
    return f" [{', '.join(opts)}]" if opts else ""


class _Printer:
    def __init__(self, fd: descriptor_pb2.FileDescriptorProto) -> None:
        self.fd = fd
        self.syntax = fd.syntax or "proto2"
        self.lines: list[str] = []

    def emit(self, depth: int, text: str) -> None:
        self.lines.append("  " * depth + text if text else "")

    def type_of(self, field: descriptor_pb2.FieldDescriptorProto, maps: dict) -> str:
        if field.type_name:
            if field.type_name in maps:
                key, value = maps[field.type_name]
                return f"map<{self.type_of(key, maps)}, {self.type_of(value, maps)}>"
            return field.type_name  # fully qualified, leading dot
        return _TYPE_NAMES[field.type]

    def message(self, msg: descriptor_pb2.DescriptorProto, prefix: str, depth: int) -> None:
        full = f"{prefix}.{msg.name}"
        maps = {}
        for nested in msg.nested_type:
            if nested.options.map_entry:
                maps[f"{full}.{nested.name}"] = (nested.field[0], nested.field[1])
        self.emit(depth, f"message {msg.name} {{")
        if msg.options.deprecated:
            self.emit(depth + 1, "option deprecated = true;")
        for enum in msg.enum_type:
            self.enum(enum, depth + 1)
        for nested in msg.nested_type:
            if not nested.options.map_entry:
                self.message(nested, full, depth + 1)
        real_oneofs = {}
        for field in msg.field:
            if field.HasField("oneof_index") and not field.proto3_optional:
                real_oneofs.setdefault(field.oneof_index, []).append(field)
        printed_oneofs = set()
        all_maps = {**maps}
        for field in msg.field:
            if field.HasField("oneof_index") and not field.proto3_optional:
                index = field.oneof_index
                if index in printed_oneofs:
                    continue
                printed_oneofs.add(index)
                self.emit(depth + 1, f"oneof {msg.oneof_decl[index].name} {{")
                for member in real_oneofs[index]:
                    self.field(member, all_maps, depth + 2, in_oneof=True)
                self.emit(depth + 1, "}")
            else:
                self.field(field, all_maps, depth + 1, in_oneof=False)
        for rng in msg.reserved_range:
            end = rng.end - 1
            self.emit(depth + 1, f"reserved {rng.start}{'' if end == rng.start else f' to {end}'};")
        for name in msg.reserved_name:
            self.emit(depth + 1, f'reserved "{name}";')
        for rng in msg.extension_range:
            self.emit(depth + 1, f"extensions {rng.start} to {rng.end - 1};")
        self.emit(depth, "}")

    def field(self, field, maps, depth: int, in_oneof: bool) -> None:
        type_text = self.type_of(field, maps)
        label = ""
        if not type_text.startswith("map<") and not in_oneof:
            if field.label == field.LABEL_REPEATED:
                label = "repeated "
            elif field.proto3_optional or (self.syntax == "proto2" and field.label == field.LABEL_OPTIONAL):
                label = "optional "
            elif field.label == field.LABEL_REQUIRED:
                label = "required "
        options = _field_options(field, self.syntax)
        self.emit(depth, f"{label}{type_text} {field.name} = {field.number}{options};")

    def enum(self, enum: descriptor_pb2.EnumDescriptorProto, depth: int) -> None:
        self.emit(depth, f"enum {enum.name} {{")
        if enum.options.allow_alias:
            self.emit(depth + 1, "option allow_alias = true;")
        for value in enum.value:
            deprecated = " [deprecated = true]" if value.options.deprecated else ""
            self.emit(depth + 1, f"{value.name} = {value.number}{deprecated};")
        for rng in enum.reserved_range:
            self.emit(depth + 1, f"reserved {rng.start}{'' if rng.end == rng.start else f' to {rng.end}'};")
        self.emit(depth, "}")

    def render(self) -> str:
        fd = self.fd
        self.emit(0, "// Generated by tools/extract_protos.py from the installed official descriptors.")
        self.emit(0, f'syntax = "{self.syntax}";')
        self.emit(0, "")
        if fd.package:
            self.emit(0, f"package {fd.package};")
            self.emit(0, "")
        public = set(fd.public_dependency)
        for index, dep in enumerate(fd.dependency):
            self.emit(0, f'import {"public " if index in public else ""}"{dep}";')
        if fd.dependency:
            self.emit(0, "")
        if fd.options.cc_enable_arenas:
            self.emit(0, "option cc_enable_arenas = true;")
        if fd.options.HasField("java_package"):
            self.emit(0, f'option java_package = "{fd.options.java_package}";')
        if fd.options.HasField("go_package"):
            self.emit(0, f'option go_package = "{fd.options.go_package}";')
        self.emit(0, "")
        prefix = f".{fd.package}" if fd.package else ""
        for enum in fd.enum_type:
            self.enum(enum, 0)
            self.emit(0, "")
        for msg in fd.message_type:
            self.message(msg, prefix, 0)
            self.emit(0, "")
        for service in fd.service:
            self.emit(0, f"service {service.name} {{")
            for method in service.method:
                cs = "stream " if method.client_streaming else ""
                ss = "stream " if method.server_streaming else ""
                self.emit(
                    1,
                    f"rpc {method.name}({cs}{method.input_type}) returns ({ss}{method.output_type});",
                )
            self.emit(0, "}")
            self.emit(0, "")
        return "\n".join(self.lines).rstrip() + "\n"


def _walk(files: Iterable[FileDescriptor]) -> dict[str, FileDescriptor]:
    seen: dict[str, FileDescriptor] = {}
    stack = list(files)
    while stack:
        fd = stack.pop()
        if fd.name in seen:
            continue
        seen[fd.name] = fd
        stack.extend(fd.dependencies)
    return seen


def main(out_dir: str) -> None:
    roots = [importlib.import_module(name).DESCRIPTOR for name in ROOT_MODULES]
    for name, fd in sorted(_walk(roots).items()):
        if name.startswith("google/protobuf/"):
            continue  # well-known types ship with protobuf and grpcio-tools
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        path = os.path.join(out_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(_Printer(proto).render())
        print(path)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "protos")
