"""``--monitoring_config_file`` metrics: TF Serving's names and labels plus servable's own,
moving by exactly the requests sent (by status, by entrypoint), on a flag-built server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from tests.ops.conftest import batching_metrics_server, metric, predict_request, scrape
from tests.serverutil import copy_version

PATH = "/metrics/custom"


@pytest.fixture(scope="module")
def server(tmp_path_factory, half_plus_two_export):
    root = tmp_path_factory.mktemp("metrics")
    # The base path's folder is not named after the model: every metric carries the model's name.
    copy_version(half_plus_two_export, str(root / "exported_hpt"), 1)
    with batching_metrics_server(root, str(root / "exported_hpt"), PATH) as served:
        yield served


def _rest(port: int, path: str, body: dict | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as error:
        return error.code


def test_metrics_move_by_exactly_the_requests_sent(server):
    srv, channel = server
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    port = srv.rest_port
    before = scrape(port, PATH)
    for _ in range(3):
        stub.Predict(predict_request([1.0, 2.0]), timeout=10)
    for _ in range(2):
        with pytest.raises(grpc.RpcError):
            stub.Predict(predict_request([1.0], signature="nope"), timeout=10)
    assert _rest(port, "/v1/models/default:predict", {"instances": [1.0]}) == 200
    assert _rest(port, "/v1/models/default:predict", {"instances": [1.0, 3.0]}) == 200
    assert _rest(port, "/v1/models/default/versions/7:predict", {"instances": [1.0]}) == 404
    after = scrape(port, PATH)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    count = ":tensorflow:serving:request_count"
    assert delta(count, model_name="default", status="OK") == 5
    assert delta(count, model_name="default", status="FAILED_PRECONDITION") == 2
    assert delta(count, model_name="default", status="NOT_FOUND") == 1
    latency = ":tensorflow:serving:request_latency_count"
    assert delta(latency, model_name="default", API="Predict", entrypoint="GRPC") == 3
    assert delta(latency, model_name="default", API="predict", entrypoint="REST") == 2
    assert delta(":tensorflow:serving:runtime_latency_count", model_name="default") == 5
    # servable's own per-version / per-signature counter.
    ours = "servable_requests_total"
    assert delta(ours, model_name="default", version="1", signature="serving_default", entrypoint="GRPC", status="OK") == 3
    assert delta(ours, model_name="default", version="1", signature="nope", status="FAILED_PRECONDITION") == 2
    assert delta(ours, model_name="default", version="1", signature="serving_default", entrypoint="REST", status="OK") == 2
    # Batching: every model call went through the scheduler, 1 or 2 rows each.
    assert delta("servable_batch_size_count", model_name="default") == 5
    assert delta("servable_batch_size_sum", model_name="default") >= 2 * 3 + 1 + 2
    assert delta("servable_batch_queue_seconds_count", model_name="default") == 5


def test_model_state_load_time_and_process_metrics(server):
    srv, _channel = server
    samples = scrape(srv.rest_port, PATH)
    assert metric(samples, "servable_model_version_state", model_name="default", version="1") == 30
    assert metric(samples, "servable_model_load_seconds_count", model_name="default") == 1
    assert metric(samples, "servable_model_load_seconds_sum", model_name="default") > 0
    assert metric(samples, "process_resident_memory_bytes") > 10 * 2**20
    assert metric(samples, "servable_requests_in_flight") == 0


def test_metrics_only_at_the_configured_path(server):
    srv, _channel = server
    assert _rest(srv.rest_port, "/monitoring/prometheus/metrics") == 404
