"""Metric labels stay bounded whatever the traffic, and histograms bucket as Prometheus reads them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from server import request_context
from server.logs import Context
from server.metrics import MAX_REASONS, Metrics
from server.request_context import new_request_id, request_id_for


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_events_outside_the_known_names_count_as_other_and_non_events_not_at_all() -> None:
    metrics = Metrics({"to_browser": {"showAgent"}})
    for name in ("showAgent", "showAgent", "madeUp1", "madeUp2", None):
        metrics.relayed("to_browser", name)
    metrics.relayed("to_upstream", "join")  # a direction with no known names: all "other"
    found = {
        labels: v for (name, labels), v in samples(metrics).items() if name == "avatar_bff_relay_events_total"
    }
    assert found == {
        (("direction", "to_browser"), ("event", "showAgent")): 2,
        (("direction", "to_browser"), ("event", "other")): 2,
        (("direction", "to_upstream"), ("event", "other")): 1,
    }


def test_reasons_not_shaped_like_our_codes_or_past_the_cap_count_as_other() -> None:
    metrics = Metrics()
    metrics.refused("capacity")
    metrics.refused("Not A Code!")
    for n in range(MAX_REASONS + 10):
        metrics.refused(f"reason_{n}")
    reasons = {
        dict(labels)["reason"]
        for name, labels in samples(metrics)
        if name == "avatar_bff_relay_refusals_total"
    }
    assert len(reasons) == MAX_REASONS and {"capacity", "other"} <= reasons  # "other" among them


def test_http_latency_buckets_are_cumulative_and_methods_bounded() -> None:
    metrics = Metrics()
    for seconds in (0.0005, 0.001, 0.02, 30.0):
        metrics.http("/a/{slug}", "GET", 200, seconds)
    metrics.http("/a/{slug}", "BREW", 418, 0.001)
    found = samples(metrics)
    labels = (("method", "GET"), ("route", "/a/{slug}"), ("status_class", "2xx"))
    bucket = "avatar_bff_http_request_duration_seconds_bucket"
    assert found[(bucket, (("le", "0.001"), *labels))] == 2  # a value on a bound is in that bucket
    assert found[(bucket, (("le", "0.025"), *labels))] == 3
    assert found[(bucket, (("le", "+Inf"), *labels))] == 4
    assert found[("avatar_bff_http_request_duration_seconds_sum", labels)] == pytest.approx(30.0215)
    other = (("method", "other"), ("route", "/a/{slug}"), ("status_class", "4xx"))
    assert found[("avatar_bff_http_request_duration_seconds_count", other)] == 1


def test_request_ids_come_from_a_sane_proxy_header_or_are_made_here() -> None:
    assert request_id_for([(b"x-request-id", b"0123456789abcdef")]) == "0123456789abcdef"
    for odd in (b"short", b"a" * 65, b"has space inside", b"header.payload-with-dot", b"\xff" * 10):
        made = request_id_for([(b"x-request-id", odd)])
        assert made.encode() != odd and made.count("-") == 1
    assert new_request_id() != new_request_id()


def test_text_log_lines_name_the_request_and_conversation(tmp_path: Path) -> None:
    record = logging.LogRecord("avatar_bff.relay", logging.INFO, __file__, 1, "relay: hello", None, None)
    formatter = logging.Formatter("%(name)s: %(message)s%(context)s")
    Context().filter(record)
    assert formatter.format(record) == "avatar_bff.relay: relay: hello"
    request = request_context.request_id.set("req-12345678")
    conversation = request_context.conversation_id.set("conv-1")
    try:
        Context().filter(record)
    finally:
        request_context.request_id.reset(request)
        request_context.conversation_id.reset(conversation)
    assert (
        formatter.format(record)
        == "avatar_bff.relay: relay: hello [request=req-12345678 conversation=conv-1]"
    )
