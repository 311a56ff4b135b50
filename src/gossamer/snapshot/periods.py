"""Calendar periods of API quotas (hour, day, week, month), in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

PERIOD_SECONDS = {"hour": 3600, "day": 86400, "week": 604800, "month": 2592000}
"""A period's nominal length, for the RateLimit-Policy header's `w` (a month as 30 days)."""


def period_end(period: str, now: float) -> float:
    """When the calendar `period` (UTC) that holds `now` ends, in seconds since the epoch."""
    moment = datetime.fromtimestamp(now, UTC)
    if period == "hour":
        start = moment.replace(minute=0, second=0, microsecond=0)
        return (start + timedelta(hours=1)).timestamp()
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return (day + timedelta(days=1)).timestamp()
    if period == "week":
        return (day + timedelta(days=7 - day.weekday())).timestamp()
    first = day.replace(day=1)
    following = first.replace(year=first.year + 1, month=1) if first.month == 12 else None
    if following is None:
        following = first.replace(month=first.month + 1)
    return following.timestamp()
