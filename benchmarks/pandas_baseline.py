"""The script a user would write by hand: pandas reads the day, builds the features, predicts,
and inserts into DuckDB. No validation, no quarantine, no lineage, no explanations.

It builds the same features as ``batch_platform.platform.features.spec`` (the benchmark compares its
scores with the platform's), so the comparison is of plumbing, not of models.

    python benchmarks/pandas_baseline.py LANDING_DIR DAY MODEL_FILE THRESHOLD OUT_DUCKDB
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time

import duckdb
import lightgbm as lgb
import numpy as np
import pandas as pd

LATE = 15
WEATHER = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip",
           "pressure", "visib"]


def minutes(hhmm: pd.Series) -> pd.Series:
    return (hhmm // 100) * 60 + hhmm % 100


def main(landing: str, day_text: str, model_file: str, threshold: float, out: str) -> None:
    started = time.perf_counter()
    day = dt.date.fromisoformat(day_text)
    previous = day - dt.timedelta(days=1)
    flights = pd.read_csv(f"{landing}/flights/{day}.csv")
    before = pd.read_csv(f"{landing}/flights/{previous}.csv")
    weather = pd.read_csv(f"{landing}/weather/{day}.csv")
    planes = pd.read_csv(f"{landing}/reference/planes.csv")
    booster = lgb.Booster(model_file=model_file)

    f = flights
    f["flight_id"] = (day.strftime("%Y%m%d") + "-" + f["carrier"] + f["flight"].astype(str)
                      + "-" + f["origin"] + "-" + f["sched_dep_time"].astype(str).str.zfill(4))
    f["month"] = day.month
    f["day_of_week"] = day.isoweekday()
    f["sched_dep_minute"] = minutes(f["sched_dep_time"])
    f["sched_arr_minute"] = minutes(f["sched_arr_time"])
    f["sched_duration_minutes"] = (f["sched_arr_minute"] - f["sched_dep_minute"]) % 1440
    f["origin_flights_scheduled_hour"] = f.groupby(["origin", "hour"])["origin"].transform("size")
    f["origin_flights_scheduled_day"] = f.groupby("origin")["origin"].transform("size")

    w = weather.drop_duplicates(["origin", "time_hour"])[["origin", "time_hour", *WEATHER]]
    f = f.merge(w, on=["origin", "time_hour"], how="left")
    p = planes.drop_duplicates("tailnum")[["tailnum", "year", "seats", "engines"]].rename(
        columns={"year": "plane_year", "seats": "plane_seats", "engines": "plane_engines"})
    f = f.merge(p, on="tailnum", how="left")
    f["plane_age"] = day.year - f["plane_year"]

    before["late"] = (before["arr_delay"] > LATE).astype(float).where(before["arr_delay"].notna())
    before["cancelled"] = before["dep_time"].isna().astype(float)
    by_origin = before.groupby("origin").agg(
        prev_day_origin_late_rate=("late", "mean"),
        prev_day_origin_mean_dep_delay=("dep_delay", "mean"),
        prev_day_origin_cancelled_rate=("cancelled", "mean")).reset_index()
    by_carrier = before.groupby("carrier").agg(
        prev_day_carrier_late_rate=("late", "mean")).reset_index()
    f = f.merge(by_origin, on="origin", how="left").merge(by_carrier, on="carrier", how="left")

    names = booster.feature_name()
    levels = dict(zip(["carrier", "origin", "dest"], booster.pandas_categorical, strict=True))
    columns = []
    for name in names:
        if name in levels:
            codes = pd.Categorical(f[name], categories=levels[name]).codes.astype(np.float64)
            codes[codes < 0] = np.nan
            columns.append(codes)
        else:
            columns.append(f[name].to_numpy(dtype=np.float64, na_value=np.nan))
    matrix = np.ascontiguousarray(np.column_stack(columns))
    scores = booster.predict(matrix)

    result = pd.DataFrame({"flight_id": f["flight_id"], "partition_date": day, "score": scores,
                           "label": scores >= threshold})
    con = duckdb.connect(out)
    try:
        con.execute("CREATE TABLE IF NOT EXISTS predictions (flight_id VARCHAR, "
                    "partition_date DATE, score DOUBLE, label BOOLEAN)")
        con.execute("BEGIN")
        con.execute("DELETE FROM predictions WHERE partition_date = ?", [day])
        con.execute("INSERT INTO predictions SELECT * FROM result")
        con.execute("COMMIT")
    finally:
        con.close()
    print(json.dumps({"rows": len(result), "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5])
