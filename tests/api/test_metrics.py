"""`/metrics` moves as expected across a stream, a cancel and a disconnect."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from support import Harness, StreamReader, assert_consistent, stream_all, wait_until


def _scrape(h: Harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with h.client(None) as client:
        response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def _get(values: dict[Any, float], name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_follow_streams_cancels_and_disconnects(make_harness: Any) -> None:
    h: Harness = make_harness(tokens_per_second=40.0)
    start = _scrape(h)
    with h.client() as client:
        stream_all(client, {"inputs": [{"role": "user", "content": "x [tokens=5]"}]})
    after_stream = _scrape(h)
    assert _get(after_stream, "proxy_streams_total", outcome="completed") == 1
    assert _get(after_stream, "proxy_tokens_relayed_total") - _get(start, "proxy_tokens_relayed_total") == 5
    assert _get(after_stream, "proxy_time_to_first_token_seconds_count") == 1
    assert _get(after_stream, "proxy_relay_latency_seconds_count") >= 1
    assert _get(after_stream, "proxy_requests_total", method="POST", endpoint="/v1/model/response", status="200") == 1

    reader = StreamReader(h, {"inputs": [{"role": "user", "content": "long [tokens=400]"}]})
    reader.wait_deltas(2)
    assert _get(_scrape(h), "proxy_active_streams") == 1
    with h.client() as client:
        assert client.post(f"/v1/model/response/{reader.thread_id}/cancel").status_code == 200
    reader.join()
    after_cancel = _scrape(h)
    assert _get(after_cancel, "proxy_cancels_total", mode="quick_edit") == 1
    assert _get(after_cancel, "proxy_active_streams") == 0
    assert (
        _get(
            after_cancel,
            "proxy_requests_total",
            method="POST",
            endpoint="/v1/model/response/{thread_id}/cancel",
            status="200",
        )
        == 1
    )

    reader = StreamReader(h, {"inputs": [{"role": "user", "content": "long [tokens=400]"}]})
    reader.wait_deltas(2)
    reader.disconnect()
    reader.join()
    wait_until(lambda: _get(_scrape(h), "proxy_disconnect_cancels_total") == 1)
    final = _scrape(h)
    assert _get(final, "proxy_streams_total", outcome="cancelled") == 2
    assert _get(final, "proxy_lmstudio_connects_total") == 1 and _get(final, "proxy_lmstudio_errors_total") == 0
    assert_consistent(h)
