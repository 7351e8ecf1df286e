"""The canonical transcript: every line once, in order, whatever the sources did."""

from __future__ import annotations

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
