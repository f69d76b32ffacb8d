"""Compile ``protos/`` into ``servable/_proto/`` with grpcio-tools.

Run after editing anything in ``protos/`` (``make protos``); the output is committed so
that ``pip install .`` needs no code generation step.

Why the rewriting: the server imports TensorFlow, and users import the official
``tensorflow-serving-api`` in the same process. Both register ``tensorflow/...`` and
``tensorflow_serving/...`` files in protobuf's default descriptor pool, which refuses a
second, non byte-identical copy of a file and the same symbol from two file names.
So our generated modules register into a private pool (``servable._proto.POOL``) and
import each other under ``servable._proto``; they never touch the default pool, and
their wire format is the official one (``tests/test_protos.py`` checks field by field).
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import sys
import tempfile

from grpc_tools import protoc

import grpc_tools

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "protos"
OUT = ROOT / "servable" / "_proto"
PREFIXES = ("tensorflow_serving", "tensorflow", "xla")

INIT = '''"""Generated protobuf modules, registered in a private descriptor pool.

See tools/gen_protos.py for why the pool is private. Import messages from the
submodules, e.g. ``from servable._proto.tensorflow_serving.apis import predict_pb2``.
"""

from google.protobuf import any_pb2, descriptor_pool, wrappers_pb2

POOL = descriptor_pool.DescriptorPool()
POOL.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)
POOL.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
'''


def _rewrite(text: str) -> str:
    for prefix in PREFIXES:
        text = re.sub(rf"^from {prefix}(\.[\w.]+)? import", lambda m: f"from servable._proto.{prefix}{m.group(1) or ''} import", text, flags=re.M)
    text = text.replace(
        "from google.protobuf import descriptor_pool as _descriptor_pool",
        "from servable._proto import POOL as _POOL",
    )
    text = text.replace("_descriptor_pool.Default().AddSerializedFile(", "_POOL.AddSerializedFile(")
    return text


def main() -> None:
    protos = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.proto"))
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{SRC}", f"-I{include}", f"--python_out={tmp}", f"--grpc_python_out={tmp}", *protos]
        if protoc.main(args) != 0:
            sys.exit("protoc failed")
        if OUT.exists():
            shutil.rmtree(OUT)
        OUT.mkdir(parents=True)
        (OUT / "__init__.py").write_text(INIT)
        for path in sorted(pathlib.Path(tmp).rglob("*.py")):
            rel = path.relative_to(tmp)
            text = path.read_text()
            if rel.name.endswith("_pb2_grpc.py") and "class " not in text:
                continue  # files without services produce empty stubs
            target = OUT / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            for parent in target.parents:
                if parent == OUT.parent:
                    break
                (parent / "__init__.py").touch(exist_ok=True)
            target.write_text(_rewrite(text))
    print(f"generated {len(protos)} protos into {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
