"""Merge the two sources of a transcript (the page and the relay tap) into one canonical list. Pure."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

# Lines from the two sources that say the same thing this close together are one line.
SAME_LINE_WINDOW = timedelta(seconds=10)


@dataclass(frozen=True)
class SourceEntry:
    source: str  # "page" | "relay"
    seq: int
    role: str  # "Avatar" | "User"
    text: str
    timestamp: datetime
    pronunciation_score: int | None = None


@dataclass(frozen=True)
class CanonicalEntry:
    seq: int
    role: str
    text: str
    timestamp: datetime
    sources: tuple[str, ...]
    pronunciation_score: int | None = None


_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Case, width, whitespace and edge punctuation do not make two lines different."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", folded).strip(" .,!?;:…\"'")


@dataclass
class _Group:
    key: str  # normalised text, computed once
    members: list[SourceEntry]

    @property
    def first(self) -> SourceEntry:
        return self.members[0]


def _matching_group(groups: list[_Group], entry: SourceEntry, key: str) -> _Group | None:
    """The recent group that already holds this line from the other source, if any."""
    for group in reversed(groups):
        if entry.timestamp - group.first.timestamp > SAME_LINE_WINDOW:
            return None
        if (
            group.key == key
            and group.first.role == entry.role
            and all(member.source != entry.source for member in group.members)
        ):
            return group
    return None


def _score(members: list[SourceEntry]) -> int | None:
    """Only the page reports scores; should two sources ever both score a line, the page's wins."""
    scored = [m for m in members if m.pronunciation_score is not None]
    best = min(scored, key=lambda m: (m.source != "page", m.source, m.seq), default=None)
    return None if best is None else best.pronunciation_score


def merge(entries: list[SourceEntry]) -> list[CanonicalEntry]:
    """Return the canonical transcript: each line once, in time order, with every source that reported it.

    The result depends only on the set of (source, seq) entries, never on their order or repetition:
    retries and interleavings give the same transcript.
    """
    unique = {(e.source, e.seq): e for e in sorted(entries, key=lambda e: (e.source, e.seq, e.timestamp))}
    ordered = sorted(unique.values(), key=lambda e: (e.timestamp, e.source, e.seq))
    groups: list[_Group] = []
    for entry in ordered:
        key = normalise(entry.text)
        match = _matching_group(groups, entry, key)
        if match is None:
            groups.append(_Group(key, [entry]))
        else:
            match.members.append(entry)
    groups.sort(key=lambda group: (group.first.timestamp, group.first.source, group.first.seq))
    return [
        CanonicalEntry(
            seq=index,
            role=group.first.role,
            text=group.first.text,
            timestamp=group.first.timestamp,
            sources=tuple(sorted({member.source for member in group.members})),
            pronunciation_score=_score(group.members),
        )
        for index, group in enumerate(groups, start=1)
    ]
