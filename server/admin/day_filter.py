"""The since/until day filter the console's listings share: UTC days typed as YYYY-MM-DD, checked alike."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

BAD_DAY = "Enter a date as YYYY-MM-DD. For example 2026-01-31."


def _day(name: str, text: str, errors: dict[str, str]) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors[name] = BAD_DAY
        return None


def day_span(since: str, until: str, errors: dict[str, str]) -> tuple[datetime | None, datetime | None]:
    """From the start of `since` to the end of `until` (both UTC, either may be empty); a problem is put in
    `errors` beside its field, and the span is then not to be used."""
    first, last = _day("since", since, errors), _day("until", until, errors)
    if first and last and last < first:
        errors["until"] = "The end date is before the start date."
    return (
        datetime.combine(first, time(), UTC) if first else None,
        datetime.combine(last + timedelta(days=1), time(), UTC) if last else None,
    )
