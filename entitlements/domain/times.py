"""Times, read and written in one place: every time the domain, its doors and its stores
hand over becomes an aware UTC datetime here, and leaves as ISO 8601 text here.

Why one module: a time read two ways is two answers to one question (a naive time taken
as local in one place and as UTC in another), and the error a person reads for a bad
time should be the same sentence whichever door they used.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, TypeAlias

#: A time as a caller may give it to a check, an audit or an export: an aware datetime, ISO
#: 8601 text, or None (the default: now, or everything recorded).
When: TypeAlias = datetime | str | None


def short_repr(value: Any, limit: int = 40) -> str:
    """A value's repr for an error message: escaped, so it stays one line, and never huge."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_time(value: Any) -> datetime:
    """ISO 8601 -> aware UTC datetime. A bare date is 00:00 UTC; no offset means UTC.
    Only the years 1900-9999 once in UTC: beyond them the offset overflows (or a store
    refuses), so such a time is a ValueError, never an OverflowError."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{short_repr(value)} is not an ISO 8601 date or time") from None
    else:
        raise ValueError(f"{short_repr(value)} is not an ISO 8601 date or time")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        dt = dt.astimezone(UTC)
    except OverflowError:  # the offset pushes it before year 1 or past 9999
        raise ValueError(
            "before the year 1900" if dt.year < 5000 else "after the year 9999"
        ) from None
    if dt.year < 1900:
        raise ValueError("before the year 1900")
    return dt


def parse_when(field_name: str, value: When) -> datetime | None:
    """A time the caller gave, as aware UTC; a bad one is a ValueError naming the field."""
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as e:
        raise ValueError(f"{field_name}: {e}") from None


def aware(field_name: str, value: datetime | str) -> datetime:
    """`parse_when`, but an aware datetime passes as it is (the check path's shortcut: an
    aware time names one instant whatever its offset, and most checks give one)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value
    parsed = parse_when(field_name, value)
    assert parsed is not None  # (a value was given)
    return parsed


def stored_utc(value: datetime) -> datetime:
    """A time a database hands back, as aware UTC (SQLite gives naive datetimes back:
    they were written in UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(t: datetime) -> str:
    """Times as people and JSON read them: ISO 8601 in UTC, 'Z' for the zero offset."""
    return t.isoformat().replace("+00:00", "Z")


def now() -> datetime:
    return datetime.now(UTC)


#: The zero of the check index's integer times (and a stand-in's times).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
