"""This instance's Prometheus metrics (`GET /metrics`): what the relay, WHEP, transcripts and routes did.

Every label takes a bounded set of values, so nobody outside can make series: flows only as live bridges
name them (a flow that exists), relayed events only from the protocol's known names (others count as
"other"), routes by template, reasons from our own codes. Counts and histogram buckets are plain numbers
the hot paths bump (prometheus-client's own histogram, with a lock per bucket, cost a page view ~6 µs here),
turned into metrics when Prometheus scrapes. Everything runs on the event loop (the scrape too), so nothing
here needs a lock.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "avatar_bff"
OTHER = "other"
METHODS = frozenset(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_CODE = re.compile(r"[a-z][a-z0-9_]{0,47}")
MAX_REASONS = 64  # distinct refusal or drop reasons kept per metric; more (a bug) count as "other"


class TapCounts(Protocol):
    """What the relay's transcript tap counts (server/transcripts/tap.py)."""

    @property
    def stored(self) -> int: ...
    @property
    def dropped(self) -> Mapping[str, int]: ...


class LiveBridge(Protocol):
    @property
    def flow_slug(self) -> str: ...


class RelayView(Protocol):
    """What the metrics read from the relay hub (server/relay/sockets.py) when scraped."""

    @property
    def bridges(self) -> Mapping[str, LiveBridge]: ...
    @property
    def dropped(self) -> Mapping[str, int]: ...
    @property
    def tap(self) -> TapCounts: ...


_CLASSES = {n: f"{n}xx" for n in range(1, 6)}


