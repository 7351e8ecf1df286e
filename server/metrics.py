"""This instance's Prometheus metrics (`GET /metrics`): what the relay, WHEP, transcripts and routes did.

Every label takes a bounded set of values, so nobody outside can make series: flows only as live bridges
name them (a flow that exists), relayed events only from the protocol's known names (others count as
"other"), routes by template, reasons from our own codes. Counts the hot paths bump are plain integers,
read when Prometheus scrapes; only latencies go through prometheus-client's histograms. Everything runs on
the event loop (the scrape too), so nothing here needs a lock.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "avatar_bff"
OTHER = "other"
METHODS = frozenset(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
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


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else OTHER


class Reasons:
    """Counts by a reason code of ours: anything not shaped like one, or past MAX_REASONS, is "other"."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, reason: str, n: int = 1) -> None:
        if reason not in self.counts and (len(self.counts) >= MAX_REASONS or not _CODE.fullmatch(reason)):
            reason = OTHER
        self.counts[reason] += n


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
        self._http = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "HTTP requests (pages, API, console, WHEP; not Socket.IO) by route template, method and status "
            "class",
            ["route", "method", "status_class"],
            registry=self.registry,
        )
        self._http_children: dict[tuple[str, str, str], Callable[[float], None]] = {}
        self._upstream_connect = Histogram(
            f"{PREFIX}_upstream_connect_seconds",
            "Time to open a relayed conversation's upstream Socket.IO connection (successful ones)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._whep = Histogram(
            f"{PREFIX}_whep_seconds",
            "WHEP requests forwarded upstream, by method and outcome (status class, timeout or error)",
            ["method", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
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
        self._upstream_connect.observe(seconds)

    def upstream_failed(self, reason: str) -> None:
        self.upstream_failures.add(reason)

    def whep(self, method: str, outcome: str, seconds: float) -> None:
        self._whep.labels(method if method in METHODS else OTHER, outcome).observe(seconds)

    def page_lines(self, stored: int, dropped: int = 0, reason: str = "") -> None:
        self.page_stored += stored
        if dropped:
            self.page_dropped.add(reason, dropped)

    def http(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status_class(status))
        observe = self._http_children.get(key)
        if observe is None:  # `route` is a template of ours, so this stays small
            label = method if method in METHODS else OTHER
            observe = self._http_children[key] = self._http.labels(route, label, key[2]).observe
        observe(seconds)


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


def _by_reason(name: str, documentation: str, reasons: Reasons) -> CounterMetricFamily:
    family = CounterMetricFamily(f"{PREFIX}_{name}", documentation, labels=["reason"])
    for reason, count in sorted(reasons.counts.items()):
        family.add_metric([reason], count)
    return family
