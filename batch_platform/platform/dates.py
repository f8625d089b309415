"""Days: the unit of every partition."""

from __future__ import annotations

import datetime as dt


def days_between(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every day from ``start`` to ``end``, both included."""
    if end < start:
        raise ValueError(f"range end {end} is before its start {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
