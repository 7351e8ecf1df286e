"""Transcript as text or Markdown, in the same shapes as the Socket SDK's getTranscriptText. Pure."""

from __future__ import annotations

from server.transcripts.merge import CanonicalEntry


def _prefix(entry: CanonicalEntry, timestamps: bool) -> str:
    return f"[{entry.timestamp.isoformat().replace('+00:00', 'Z')}] " if timestamps else ""


def _speaker(entry: CanonicalEntry) -> str:
    return entry.role if entry.verified else f"{entry.role} (unverified)"


def as_text(entries: list[CanonicalEntry], timestamps: bool = False) -> str:
    return "\n".join(f"{_prefix(e, timestamps)}{_speaker(e)}: {e.text}" for e in entries)


def as_markdown(entries: list[CanonicalEntry], timestamps: bool = False) -> str:
    return "\n\n".join(f"{_prefix(e, timestamps)}**{_speaker(e)}:** {e.text}" for e in entries)
