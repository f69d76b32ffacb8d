"""Shared pieces of the operations tests: a slow model, certificates, a metrics reader."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import urllib.request
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pytest

SLOW_DELAY_S = 1.0

_SAMPLE_RE = re.compile(r'^([^\s{]+)(?:\{(.*)\})?\s+(\S+)$')
_LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text -> (name, labels, value) samples (TF Serving's ':'-names included)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE_RE.match(line)
        if match is None:
            raise AssertionError(f"unparsable metrics line: {line!r}")
        name, labels, value = match.groups()
        samples.append((name, dict(_LABEL_RE.findall(labels or "")), float(value)))
    return samples


def metric(samples: list, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels`` (0 when none)."""
    return sum(v for n, l, v in samples if n == name and all(l.get(k) == x for k, x in labels.items()))


def scrape(port: int, path: str = "/monitoring/prometheus/metrics", context=None, scheme: str = "http") -> list:
    with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}{path}", timeout=10, context=context) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        return parse_metrics(reply.read().decode())


@contextlib.contextmanager
def batching_metrics_server(root, base_path: str, metrics_path: str, batching_extra: str = "") -> Iterator[tuple]:
    """A flag-built server with Prometheus at ``metrics_path`` and batching on; yields (server, channel).

    Serves ``base_path`` as model "default" on 127.0.0.1; ``batching_extra`` is appended
    to the batching parameters file (e.g. a thread_pool_name).
    """
    import grpc

    from servable.config.flags import parse_flags
    from servable.model_server import ModelServer
    from servable.settings import settings_from_flags
    from tests.conftest import free_port, wait_until

    monitoring = root / "monitoring.txt"
    monitoring.write_text(f'prometheus_config {{ enable: true path: "{metrics_path}" }}\n')
    batching = root / "batching.txt"
    batching.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 1000 }\n"
                        "num_batch_threads { value: 2 }\n" + batching_extra)
    flags = parse_flags([
        f"--port={free_port()}", f"--rest_api_port={free_port()}", "--grpc_address=127.0.0.1",
        "--rest_api_address=127.0.0.1", "--model_name=default", f"--model_base_path={base_path}",
        f"--monitoring_config_file={monitoring}", "--enable_batching", f"--batching_parameters_file={batching}",
    ])
    settings, _demo = settings_from_flags(flags)
    srv = ModelServer(settings).start_in_thread()
    try:
        wait_until(srv.is_ready, timeout=30, message="model loaded")
        with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as channel:
            yield srv, channel
    finally:
        srv.stop()


def predict_request(values, name: str = "default", signature: str = ""):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if signature:
        request.model_spec.signature_name = signature
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray(values, dtype=np.float32)))
    return request


@pytest.fixture(scope="session")
def slow_export(tmp_path_factory) -> str:
    from servable.tf.testing_models import export_slow_model

    return export_slow_model(str(tmp_path_factory.mktemp("exports") / "slow"), SLOW_DELAY_S)


@dataclass(frozen=True)
class Certs:
    """PEM bytes: a CA, a server certificate for 127.0.0.1/localhost, a client it signed,
    and a client signed by another CA (the wrong one)."""

    ca: bytes
    server_key: bytes
    server_cert: bytes
    client_key: bytes
    client_cert: bytes
    rogue_key: bytes
    rogue_cert: bytes
    directory: str


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(cwd: str, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
             "-days", "2", "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=cwd)


def _make_leaf(cwd: str, name: str, ca: str, extensions: str) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={name}", cwd=cwd)
    with open(os.path.join(cwd, f"{name}.ext"), "w") as handle:
        handle.write(extensions)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=cwd)


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Certs:
    directory = str(tmp_path_factory.mktemp("certs"))
    _make_ca(directory, "ca")
    _make_ca(directory, "rogue_ca")
    _make_leaf(directory, "server", "ca",
               "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _make_leaf(directory, "client", "ca", "extendedKeyUsage=clientAuth\n")
    _make_leaf(directory, "rogue", "rogue_ca", "extendedKeyUsage=clientAuth\n")

    def read(name: str) -> bytes:
        with open(os.path.join(directory, name), "rb") as handle:
            return handle.read()

    return Certs(read("ca.pem"), read("server.key"), read("server.pem"), read("client.key"), read("client.pem"),
                 read("rogue.key"), read("rogue.pem"), directory)
