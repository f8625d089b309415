"""Which days' features are out of date because a day they look back at was loaded again.

A day's features read the ``lookback_days`` days before it (the route's late rates of the week
before, say). When one of those days is loaded again (a corrected landing file), the features
of the days after it were computed from rows that are gone; the day itself reruns with its own
load.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

# When something was written: any stamp that increases with every write (the Dagster event
# log's storage ids, say).
Written = Mapping[dt.date, int]


def days_reading_newer_inputs(inputs: Iterable[Written], features: Written,
                              lookback_days: int) -> list[dt.date]:
    """The days with features whose look-back window (the ``lookback_days`` days before each,
    not the day itself) holds an input written after the day's features, oldest first.

    ``inputs`` holds, per input, when each of its days was last written; ``features`` when
    each day's features were. A day without features is never returned."""
    stale: set[dt.date] = set()
    for written in inputs:
        for day, stamp in written.items():
            for offset in range(1, lookback_days + 1):
                later = day + dt.timedelta(days=offset)
                if later in features and features[later] < stamp:
                    stale.add(later)
    return sorted(stale)


def days_looking_back_at(days: Iterable[dt.date], lookback_days: int) -> set[dt.date]:
    """The days that read any of ``days``: each of them and the ``lookback_days`` after it."""
    return {day + dt.timedelta(days=offset) for day in days
            for offset in range(lookback_days + 1)}