def status_class(status: int) -> str:
    return _CLASSES.get(status // 100, OTHER)


class Reasons:
    """Counts by a reason code of ours: anything not shaped like one, or past MAX_REASONS, is "other"."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, reason: str, n: int = 1) -> None:
        if reason not in self.counts and (len(self.counts) >= MAX_REASONS or not _CODE.fullmatch(reason)):
            reason = OTHER
        self.counts[reason] += n


class Latencies:
    """One histogram series: counts per bucket (the last one past every bound) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds, self.counts, self.sum = bounds, [0] * (len(bounds) + 1), 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1  # a value on a bound belongs to its bucket
        self.sum += seconds

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            cumulative.append((bound, float(running)))
        return cumulative


class Metrics:
    """One instance's metrics, in their own registry (so tests can run several apps in one process)."""

    def __init__(self, event_names: Mapping[str, Iterable[str]] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # direction → known event names; an event counts under its name only if it is one of them
        self._known = {direction: frozenset(names) for direction, names in (event_names or {}).items()}
        self.events: Counter[tuple[str, str]] = Counter()
        self.refusals = Reasons()
        self.upstream_failures = Reasons()
        self.page_stored = 0
        self.page_dropped = Reasons()
        self._relay: RelayView | None = None
        self.http_series: dict[tuple[str, str, str], Latencies] = {}  # by (route, method, status class)
        self.http_latency: dict[tuple[str, str, int], Latencies] = {}  # the same, by status
        self.upstream_connect = Latencies(LATENCY_BUCKETS)
        self.whep_latency: dict[tuple[str, str], Latencies] = {}  # by (method, outcome)
        self.registry.register(_Counts(self))

    def watch(self, relay: RelayView) -> None:
        self._relay = relay

    # The relay's calls: each one line where it happens.
    def relayed(self, direction: str, event: str | None) -> None:
        """An event packet relayed (None: a packet that is no event, such as an ack, is not counted)."""
        if event is not None:
            known = self._known.get(direction, ())
            self.events[direction, event if event in known else OTHER] += 1

    def refused(self, reason: str) -> None:
        self.refusals.add(reason)

    def upstream_connected(self, seconds: float) -> None:
        self.upstream_connect.observe(seconds)

    def upstream_failed(self, reason: str) -> None:
        self.upstream_failures.add(reason)

    def whep(self, method: str, outcome: str, seconds: float) -> None:
        key = (method if method in METHODS else OTHER, outcome)
        series = self.whep_latency.get(key) or self.whep_latency.setdefault(key, Latencies(LATENCY_BUCKETS))
        series.observe(seconds)

    def page_lines(self, stored: int, dropped: int = 0, reason: str = "") -> None:
        self.page_stored += stored
        if dropped:
            self.page_dropped.add(reason, dropped)

    def http(self, route: str, method: str, status: int, seconds: float) -> None:
        """On every request, the page views' fast path included: kept to a few dictionary lookups."""
        key = (route, method if method in METHODS else OTHER, status)
        series = self.http_latency.get(key)
        if series is None:  # `route` is a template of ours, so there are few
            label = (route, key[1], status_class(status))
            series = self.http_latency[key] = self.http_series.get(label) or self.http_series.setdefault(
                label, Latencies(HTTP_BUCKETS)
            )
        series.counts[bisect_left(HTTP_BUCKETS, seconds)] += 1
        series.sum += seconds


class _Counts(Collector):
    """The counts kept as plain numbers, and the relay's state, turned into metrics at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m, relay = self.m, self.m._relay
        sessions = GaugeMetricFamily(
            f"{PREFIX}_relay_sessions",
            "Live relayed conversations (bridges) on this instance",
            labels=["flow"],
        )
        dropped = CounterMetricFamily(
            f"{PREFIX}_relay_dropped",
            "Browser packets the relay did not forward, by reason",
            labels=["reason"],
        )
        stored = CounterMetricFamily(
            f"{PREFIX}_transcript_lines_stored",
            "Transcript lines written, by source (relay: the tap; page: page ingest)",
            labels=["source"],
        )
        lost = CounterMetricFamily(
            f"{PREFIX}_transcript_lines_dropped",
            "Transcript lines not stored, by source and reason",
            labels=["source", "reason"],
        )
        if relay is not None:
            for flow, count in sorted(Counter(b.flow_slug for b in relay.bridges.values()).items()):
                sessions.add_metric([flow], count)
            for reason, count in sorted(relay.dropped.items()):
                dropped.add_metric([reason], count)
            stored.add_metric(["relay"], relay.tap.stored)
            for reason, count in sorted(relay.tap.dropped.items()):
                lost.add_metric(["relay", reason], count)
        stored.add_metric(["page"], m.page_stored)
        for reason, count in sorted(m.page_dropped.counts.items()):
            lost.add_metric(["page", reason], count)
        events = CounterMetricFamily(
            f"{PREFIX}_relay_events",
            "Socket.IO events relayed, by direction (to_upstream, to_browser) and event name",
            labels=["direction", "event"],
        )
        for (direction, event), count in sorted(m.events.items()):
            events.add_metric([direction, event], count)
        yield from (sessions, dropped, events, stored, lost)
        yield _by_reason(
            "relay_refusals",
            "Browser connections the relay refused, by reason (budgets and caps too)",
            m.refusals,
        )
        yield _by_reason(
            "upstream_connect_failures", "Upstream connections that failed, by reason", m.upstream_failures
        )
        yield _histogram(
            "http_request_duration_seconds",
            "HTTP requests (all but Socket.IO) by route template, method and status class",
            ["route", "method", "status_class"],
            m.http_series.items(),
        )
        yield _histogram(
            "upstream_connect_seconds",
            "Time to open a relayed conversation's upstream Socket.IO connection (successful ones)",
            [],
            [((), m.upstream_connect)],
        )
        yield _histogram(
            "whep_seconds",
            "WHEP requests forwarded upstream, by method and outcome (status class, timeout or error)",
            ["method", "outcome"],
            m.whep_latency.items(),
        )


def _histogram(
    name: str, documentation: str, labels: list[str], series: Iterable[tuple[tuple[str, ...], Latencies]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(f"{PREFIX}_{name}", documentation, labels=labels)
    for values, latencies in sorted(series, key=lambda item: item[0]):
        family.add_metric(list(values), latencies.buckets(), latencies.sum)
    return family


def _by_reason(name: str, documentation: str, reasons: Reasons) -> CounterMetricFamily:
    family = CounterMetricFamily(f"{PREFIX}_{name}", documentation, labels=["reason"])
    for reason, count in sorted(reasons.counts.items()):
        family.add_metric([reason], count)
    return family
