"""Calendar features of time stamps, encoded as sin/cos pairs (computed from the time
column, never read), and the calendar features and seasonal lags that suit a frequency."""
import re

import numpy as np

from engine.series import DataError, zones

_DAY_US = 86_400_000_000
# feature -> what it measures; each becomes NAME_sin and NAME_cos
FEATURES = {
    "minute": "minute of the hour (period 60)",
    "hour": "hour of the day, minutes included (period 24)",
    "weekday": "day of the week, Monday 0 (period 7)",
    "monthday": "day of the month (period: the month's length)",
    "dayofyear": "day of the year (period: the year's length)",
    "weekofyear": "week of the year, day of the year / 7 (period: the year's length / 7)",
    "month": "month of the year (period 12)",
}


def encode(stamps, zone, features):
    """stamps (T,) UTC instants (datetime64) of the zone `zone` -> (T, 2 * len(features))
    float64: sin and cos of 2 pi (position / period) of each feature in wall time."""
    local = zones.to_local(stamps, zone)
    day = local.astype("datetime64[D]")
    month = local.astype("datetime64[M]")
    year = local.astype("datetime64[Y]")
    days_in_month = ((month + 1).astype("datetime64[D]") - month.astype("datetime64[D]")).astype(np.float64)
    days_in_year = ((year + 1).astype("datetime64[D]") - year.astype("datetime64[D]")).astype(np.float64)
    of_day = (local - day.astype("datetime64[us]")).astype(np.int64) / _DAY_US   # 0 <= . < 1
    day_of_year = (day - year.astype("datetime64[D]")).astype(np.float64)
    positions = {   # feature -> (position, period)
        "minute": (of_day * 1440 % 60, 60.0),
        "hour": (of_day * 24, 24.0),
        "weekday": ((day.astype(np.int64) + 3) % 7, 7.0),   # 1970-01-01 was a Thursday
        "monthday": ((day - month.astype("datetime64[D]")).astype(np.float64), days_in_month),
        "dayofyear": (day_of_year, days_in_year),
        "weekofyear": (day_of_year / 7, days_in_year / 7),
        "month": ((month.astype(np.int64) % 12).astype(np.float64), 12.0),
    }
    columns = []
    for name in features:
        position, period = positions[name]
        angle = 2 * np.pi * position / period
        columns += [np.sin(angle), np.cos(angle)]
    return np.stack(columns, axis=1) if columns else np.empty((len(local), 0))


def names(features):
    """The input column names of encode's output: NAME_sin, NAME_cos per feature."""
    return [f"{name}_{part}" for name in features for part in ("sin", "cos")]


def parse(spec, frequency, has_time):
    """--calendar: "none" / None (no features), "auto" (those suiting the frequency), or a
    list of FEATURES separated by commas (or "+", as a sweep's --space writes them). A feature needs a time column of dates."""
    if spec is None or spec == "none" or spec == []:
        return []
    if spec == "auto":
        return list(suited_features(frequency)) if has_time else []
    chosen = [token.strip() for token in spec.replace("+", ",").split(",")] if isinstance(spec, str) else list(spec)
    unknown = [name for name in chosen if name not in FEATURES]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise DataError(f"calendar: expected distinct features among {', '.join(FEATURES)} (or auto, none); "
                        f"got {spec!r}")
    if not has_time:
        raise DataError(f"calendar {','.join(chosen)}: needs a time column of dates or times in the data "
                        "(give --time-column, or drop --calendar)")
    return chosen


def suited_features(frequency):
    """The calendar features worth giving a model of data at `frequency` (ISO 8601 string)."""
    minutes = _minutes(frequency)
    if minutes is not None and minutes < 60:
        return ("minute", "hour", "weekday") if 60 % minutes == 0 and minutes < 15 else ("hour", "weekday")
    if minutes is not None and minutes < 1440:
        return ("hour", "weekday")
    if minutes is not None and minutes == 1440 or (frequency or "").startswith("P1D"):
        return ("weekday", "dayofyear")
    if minutes is not None and minutes == 7 * 1440:
        return ("weekofyear",)
    if re.match(r"^P[13]M", frequency or ""):
        return ("month",)
    return ()


def suited_lags(frequency):
    """The seasonal lag (in steps) of data at `frequency`: a day for data within a day
    (hourly: 24; a week where a day is no whole number of steps), a week for daily data
    (business days: 5), a year for weekly (52), monthly (12) and quarterly (4) data; none
    otherwise. Data within a day gets no week lag beside the day: its weekday calendar
    feature carries a weekly pattern, and the lag's H more inputs cost the quality
    benchmark's hourly members 3-4% (docs/performance.md#forecast-quality)."""
    minutes = _minutes(frequency)
    if minutes is not None and minutes < 1440:
        return next(((period // minutes,) for period in (1440, 10_080) if period % minutes == 0), ())
    if frequency == "P1D/business":
        return (5,)
    if minutes == 1440:
        return (7,)
    if minutes == 7 * 1440:
        return (52,)
    return {"P1M": (12,), "P1M/end": (12,), "P3M": (4,), "P3M/end": (4,)}.get(frequency, ())


def _minutes(frequency):
    """A fixed frequency in whole minutes (days and weeks included), else None."""
    match = re.match(r"^P(?:(\d+)D|T(?:(\d+)H|(\d+)M))$", frequency or "")
    if match is None:
        return None
    days, hours, minutes = match.groups()
    return int(days) * 1440 if days else int(hours) * 60 if hours else int(minutes)
