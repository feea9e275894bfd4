"""Frontend metrics: the lock-free histogram renders exactly like prometheus_client's."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from stator.frontend.metrics import FrontendMetrics, LoopHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0)
VALUES = [0.0005, 0.001, 0.002, 0.01, 0.5, 3.0, 0.1]


def test_loop_histogram_matches_prometheus_client() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    histogram = LoopHistogram("h_seconds", "doc", BUCKETS)
    ours.register(histogram)
    reference = Histogram("h_seconds", "doc", ["model"], buckets=BUCKETS, registry=theirs)
    for value in VALUES:
        histogram.labels("m").observe(value)
        reference.labels("m").observe(value)
    created = [line for line in generate_latest(theirs).decode().splitlines() if "_created" in line]
    expected = [
        line for line in generate_latest(theirs).decode().splitlines() if line not in created
    ]
    assert generate_latest(ours).decode().splitlines() == expected


def test_frontend_metrics_render_every_name() -> None:
    metrics = FrontendMetrics()
    m = metrics.for_model("tiny")
    m.ttft.observe(0.01)
    m.inflight.inc()
    metrics.count_request("tiny", "chat_completions", True, 200)
    text = metrics.render().decode()
    assert 'stator_frontend_time_to_first_token_seconds_bucket{le="0.01",model="tiny"} 1.0' in text
    assert 'stator_frontend_inflight_requests{model="tiny"} 1.0' in text
    assert "stator_frontend_requests_total{" in text
    assert "stator_frontend_cached_tokens" in text
