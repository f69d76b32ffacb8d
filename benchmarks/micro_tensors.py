"""Micro-benchmark: µs per TensorProto <-> ndarray conversion of a 32x784 float32 tensor.

Run: .venv/bin/python benchmarks/micro_tensors.py [--repeat N]
Not a test; prints one line per case (best of several timed loops).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import timeit

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from servable.tf.tensors import ndarray_to_tensor_proto, tensor_proto_to_ndarray


def _best_us(fn, number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=200, help="calls per timed loop")
    parser.add_argument("--repeat", type=int, default=5, help="timed loops (best is reported)")
    args = parser.parse_args()

    array = np.random.default_rng(0).random((32, 784), dtype=np.float32)
    as_values = ndarray_to_tensor_proto(array)
    as_content = ndarray_to_tensor_proto(array, use_tensor_content=True)
    ints = (array * 1000).astype(np.int64)
    strings = np.array([b"x" * 16] * 32 * 784, dtype=object).reshape(32, 784)
    cases = {
        "encode float_val": lambda: ndarray_to_tensor_proto(array),
        "encode float_val (extend(tolist()) baseline)": lambda: type(as_values)().float_val.extend(array.ravel().tolist()),
        "encode tensor_content": lambda: ndarray_to_tensor_proto(array, use_tensor_content=True),
        "decode float_val": lambda: tensor_proto_to_ndarray(as_values),
        "decode tensor_content": lambda: tensor_proto_to_ndarray(as_content),
        "encode int64_val": lambda: ndarray_to_tensor_proto(ints),
        "encode string_val (16-byte strings)": lambda: ndarray_to_tensor_proto(strings),
    }
    print(f"32x784 tensors, best of {args.repeat} x {args.number} calls")
    for name, fn in cases.items():
        print(f"{name:48s} {_best_us(fn, args.number, args.repeat):10.1f} µs")


if __name__ == "__main__":
    main()
