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


@dataclass(frozen=True)
class CanonicalEntry:
    seq: int
    role: str
    text: str
    timestamp: datetime
    sources: tuple[str, ...]


_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Case, width, whitespace and edge punctuation do not make two lines different."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", folded).strip(" .,!?;:…\"'")


def _matching_group(groups: list[list[SourceEntry]], entry: SourceEntry) -> list[SourceEntry] | None:
    """The recent group that already holds this line from the other source, if any."""
    key = normalise(entry.text)
    for group in reversed(groups):
        first = group[0]
        if entry.timestamp - first.timestamp > SAME_LINE_WINDOW:
            return None
        if (
            first.role == entry.role
            and normalise(first.text) == key
            and entry.source not in {m.source for m in group}
        ):
            return group
    return None


def merge(entries: list[SourceEntry]) -> list[CanonicalEntry]:
    """Return the canonical transcript: each line once, in time order, with every source that reported it.

    The result depends only on the set of (source, seq) entries, never on their order or repetition:
    retries and interleavings give the same transcript.
    """
    unique = {(e.source, e.seq): e for e in sorted(entries, key=lambda e: (e.source, e.seq, e.timestamp))}
    ordered = sorted(unique.values(), key=lambda e: (e.timestamp, e.source, e.seq))
    groups: list[list[SourceEntry]] = []
    for entry in ordered:
        match = _matching_group(groups, entry)
        if match is None:
            groups.append([entry])
        else:
            match.append(entry)
    groups.sort(key=lambda group: (group[0].timestamp, group[0].source, group[0].seq))
    return [
        CanonicalEntry(
            seq=index,
            role=group[0].role,
            text=group[0].text,
            timestamp=group[0].timestamp,
            sources=tuple(sorted({member.source for member in group})),
        )
        for index, group in enumerate(groups, start=1)
    ]
