"""Billing-period arithmetic: periods are counted from the subscription's billing anchor.

Computing every boundary from the anchor (rather than from the previous boundary) keeps a
subscription anchored on the 31st on month-ends instead of drifting to the 28th forever.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from typing import Any

Json = dict[str, Any]
DAY = 86_400


def add_interval(anchor: int, interval: str, count: int) -> int:
    """``anchor`` moved by ``count`` intervals (``day``/``week``/``month``/``year``)."""
    if interval == "day":
        return anchor + count * DAY
    if interval == "week":
        return anchor + count * 7 * DAY
    months = count * (12 if interval == "year" else 1)
    start = datetime.fromtimestamp(anchor, UTC)
    total = start.month - 1 + months
    year, month = start.year + total // 12, total % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return int(start.replace(year=year, month=month, day=day).timestamp())


def period(anchor: int, recurring: Json, index: int) -> tuple[int, int]:
    """The ``index``-th billing period after ``anchor`` as ``(start, end)``."""
    step = int(recurring["interval_count"])
    interval = str(recurring["interval"])
    return (
        add_interval(anchor, interval, step * index),
        add_interval(anchor, interval, step * (index + 1)),
    )
