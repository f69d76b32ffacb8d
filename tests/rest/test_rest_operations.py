"""Operational behaviour of the REST front door: deadline, body limit, CORS off, metrics off,
health and readiness answered while every worker is busy."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from servable.rest.app import RestOptions, create_app
from tests.rest.conftest import METRICS_PATH, Client
from tests.serverutil import copy_version, model, running_server

SLOW_DELAY_S = 1.0
TIMEOUT_MS = 300
MAX_BODY = 4096


@pytest.fixture(scope="module")
def slow_export(tmp_path_factory) -> str:
    from servable.tf.testing_models import export_slow_model

    return export_slow_model(str(tmp_path_factory.mktemp("exports") / "slow"), SLOW_DELAY_S)


@pytest.fixture(scope="module")
def slow_client(tmp_path_factory, slow_export, half_plus_two_export):
    root = tmp_path_factory.mktemp("rest_ops_models")
    copy_version(slow_export, str(root / "slow"), 1)
    copy_version(half_plus_two_export, str(root / "default"), 1)
    options = RestOptions(timeout_ms=TIMEOUT_MS, max_body_bytes=MAX_BODY)
    with running_server([model("slow", root / "slow"), model("default", root / "default")],
                        rest_options=options, num_request_threads=2) as server:
        yield Client(server.rest_port)


def test_deadline_is_504(slow_client):
    start = time.monotonic()
    reply = slow_client.post("/v1/models/slow:predict", {"instances": [1.0]})
    assert reply.status == 504
    assert reply.json() == {"error": "Timed out waiting for notification"}
    assert time.monotonic() - start < SLOW_DELAY_S


def test_health_status_and_readiness_not_queued_behind_busy_workers(slow_client):
    replies = []
    threads = [threading.Thread(target=lambda: replies.append(slow_client.post("/v1/models/slow:predict", {"inputs": [1.0]})))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Both workers now run the slow model for the rest of SLOW_DELAY_S.
    busy_until = time.monotonic() + SLOW_DELAY_S - TIMEOUT_MS / 1000
    assert [reply.status for reply in replies] == [504, 504]
    start = time.monotonic()
    assert slow_client.get("/v1/healthz").status == 200
    assert slow_client.get("/v1/readyz").status == 200
    assert slow_client.get("/v1/models/slow").status == 200
    finished = time.monotonic()
    assert finished < busy_until, "health/readiness/status waited for the worker pool"
    assert finished - start < 0.3


def test_body_limit_is_413_naming_the_flag(slow_client):
    reply = slow_client.post("/v1/models/default:predict", {"instances": [1.0] * 2000})
    assert reply.status == 413
    message = reply.json()["error"]
    assert "--rest_api_max_body_bytes" in message and str(MAX_BODY) in message
    compressed = gzip.compress(json.dumps({"instances": [1.0] * 2000}).encode())
    assert len(compressed) < MAX_BODY
    reply = slow_client.call("POST", "/v1/models/default:predict", compressed, headers={"Content-Encoding": "gzip"})
    assert reply.status == 413


def test_corrupt_gzip_is_400(slow_client):
    reply = slow_client.call("POST", "/v1/models/default:predict", b"not gzip", headers={"Content-Encoding": "gzip"})
    assert reply.status == 400
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json()["error"].startswith("Failed to decompress the gzip request body:")
    truncated = gzip.compress(b'{"instances": [1.0]}')[:-6]
    reply = slow_client.call("POST", "/v1/models/default:predict", truncated, headers={"Content-Encoding": "gzip"})
    assert reply.status == 400
    assert reply.json()["error"].startswith("Failed to decompress the gzip request body:")


def test_cors_off_by_default(slow_client):
    reply = slow_client.get("/v1/models/default")  # answered on the loop, whatever the workers do
    assert reply.status == 200
    assert "access-control-allow-origin" not in reply.headers
    # Preflights are answered whatever the flag says.
    assert slow_client.call("OPTIONS", "/v1/models/default", headers={"Origin": "http://x"}).status == 200


def test_metrics_off_by_default(slow_client):
    assert slow_client.get(METRICS_PATH).status == 404


class _NotReady:
    shutting_down = False

    def is_ready(self) -> bool:
        return False


def test_readyz_is_503_until_ready():
    async def scenario() -> tuple[int, dict, int]:
        app = create_app(None, RestOptions(), server=_NotReady())  # readiness never touches the service
        async with TestClient(TestServer(app)) as http:
            ready = await http.get("/v1/readyz")
            alive = await http.get("/v1/healthz")
            return ready.status, await ready.json(), alive.status

    status, body, alive = asyncio.run(scenario())
    assert status == 503 and "error" in body
    assert alive == 200


def test_options_from_flags(tmp_path):
    config = tmp_path / "monitoring.txt"
    config.write_text('prometheus_config: { enable: true, path: "/metrics" }')

    class Flags:
        rest_api_timeout_in_ms = 1234
        rest_api_enable_cors_support = True
        monitoring_config_file = str(config)
        rest_api_max_body_bytes = 99

    options = RestOptions.from_flags(Flags())
    assert (options.timeout_ms, options.enable_cors, options.metrics_path, options.max_body_bytes) == (1234, True, "/metrics", 99)
    defaults = RestOptions.from_flags(object())
    assert (defaults.timeout_ms, defaults.enable_cors, defaults.metrics_path) == (30000, False, None)
