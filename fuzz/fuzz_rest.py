"""Fuzz the REST JSON decoders, the tf.Example path and URL routing with client bytes.

    .venv/bin/python fuzz/fuzz_rest.py -atheris_runs=100000 [CORPUS_DIR]   # coverage-guided (atheris)
    .venv/bin/python fuzz/fuzz_rest.py --runs 100000 [--seed 1]          # no atheris: mutation loop

Each input drives, in-process and without a server: ``json_codec.parse_predict_request``
+ ``decode_predict_inputs`` against several signatures (float, int, string, bool,
multi-input), ``parse_examples_request`` (classify/regress bodies, ``tf.Example``
building, context merging) and the REST router (``servable.rest.app._route``) on a URL
made from the same bytes. The contract: either a result that obeys the limits, or
``ServingError`` with a client-fault code (INVALID_ARGUMENT, RESOURCE_EXHAUSTED,
FAILED_PRECONDITION, NOT_FOUND) and a non-empty message. Anything else is a finding.

The plain loop mutates a seed corpus of valid documents (byte flips, splices, deep
nesting, huge numbers) and prints a summary: cases tried, findings, RSS at start/end.
"""

from __future__ import annotations

import argparse
import base64
import json
import pathlib
import random
import resource
import sys
import tempfile
import time
import traceback

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

try:
    import atheris
except ImportError:  # pragma: no cover - depends on the environment
    atheris = None

import numpy as np

# Instrument only for a coverage-guided run: atheris' comparison tracing keeps copies of
# compared bytes, which would show up as RSS growth in the plain loop's memory report.
INSTRUMENT = atheris is not None and not any(arg.startswith("--runs") for arg in sys.argv)

if INSTRUMENT:
    with atheris.instrument_imports(include=["servable"]):
        from servable.core.status import Code, ServingError
        from servable.limits import InputLimits
        from servable.rest import json_codec
        from servable.rest.app import _route
        from servable.rest.json_tensor import JsonLimits
        from servable.tf.signatures import SignatureInfo, TensorInfo
else:
    from servable.core.status import Code, ServingError
    from servable.limits import InputLimits
    from servable.rest import json_codec
    from servable.rest.app import _route
    from servable.rest.json_tensor import JsonLimits
    from servable.tf.signatures import SignatureInfo, TensorInfo

LIMITS = JsonLimits.from_input_limits(InputLimits(max_string_bytes=1 << 16, max_examples=256, max_json_depth=16))
CLIENT_CODES = {Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED, Code.FAILED_PRECONDITION, Code.NOT_FOUND}
MAX_ELEMENTS = 1 << 20  # a decoded tensor can never hold more elements than the body has bytes


def _signature(**inputs: int) -> SignatureInfo:
    tensors = {alias: TensorInfo(f"{alias}:0", dtype, None) for alias, dtype in inputs.items()}
    return SignatureInfo("serving_default", "tensorflow/serving/predict", tensors, {"y": TensorInfo("y:0", 1, None)})


SIGNATURES = [
    _signature(x=1),  # float
    _signature(x=9),  # int64
    _signature(x=3),  # int32
    _signature(x=7),  # string
    _signature(x=10),  # bool
    _signature(x=2),  # double
    _signature(x=4),  # uint8
    _signature(a=1, b=7, c=9),  # several inputs
]


def _check_arrays(arrays: dict, body: bytes) -> None:
    for name, array in arrays.items():
        if not isinstance(array, np.ndarray):
            raise AssertionError(f"input {name} decoded to {type(array).__name__}, not ndarray")
        if array.size > max(len(body), 1) * 4 and array.size > MAX_ELEMENTS:
            raise AssertionError(f"input {name} decoded to {array.size} elements from {len(body)} bytes")


def _expect_client_error(error: ServingError) -> None:
    if error.code not in CLIENT_CODES or not error.message:
        raise AssertionError(f"server-fault error for client bytes: {error.code.name}: {error.message!r}")


def test_one_input(data: bytes) -> None:
    """The fuzz target: raises (a finding) only when a decoder breaks its contract."""
    selector = data[0] if data else 0
    body = data[1:]
    try:
        parsed = json_codec.parse_predict_request(body)
        signature = SIGNATURES[selector % len(SIGNATURES)]
        arrays = json_codec.decode_predict_inputs(parsed, signature, LIMITS)
        _check_arrays(arrays, body)
    except ServingError as error:
        _expect_client_error(error)
    try:
        request = json_codec.parse_examples_request(body, LIMITS)
        if len(request.examples) > LIMITS.max_examples:
            raise AssertionError(f"{len(request.examples)} examples passed a limit of {LIMITS.max_examples}")
    except ServingError as error:
        _expect_client_error(error)
    path = "/" + body[:200].decode("latin-1")
    for method in ("GET", "POST"):
        try:
            _route(method, path)
        except ServingError as error:
            _expect_client_error(error)


# -- the plain mutation loop ------------------------------------------------------------------

