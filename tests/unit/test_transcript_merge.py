"""The canonical transcript: every line once, in order, whatever the sources did."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from server.transcripts.formats import as_markdown, as_text
from server.transcripts.merge import CanonicalEntry, SourceEntry, merge, normalise

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LINES = st.lists(
    st.tuples(
        st.sampled_from(["Avatar", "User"]), st.text(min_size=1, max_size=30).filter(lambda t: normalise(t))
    ),
    min_size=1,
    max_size=12,
)


@st.composite
def conversations(draw: st.DrawFn) -> tuple[list[tuple[str, str]], list[SourceEntry]]:
    """A conversation and what the two sources reported of it: skewed clocks, gaps, retries, any order."""
    lines = draw(LINES)
    reported: list[SourceEntry] = []
    for source in ("page", "relay"):
        seq = 0
        for index, (role, text) in enumerate(lines):
            seq += 1
            # Each line is reported by at least one source (the page here when the relay missed it).
            if source == "relay" and not draw(st.booleans()):
                continue
            skew = timedelta(milliseconds=draw(st.integers(-2000, 2000)))
            reported.append(SourceEntry(source, seq, role, text, T0 + timedelta(seconds=30 * index) + skew))
    retried = reported + draw(st.lists(st.sampled_from(reported), max_size=10))
    return lines, draw(st.permutations(retried))


@settings(max_examples=300, deadline=None)
@given(conversations())
def test_any_interleaving_and_duplication_gives_each_line_once_in_order(
    case: tuple[list[tuple[str, str]], list[SourceEntry]],
) -> None:
    lines, reported = case
    canonical = merge(reported)
    assert [(e.role, e.text) for e in canonical] == lines
    assert [e.seq for e in canonical] == list(range(1, len(lines) + 1))
    assert all("page" in e.sources for e in canonical)


@settings(max_examples=200, deadline=None)
@given(conversations(), st.randoms())
def test_the_result_does_not_depend_on_arrival_order(
    case: tuple[list[tuple[str, str]], list[SourceEntry]], rnd: object
) -> None:
    _, reported = case
    shuffled = list(reported)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert merge(shuffled) == merge(reported)


def test_same_text_from_both_sources_is_one_line_with_both_marks() -> None:
    merged = merge(
        [
            SourceEntry("relay", 1, "Avatar", "Hello there!", T0),
            SourceEntry("page", 1, "Avatar", "hello there", T0 + timedelta(seconds=1)),
        ]
    )
    assert merged == [CanonicalEntry(1, "Avatar", "Hello there!", T0, ("page", "relay"))]


def test_a_page_score_survives_the_merge_whichever_source_came_first() -> None:
    relay_first = [
        SourceEntry("relay", 1, "User", "I like tea", T0),
        SourceEntry("page", 4, "User", "I like tea.", T0 + timedelta(seconds=1), pronunciation_score=72),
    ]
    merged = merge(relay_first)
    assert merged == merge(relay_first[::-1])
    assert [(e.text, e.pronunciation_score, e.sources) for e in merged] == [
        ("I like tea", 72, ("page", "relay"))
    ]


def test_a_repeated_line_from_one_source_stays_twice() -> None:
    merged = merge([SourceEntry("page", 1, "User", "yes", T0), SourceEntry("page", 2, "User", "yes", T0)])
    assert [e.text for e in merged] == ["yes", "yes"]


def test_lines_far_apart_in_time_are_not_merged() -> None:
    merged = merge(
        [
            SourceEntry("page", 1, "User", "ok", T0),
            SourceEntry("relay", 1, "User", "ok", T0 + timedelta(minutes=1)),
        ]
    )
    assert len(merged) == 2


def test_text_and_markdown_match_the_sdk_shapes() -> None:
    entries = [
        CanonicalEntry(1, "Avatar", "Hi", T0, ("page",)),
        CanonicalEntry(2, "User", "Yo", T0, ("page",)),
    ]
    assert as_text(entries) == "Avatar: Hi\nUser: Yo"
    assert as_markdown(entries) == "**Avatar:** Hi\n\n**User:** Yo"
    assert as_text(entries, timestamps=True).startswith("[2026-01-01T00:00:00Z] Avatar: Hi")


def test_a_long_transcript_said_at_one_instant_merges_in_linear_time() -> None:
    # 20,000 page lines with one timestamp (what a visitor can post): the old backwards scan compared each
    # line with every earlier one, ~80 s; with the index it is a fraction of a second (bound kept generous).
    page = [SourceEntry("page", n, "User", f"line {n}", T0) for n in range(1, 20_001)]
    relay = [SourceEntry("relay", n, "User", f"line {n}", T0) for n in range(1, 20_001, 2)]
    started = time.monotonic()
    merged = merge(page + relay)
    assert time.monotonic() - started < 5
    assert len(merged) == 20_000
    assert [e.sources for e in merged[:2]] == [("page", "relay"), ("page",)]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["page", "relay"]),
            st.sampled_from(["Avatar", "User"]),
            st.sampled_from(["yes", "Yes.", "no", "ok"]),
            st.integers(0, 40),
        ),
        max_size=25,
    )
)
def test_repeated_short_answers_merge_the_newest_open_line_in_the_window(
    reported: list[tuple[str, str, str, int]],
) -> None:
    """Crowded lines (same words, seconds apart) pair up as a backwards scan over every group would."""
    entries = [
        SourceEntry(source, seq, role, text, T0 + timedelta(seconds=at))
        for seq, (source, role, text, at) in enumerate(reported, start=1)
    ]

    def grouping(merged: list[CanonicalEntry]) -> list[tuple[object, ...]]:
        return [(e.seq, e.role, e.timestamp, e.sources) for e in merged]

    assert grouping(merge(entries)) == grouping(_scanning_merge(entries))


def _scanning_merge(entries: list[SourceEntry]) -> list[CanonicalEntry]:
    """The straightforward quadratic merge, kept as the reference the indexed one must agree with."""
    ordered = sorted(set(entries), key=lambda e: (e.timestamp, e.source, e.seq))
    groups: list[list[SourceEntry]] = []
    for entry in ordered:
        match = None
        for group in reversed(groups):
            if entry.timestamp - group[0].timestamp > timedelta(seconds=10):
                break
            if (
                normalise(group[0].text) == normalise(entry.text)
                and group[0].role == entry.role
                and all(m.source != entry.source for m in group)
            ):
                match = group
                break
        if match is None:
            groups.append([entry])
        else:
            match.append(entry)
    return [
        CanonicalEntry(n, g[0].role, g[0].text, g[0].timestamp, tuple(sorted({m.source for m in g})))
        for n, g in enumerate(groups, start=1)
    ]
