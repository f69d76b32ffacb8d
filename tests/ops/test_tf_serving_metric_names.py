"""TF Serving's load / warmup / batching metric names on the ``--monitoring_config_file``
page: ``:tensorflow:cc:saved_model:load_attempt_count`` and ``load_latency``,
``:tensorflow:serving:model_warmup_records_read``, and the ``batching_session`` ones,
on a flag-built server loading a version with a warmup file and batching enabled."""

from __future__ import annotations

import os

import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from servable.serving.metrics import ServingMetrics
from tests.ops.conftest import batching_metrics_server, metric, parse_metrics, predict_request, scrape
from tests.serverutil import copy_version

PATH = "/monitoring/prometheus/metrics"
WARMUP_RECORDS = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory, half_plus_two_export):
    from servable.tf.testing_models import write_warmup_file

    root = tmp_path_factory.mktemp("tfs_metric_names")
    version_path = copy_version(half_plus_two_export, str(root / "hpt"), 1)
    # Serialized tensorflow_serving PredictionLogs (write_warmup_file takes bytes as they are).
    from tensorflow_serving.apis import prediction_log_pb2

    logs = []
    for rows in range(1, WARMUP_RECORDS + 1):
        log = prediction_log_pb2.PredictionLog()
        log.predict_log.request.CopyFrom(predict_request([1.0] * rows))
        logs.append(log.SerializeToString())
    write_warmup_file(version_path, logs)
    with batching_metrics_server(root, str(root / "hpt"), PATH, 'thread_pool_name { value: "my_pool" }\n') as (srv, channel):
        yield srv, channel, version_path


def test_load_and_warmup_metrics(server):
    srv, _channel, version_path = server
    samples = scrape(srv.rest_port, PATH)
    model_path = os.path.abspath(version_path)
    assert metric(samples, ":tensorflow:cc:saved_model:load_attempt_count", model_path=model_path, status="success") == 1
    assert metric(samples, ":tensorflow:cc:saved_model:load_attempt_count", status="fail") == 0
    assert metric(samples, ":tensorflow:cc:saved_model:load_latency", model_path=model_path) > 0
    assert metric(samples, ":tensorflow:serving:model_warmup_records_read", model_path=model_path,
                  status="OK") == WARMUP_RECORDS
    assert metric(samples, "servable_model_warmup_records_total", model_name="default", status="OK") == WARMUP_RECORDS
    assert metric(samples, ":tensorflow:serving:model_warmup_latency_count", model_path=model_path, status="OK") == 1
    assert metric(samples, ":tensorflow:serving:model_warmup_latency_sum", model_path=model_path, status="OK") > 0


def test_batching_session_metrics_move_by_the_batches_run(server):
    srv, channel, _version_path = server
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    before = scrape(srv.rest_port, PATH)
    for _ in range(3):
        stub.Predict(predict_request([1.0, 2.0]), timeout=10)
    after = scrape(srv.rest_port, PATH)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    batches = delta("servable_batch_size_count", model_name="default")
    assert batches == 3
    assert delta(":tensorflow:serving:batching_session:wrapped_run_count") == batches
    queuing = ":tensorflow:serving:batching_session:queuing_latency"
    assert delta(f"{queuing}_count", thread_pool_name="my_pool") == batches
    assert delta(f"{queuing}_bucket", thread_pool_name="my_pool", le="+Inf") == batches


def test_exposition_format():
    """TYPE lines, label quoting, TF's queuing buckets, a zero-label counter, a failed load."""
    metrics = ServingMetrics()
    metrics.observe_model_load('/m/"x"/1', False)
    metrics.observe_model_load("/m/x/2", True, 0.25)
    metrics.observe_warmup("/m/x/2", 4, 0.002)
    metrics.observe_batch("batch_threads", 0.0005)
    text = metrics.render().decode()
    lines = text.splitlines()
    for name, kind in [
        (":tensorflow:serving:model_warmup_latency", "histogram"),
        (":tensorflow:serving:model_warmup_records_read", "counter"),
        (":tensorflow:serving:batching_session:queuing_latency", "histogram"),
        (":tensorflow:serving:batching_session:wrapped_run_count", "counter"),
        (":tensorflow:cc:saved_model:load_attempt_count", "counter"),
        (":tensorflow:cc:saved_model:load_latency", "counter"),
    ]:
        assert f"# TYPE {name} {kind}" in lines
    assert ':tensorflow:cc:saved_model:load_attempt_count{model_path="/m/\\"x\\"/1",status="fail"} 1' in lines
    assert ':tensorflow:cc:saved_model:load_attempt_count{model_path="/m/x/2",status="success"} 1' in lines
    assert ':tensorflow:cc:saved_model:load_latency{model_path="/m/x/2"} 250000' in lines
    assert ':tensorflow:serving:batching_session:wrapped_run_count 1' in lines
    samples = parse_metrics(text)
    queuing = ":tensorflow:serving:batching_session:queuing_latency_bucket"
    bounds = [s[1]["le"] for s in samples if s[0] == queuing]
    assert len(bounds) == 53 and bounds[0] == "100" and bounds[-1] == "+Inf"  # exponential(100, x1.2, 52)
    assert metric(samples, queuing, le="100") == 0 and metric(samples, queuing, le="+Inf") == 1
    warmup = ":tensorflow:serving:model_warmup_latency"
    assert metric(samples, f"{warmup}_count", model_path="/m/x/2", status="OK") == 1
    assert metric(samples, f"{warmup}_sum", model_path="/m/x/2", status="OK") == 2000
    assert metric(samples, ":tensorflow:serving:model_warmup_records_read", model_path="/m/x/2", status="OK") == 4
