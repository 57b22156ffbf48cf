"""Time stamps of a series: order, the regular frequency, the next stamps and the row a
date falls on. Frequencies are ISO 8601 durations: "P1D", "PT1H", "PT15M", "PT0.5S", or
calendar months "P1M", "P3M", "P1Y". Stamps are numpy datetime64."""
import re

import numpy as np

from engine.series.base import DataError

_MICROSECONDS = (("D", 86_400_000_000), ("H", 3_600_000_000), ("M", 60_000_000))
_DURATION = re.compile(r"^P(?:(\d+)Y|(\d+)M|(\d+)D|T(?:(\d+)H|(\d+)M|(\d+(?:\.\d+)?)S))$")


def first_out_of_order(stamps):
    """The first row whose stamp is not after the one before it, or None."""
    later = stamps[1:] > stamps[:-1]
    return None if later.all() else int(np.argmin(later)) + 1


def infer_frequency(stamps):
    """The frequency of (T,) increasing stamps spaced evenly (fixed, or in calendar months
    at the same day and time of the month), or None (irregular, or fewer than 2 stamps)."""
    if len(stamps) < 2:
        return None
    micro = stamps.astype("datetime64[us]")
    steps = np.diff(micro.astype(np.int64))
    if (steps == steps[0]).all():
        return _fixed(int(steps[0]))
    months = micro.astype("datetime64[M]")
    offsets = micro - months.astype("datetime64[us]")
    counts = np.diff(months.astype(np.int64))
    if (offsets == offsets[0]).all() and (counts == counts[0]).all():
        count = int(counts[0])
        return f"P{count // 12}Y" if count % 12 == 0 else f"P{count}M"
    return None


def _fixed(microseconds):
    for unit, size in _MICROSECONDS:
        if microseconds % size == 0:
            return f"P{microseconds // size}D" if unit == "D" else f"PT{microseconds // size}{unit}"
    return f"PT{microseconds / 1e6:g}S"


def next_stamps(last, frequency, steps):
    """The `steps` stamps after `last` at `frequency` (a string from infer_frequency)."""
    match = _DURATION.match(frequency or "")
    if match is None:
        raise DataError(f"unknown frequency {frequency!r}")
    years, months, days, hours, minutes, seconds = match.groups()
    ahead = np.arange(1, steps + 1)
    if years or months:
        last = np.datetime64(last, "us")
        start = last.astype("datetime64[M]")
        offset = last - start.astype("datetime64[us]")
        count = int(years) * 12 if years else int(months)
        return (start + ahead * count).astype("datetime64[us]") + offset
    step = (int(days) * 86_400e6 if days else int(hours) * 3_600e6 if hours
            else int(minutes) * 60e6 if minutes else float(seconds) * 1e6)
    return np.datetime64(last, "us") + (ahead * round(step)).astype("timedelta64[us]")


def describe(stamps, name):
    """The data recipe's record of a time column: name, first and last stamp, frequency."""
    return {"column": name, "first": str(stamps[0]), "last": str(stamps[-1]),
            "frequency": infer_frequency(stamps)}


def row_at(stamps, when):
    """The first row at or after `when` (a date string, datetime or datetime64)."""
    try:
        moment = np.datetime64(when)
    except ValueError:
        raise DataError(f"from: expected a row number or a date/time such as 2024-03-01; "
                        f"got {when!r}") from None
    row = int(np.searchsorted(stamps.astype("datetime64[us]"), moment.astype("datetime64[us]")))
    if row == len(stamps):
        raise DataError(f"from: {when} is after the last time of the series ({stamps[-1]})")
    return row