SEEDS: list[bytes] = [
    b'{"instances": [1.0, 2.0, 5.0]}',
    b'{"instances": [[1, 2], [3, 4]], "signature_name": "serving_default"}',
    b'{"inputs": {"a": [1.0], "b": ["s"], "c": [3]}}',
    b'{"instances": [{"a": 1.0, "b": {"b64": "aGVsbG8="}, "c": 1}]}',
    b'{"inputs": [[true, false], [false, true]]}',
    b'{"instances": [{"b64": "AAAA"}, {"b64": "////"}]}',
    b'{"examples": [{"x": [1.0, 2.0], "s": "text", "i": 3}], "context": {"k": {"b64": "YQ=="}}}',
    b'{"signature_name": "regress_x_to_y", "examples": [{"x": 1.5}, {"x": [2, 3]}]}',
    b'{"inputs": NaN}',
    b'{"instances": [1e400, -Infinity, 18446744073709551616]}',
    b"v1/models/m/versions/3:predict",
    b"v1/models/m/labels/stable/metadata",
]


def _random_json(rng: random.Random, depth: int = 0) -> object:
    choice = rng.randrange(9 if depth < 6 else 5)
    if choice == 0:
        return rng.choice([None, True, False])
    if choice == 1:
        return rng.choice([0, -1, 2**31, 2**63, 2**64, -(2**63) - 1, rng.randrange(-1000, 1000)])
    if choice == 2:
        return rng.choice([0.5, -0.0, 1e38, 3.5e38, 1e308, rng.random()])
    if choice == 3:
        return "".join(rng.choice("ab\u00e9\u4e2d\x00\"\\") for _ in range(rng.randrange(6)))
    if choice == 4:
        return {"b64": base64.b64encode(rng.randbytes(rng.randrange(8))).decode()[: rng.randrange(12)]}
    if choice in (5, 6):
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["instances", "inputs", "examples", "context", "signature_name", "a", "b", "c", "x", "b64"]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def _mutate(rng: random.Random, corpus: list[bytes]) -> bytes:
    strategy = rng.randrange(7)
    if strategy == 0:
        return bytes([rng.randrange(256)]) + json.dumps(_random_json(rng)).encode()
    if strategy == 1:
        doc = {rng.choice(["instances", "inputs", "examples"]): _random_json(rng)}
        if rng.random() < 0.3:
            doc["signature_name"] = _random_json(rng)
        return bytes([rng.randrange(256)]) + json.dumps(doc).encode()
    if strategy == 2:
        depth = rng.choice([15, 16, 17, 64, 65, 1000, 20000])
        opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
        key = rng.choice(["instances", "inputs", "examples"])
        return bytes([rng.randrange(256)]) + f'{{"{key}": {opener * depth}1{closer * depth}}}'.encode()
    data = bytearray(rng.choice(corpus))
    if strategy == 3 and data:
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif strategy == 4 and data:
        other = rng.choice(corpus)
        cut = rng.randrange(len(data))
        data = data[:cut] + other[rng.randrange(len(other) or 1):]
    elif strategy == 5 and data:
        cut = rng.randrange(len(data))
        del data[cut: cut + rng.randrange(1, 8)]
    else:
        cut = rng.randrange(len(data) + 1)
        data[cut:cut] = rng.choice([b"[", b"]", b"{", b"}", b",", b'"', b"1e999", b"-", b'{"b64":"', b"null", b"\xff"])
    return bytes([rng.randrange(256)]) + bytes(data)


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_loop(runs: int, seed: int, seconds: float | None = None) -> int:
    """The plain loop; returns the number of findings (prints each, then a summary)."""
    rng = random.Random(seed)
    corpus = [bytes([i]) + s for i, s in enumerate(SEEDS)]
    findings = 0
    rss_start = _rss_mb()
    started = time.monotonic()
    tried = 0
    checkpoints: list[float] = []
    for tried in range(1, runs + 1):
        data = _mutate(rng, corpus) if tried > len(corpus) else corpus[tried - 1]
        try:
            test_one_input(data)
        except Exception:  # a finding: keep going, report them all
            findings += 1
            if findings <= 20:
                print(f"FINDING on input {data[:300]!r}:\n{traceback.format_exc()}", file=sys.stderr)
        else:
            if rng.random() < 0.02 and len(corpus) < 2000 and len(data) < 2048:
                corpus.append(data)
        if tried % max(runs // 10, 1) == 0:
            checkpoints.append(round(_rss_mb(), 1))
        if seconds is not None and time.monotonic() - started > seconds:
            break
    elapsed = time.monotonic() - started
    print(
        f"fuzz_rest: cases={tried} findings={findings} seconds={elapsed:.1f} "
        f"rate={tried / max(elapsed, 1e-9):.0f}/s rss_start_mb={rss_start:.1f} rss_end_mb={_rss_mb():.1f} "
        f"rss_every_10pct_mb={checkpoints}"
    )
    return findings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, help="run the plain mutation loop this many times (no atheris needed)")
    parser.add_argument("--seconds", type=float, help="stop the plain loop after this long")
    parser.add_argument("--seed", type=int, default=0)
    args, rest = parser.parse_known_args()
    if args.runs is not None or not INSTRUMENT:
        sys.exit(1 if run_loop(args.runs or 20000, args.seed, args.seconds) else 0)
    if not any(not arg.startswith("-") for arg in rest):  # no corpus dir given: start from the seeds
        corpus_dir = tempfile.mkdtemp(prefix="fuzz-rest-corpus-")
        for index, seed in enumerate(SEEDS):
            pathlib.Path(corpus_dir, f"seed{index}").write_bytes(bytes([index]) + seed)
        rest = [*rest, corpus_dir]
    atheris.Setup([sys.argv[0], *rest], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
