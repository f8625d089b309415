"""Daily partitions over the flights year, in the data's own time zone."""

import dagster as dg

FIRST_DAY = "2013-01-01"
END_EXCLUSIVE = "2014-01-01"
DATA_TIMEZONE = "America/New_York"
# Tag on every asset a day's run materializes: select them with `tag:flow=daily`.
DAILY_FLOW_TAG = "flow"

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=FIRST_DAY, end_date=END_EXCLUSIVE, timezone=DATA_TIMEZONE
)
