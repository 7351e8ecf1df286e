"""Transcript as text or Markdown (the shapes of the Socket SDK's getTranscriptText), or JSON. Pure."""

from __future__ import annotations

import json

from server.transcripts.merge import CanonicalEntry


def _prefix(entry: CanonicalEntry, timestamps: bool) -> str:
    return f"[{entry.timestamp.isoformat().replace('+00:00', 'Z')}] " if timestamps else ""


def _speaker(entry: CanonicalEntry) -> str:
    return entry.role if entry.verified else f"{entry.role} (unverified)"


def as_text(entries: list[CanonicalEntry], timestamps: bool = False) -> str:
    return "\n".join(f"{_prefix(e, timestamps)}{_speaker(e)}: {e.text}" for e in entries)


def as_markdown(entries: list[CanonicalEntry], timestamps: bool = False) -> str:
    return "\n\n".join(f"{_prefix(e, timestamps)}**{_speaker(e)}:** {e.text}" for e in entries)


def as_json(conversation_id: str, entries: list[CanonicalEntry]) -> str:
    """The same shape as the REST API's transcript: {session_id, entries: [{seq, role, text, ...}]}."""
    lines = [
        {
            "seq": e.seq,
            "role": e.role,
            "text": e.text,
            "timestamp": e.timestamp.isoformat().replace("+00:00", "Z"),
            "sources": list(e.sources),
            "pronunciation_score": e.pronunciation_score,
            "verified": e.verified,
        }
        for e in entries
    ]
    return json.dumps({"session_id": conversation_id, "entries": lines}, ensure_ascii=False, indent=2)
