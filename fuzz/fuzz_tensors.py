"""Fuzz the TensorProto decoder with client bytes (atheris, or a plain random loop).

    .venv/bin/python fuzz/fuzz_tensors.py -atheris_runs=100000 [CORPUS_DIR]  # coverage-guided
    .venv/bin/python fuzz/fuzz_tensors.py --runs 100000 [--seed 1]         # no atheris: random loop

Each input is parsed as a ``tensorflow.TensorProto`` (unparsable bytes are the gRPC
layer's business and are skipped) and decoded under tight ``InputLimits``. Anything but
an array obeying the limits or ``ServingError(INVALID_ARGUMENT)`` is a finding; arrays are
also re-encoded both ways and must decode to the same bytes.
"""

from __future__ import annotations

import argparse
import pathlib
import random
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

try:
    import atheris
except ImportError:  # pragma: no cover - depends on the environment
    atheris = None

import numpy as np
from google.protobuf.message import DecodeError

if atheris is not None:
    with atheris.instrument_imports(include=["servable"]):
        from servable._proto.tensorflow.core.framework import tensor_pb2, types_pb2
        from servable.core.status import Code, ServingError
        from servable.limits import InputLimits
        from servable.tf.tensors import ndarray_to_tensor_proto, numpy_dtype, tensor_proto_to_ndarray
else:
    from servable._proto.tensorflow.core.framework import tensor_pb2, types_pb2
    from servable.core.status import Code, ServingError
    from servable.limits import InputLimits
    from servable.tf.tensors import ndarray_to_tensor_proto, numpy_dtype, tensor_proto_to_ndarray

LIMITS = InputLimits(max_tensor_elements=1 << 16, max_tensor_bytes=1 << 20, max_string_bytes=1 << 20)


def test_one_input(data: bytes) -> None:
    """The fuzz target: raises (a finding) only when the decoder breaks its contract."""
    try:
        proto = tensor_pb2.TensorProto.FromString(data)
    except DecodeError:
        return
    try:
        array = tensor_proto_to_ndarray(proto, LIMITS)
    except ServingError as error:
        if error.code != Code.INVALID_ARGUMENT or not error.message:
            raise
        return
    if not isinstance(array, np.ndarray) or array.dtype != numpy_dtype(proto.dtype):
        raise AssertionError(f"bad array {type(array)} for dtype {proto.dtype}")
    if array.shape != tuple(dim.size for dim in proto.tensor_shape.dim):
        raise AssertionError(f"shape {array.shape} does not match the proto")
    if array.size > LIMITS.max_tensor_elements or array.nbytes > LIMITS.max_tensor_bytes:
        raise AssertionError(f"limits exceeded: {array.size} elements, {array.nbytes} bytes")
    for use_tensor_content in (False, True):
        encoded = ndarray_to_tensor_proto(array, use_tensor_content=use_tensor_content)
        again = tensor_proto_to_ndarray(tensor_pb2.TensorProto.FromString(encoded.SerializeToString()), LIMITS)
        if array.dtype == object:
            same = again.ravel().tolist() == array.ravel().tolist()
        else:
            same = again.tobytes() == array.tobytes()
        if not same or again.shape != array.shape:
            raise AssertionError("re-encoded tensor decodes differently")


def _seeds() -> list[bytes]:
    """Valid protos of every dtype and encoding, to mutate from."""
    seeds = []
    samples = {
        types_pb2.DT_FLOAT: np.arange(6, dtype=np.float32).reshape(2, 3),
        types_pb2.DT_INT32: np.array([-1, 2, 300], np.int32),
        types_pb2.DT_INT64: np.array([[2**40]], np.int64),
        types_pb2.DT_UINT8: np.array([0, 255], np.uint8),
        types_pb2.DT_BOOL: np.array([True, False]),
        types_pb2.DT_HALF: np.array([1.5], np.float16),
        types_pb2.DT_COMPLEX64: np.array([1 + 2j], np.complex64),
        types_pb2.DT_UINT64: np.array([2**64 - 1], np.uint64),
        types_pb2.DT_STRING: np.array([b"ab", b"", b"xyz"], dtype=object),
    }
    for array in samples.values():
        for use_tensor_content in (False, True):
            seeds.append(ndarray_to_tensor_proto(array, use_tensor_content=use_tensor_content).SerializeToString())
    return seeds


def _random_inputs(rng: random.Random, seeds: list[bytes]):
    while True:
        if rng.random() < 0.2:
            yield rng.randbytes(rng.randint(0, 64))
            continue
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            choice = rng.random()
            if choice < 0.5 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif choice < 0.7:
                data[rng.randint(0, len(data)) : rng.randint(0, len(data))] = rng.randbytes(rng.randint(0, 8))
            elif choice < 0.85:
                data += rng.choice(seeds)
            elif data:
                del data[rng.randrange(len(data))]
        yield bytes(data)


def random_loop(runs: int, seed: int) -> None:
    rng = random.Random(seed)
    inputs = _random_inputs(rng, _seeds())
    for index in range(runs):
        data = next(inputs)
        try:
            test_one_input(data)
        except Exception:
            print(f"finding at run {index}: {data!r}", file=sys.stderr)
            raise
    print(f"{runs} random inputs, no findings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, help="run the plain random loop this many times (no atheris needed)")
    parser.add_argument("--seed", type=int, default=0)
    args, rest = parser.parse_known_args()
    if args.runs is not None or atheris is None:
        random_loop(args.runs if args.runs is not None else 10000, args.seed)
        return
    if not any(not arg.startswith("-") for arg in rest):
        # No corpus directory given: one reused under the temp dir, seeded with valid
        # protos of every dtype (libFuzzer adds what it finds there).
        corpus = pathlib.Path(tempfile.gettempdir(), "servable_fuzz_tensors_corpus")
        corpus.mkdir(exist_ok=True)
        for index, seed in enumerate(_seeds()):
            (corpus / f"seed{index}").write_bytes(seed)
        rest.append(str(corpus))
    atheris.Setup([sys.argv[0], *rest], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
