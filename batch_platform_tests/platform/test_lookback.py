"""The days whose features look back at a day loaded again after them."""

from __future__ import annotations

import datetime as dt

from batch_platform.platform.features.lookback import (
    days_looking_back_at,
    days_reading_newer_inputs,
)


def day(n: int) -> dt.date:
    return dt.date(2013, 1, n)


# The slice's history in the order it was written: raw then features of 01-01..21 in one run,
# then the third week again, raw before features.
RAW = {**{day(n): n for n in range(1, 22)}, **{day(n): 100 + n for n in range(15, 22)}}
FEATURES = {**{day(n): 50 + n for n in range(1, 22)}, **{day(n): 200 + n for n in range(15, 22)}}


def test_nothing_is_stale_when_every_day_was_loaded_before_the_features_after_it() -> None:
    assert days_reading_newer_inputs([RAW], FEATURES, 7) == []


def test_a_day_loaded_again_makes_the_days_that_look_back_at_it_stale() -> None:
    raw = RAW | {day(10): 300}  # 01-10 corrected, raw to reports (its own features after it)
    features = FEATURES | {day(10): 301}
    assert days_reading_newer_inputs([raw], features, 7) == [day(n) for n in range(11, 18)]
    assert days_reading_newer_inputs([raw], features, 2) == [day(11), day(12)]
    assert days_reading_newer_inputs([raw], features, 0) == []
    # Once those days' features are written again, nothing more.
    rerun = features | {day(n): 400 + n for n in range(11, 18)}
    assert days_reading_newer_inputs([raw], rerun, 7) == []


def test_only_days_with_features_and_every_input_counts() -> None:
    # 01-19 loaded again: 01-20 and 01-21 have features, 01-22..26 none (not yet, or past the
    # partitions' end).
    raw = RAW | {day(19): 300}
    assert days_reading_newer_inputs([raw], FEATURES, 7) == [day(20), day(21)]
    # Another source of 01-05 loaded again (the weather), the rows source not.
    weather = {day(5): 500}
    assert days_reading_newer_inputs([RAW, weather], FEATURES, 2) == [day(6), day(7)]


def test_a_day_that_arrived_late_makes_the_days_loaded_before_it_stale() -> None:
    # 01-03 landed after 01-04: 01-04's features were computed without it.
    raw = {day(1): 1, day(2): 2, day(4): 3, day(3): 5}
    features = {day(1): 1, day(2): 2, day(4): 4, day(3): 6}
    assert days_reading_newer_inputs([raw], features, 7) == [day(4)]


def test_the_days_looking_back_at_a_day_are_it_and_the_lookback_days_after_it() -> None:
    assert days_looking_back_at([day(10)], 2) == {day(10), day(11), day(12)}
    assert days_looking_back_at([day(10), day(11)], 1) == {day(10), day(11), day(12)}
    assert days_looking_back_at([], 7) == set()
