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
    # False for an Avatar line only the page reported: nothing the server heard vouches for those words.
    verified: bool = True


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


class _OpenGroups:
    """For each (role, normalised text, source): the groups still lacking that source, oldest first.

    Entries arrive in time order and groups are made in time order, so the newest such group is the only
    candidate (the one a backwards scan would find first) and one that fell out of the window never comes
    back into it: each lookup is O(1) amortised instead of a scan over every recent group.
    """

    def __init__(self, sources: set[str]) -> None:
        self._sources = sources
        self._lacking: dict[tuple[str, str, str], list[_Group]] = {}

    def add(self, group: _Group) -> None:
        for source in self._sources - {group.first.source}:
            self._lacking.setdefault((group.first.role, group.key, source), []).append(group)

    def take(self, entry: SourceEntry, key: str) -> _Group | None:
        """The recent group that already holds this line from the other sources, if any."""
        stack = self._lacking.get((entry.role, key, entry.source))
        if not stack:
            return None
        if entry.timestamp - stack[-1].first.timestamp > SAME_LINE_WINDOW:
            stack.clear()  # all older still: none can match this entry or any later one
            return None
        return stack.pop()


def _score(members: list[SourceEntry]) -> int | None:
    """Only the page reports scores; should two sources ever both score a line, the page's wins."""
    scored = [m for m in members if m.pronunciation_score is not None]
    best = min(scored, key=lambda m: (m.source != "page", m.source, m.seq), default=None)
    return None if best is None else best.pronunciation_score


def _text(members: list[SourceEntry]) -> str:
    """The relay's wording when it heard the line: the page's can be anything its visitor sends."""
    return next((m.text for m in members if m.source == "relay"), members[0].text)


def merge(entries: list[SourceEntry]) -> list[CanonicalEntry]:
    """Return the canonical transcript: each line once, in time order, with every source that reported it.

    The result depends only on the set of (source, seq) entries, never on their order or repetition:
    retries and interleavings give the same transcript.
    """
    unique = {(e.source, e.seq): e for e in sorted(entries, key=lambda e: (e.source, e.seq, e.timestamp))}
    ordered = sorted(unique.values(), key=lambda e: (e.timestamp, e.source, e.seq))
    groups: list[_Group] = []
    open_groups = _OpenGroups({e.source for e in ordered})
    for entry in ordered:
        key = normalise(entry.text)
        match = open_groups.take(entry, key)
        if match is None:
            group = _Group(key, [entry])
            groups.append(group)
            open_groups.add(group)
        else:
            match.members.append(entry)
    groups.sort(key=lambda group: (group.first.timestamp, group.first.source, group.first.seq))
    return [
        CanonicalEntry(
            seq=index,
            role=group.first.role,
            text=_text(group.members),
            timestamp=group.first.timestamp,
            sources=(sources := tuple(sorted({member.source for member in group.members}))),
            pronunciation_score=_score(group.members),
            verified=group.first.role != "Avatar" or "relay" in sources,
        )
        for index, group in enumerate(groups, start=1)
    ]
