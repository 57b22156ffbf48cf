"""Time stamps of a series: order, the frequency, gaps, the next stamps and the row a
`--from` value names. Stamps are numpy datetime64 UTC instants with the zone of the data
beside them (engine/series/zones.py: None for plain stamps); calendar steps and whole
days are counted in the zone's wall time, shorter fixed steps in UTC.

Frequencies are ISO 8601 durations, "P1D", "PT1H", "PT15M", "PT0.5S", calendar months
"P1M", "P3M", "P1Y" (the same day of the month and time: month and quarter starts too),
optionally anchored: "P1M/end", "P3M/end", "P1Y/end" (the last day of the month, at the
same time: month, quarter and year ends) and "P1D/business" (Monday to Friday, at the
same time). Checkpoints store these strings; the older plain forms read the same."""
import datetime as dt
import re
import warnings
from typing import NamedTuple

import numpy as np

from engine.series import zones
from engine.series.base import DataError

_DAY = 86_400_000_000   # microseconds
_MICROSECONDS = (("D", _DAY), ("H", 3_600_000_000), ("M", 60_000_000))
_DURATION = re.compile(r"^P(?:(\d+)Y|(\d+)M|(\d+)D|T(?:(\d+)H|(\d+)M|(\d+(?:\.\d+)?)S))(?:/(end|business))?$")
_ROW = re.compile(r"^[+-]?\d+$")
_FIRST_DAY = np.datetime64("0001-01-01", "us")


class GapWarning(UserWarning):
    """The time column skips steps (missing rows) or departs from its frequency."""


def first_out_of_order(stamps):
    """The first row whose stamp is not after the one before it, or None."""
    later = stamps[1:] > stamps[:-1]
    return None if later.all() else int(np.argmin(later)) + 1


# ---------------------------------------------------------------- steps of each kind
# Each kind advances times (datetime64[us]: wall times, or UTC instants for fixed steps
# under a day) by `count` of its steps, elementwise.

def _fixed_step(local, count):
    return local + np.asarray(count).astype("timedelta64[us]")


def _months(local, count):   # the same day of the month and time
    month = local.astype("datetime64[M]")
    return (month + count).astype("datetime64[us]") + (local - month.astype("datetime64[us]"))


def _month_ends(local, count):   # the same distance before the end of the month
    month = local.astype("datetime64[M]")
    return (month + count + 1).astype("datetime64[us]") + (local - (month + 1).astype("datetime64[us]"))


def _business_days(local, count):   # Monday to Friday, the same time of day
    day = local.astype("datetime64[D]")
    moved = np.busday_offset(day, count, roll="forward")
    return moved.astype("datetime64[us]") + (local - day.astype("datetime64[us]"))


def _month_counts(local):
    return np.diff(local.astype("datetime64[M]").astype(np.int64))


def _business_counts(local):
    days = local.astype("datetime64[D]")
    return np.busday_count(days[:-1], days[1:])


# kind -> (advance, counts of steps between consecutive stamps), tried in this order
_KINDS = {"fixed": (_fixed_step, lambda local: np.diff(local.astype(np.int64))),
          "end": (_month_ends, _month_counts), "months": (_months, _month_counts),
          "business": (_business_days, _business_counts)}


class Spacing(NamedTuple):
    """frequency: the string of the step most pairs of consecutive stamps follow (None:
    no step covers most of them, or fewer than 2 stamps); irregular: how many pairs are
    not one step apart (missing rows, uneven steps); first: the row after the first such
    pair, or None."""
    frequency: str
    irregular: int
    first: int


def spacing(stamps, zone=None):
    """The Spacing of (T,) increasing stamps (UTC instants of the zone `zone`): the kind
    of step (fixed, calendar month or month end, business day) and count that most pairs
    follow exactly, the one covering the most pairs winning (ties: the order of _KINDS).
    Fixed steps under a day are counted in UTC (an hour is an hour across a clock
    change), whole days and calendar steps in the zone's wall time."""
    if stamps is None or len(stamps) < 2:
        return Spacing(None, 0, None)
    instants = np.asarray(stamps).astype("datetime64[us]")
    local = zones.to_local(instants, zone)
    best = None   # (covered pairs, kind, count, one-step mask)
    for kind, (advance, counts) in _KINDS.items():
        if not _applies(kind, local):
            continue
        count = _typical(counts(instants if kind == "fixed" else local))
        if count is None:
            continue
        times = instants if kind == "fixed" and count % _DAY else local
        one_step = advance(times[:-1], count) == times[1:]
        covered = int(one_step.sum())
        if best is None or covered > best[0]:
            best = (covered, kind, count, one_step)
        if covered == len(one_step):
            break   # every pair one step apart: no later kind covers more
    if best is None or 2 * best[0] <= len(local) - 1:
        return Spacing(None, 0, None)
    covered, kind, count, one_step = best
    irregular = len(one_step) - covered
    return Spacing(_name(kind, count), irregular, None if not irregular else int(np.argmin(one_step)) + 1)


def infer_frequency(stamps, zone=None):
    """The frequency string of `stamps` (see spacing), or None."""
    return spacing(stamps, zone).frequency


def _typical(counts):
    """The count most of `counts` (steps between consecutive stamps) share, if one covers
    more than half of the positive ones: their median (O(T), no sort); None if none is
    positive."""
    counts = counts[counts > 0]
    if counts.size == 0:
        return None
    return int(np.partition(counts, counts.size // 2)[counts.size // 2])


def _applies(kind, local):
    """Whether every stamp is on a day the kind of step lands on: month ends on the last
    day of a month (so a step of 12 months from 1 January stays "P1Y"), business days on
    Monday to Friday."""
    day = local.astype("datetime64[D]")
    if kind == "end":
        return bool(((day + 1).astype("datetime64[M]") != day.astype("datetime64[M]")).all())
    if kind == "business":
        return bool(np.is_busday(day).all())
    return True


def _name(kind, count):
    if kind == "fixed":
        return _fixed(count)
    if kind == "business":
        return f"P{count}D/business"
    months = f"P{count // 12}Y" if count % 12 == 0 else f"P{count}M"
    return months + ("/end" if kind == "end" else "")


def _fixed(microseconds):
    for unit, size in _MICROSECONDS:
        if microseconds % size == 0:
            return f"P{microseconds // size}D" if unit == "D" else f"PT{microseconds // size}{unit}"
    return f"PT{microseconds / 1e6:g}S"


def next_stamps(last, frequency, steps, zone=None):
    """The `steps` stamps after `last` (a UTC instant of zone `zone`) at `frequency` (a
    string from infer_frequency), as UTC instants datetime64[us]."""
    match = _DURATION.match(frequency or "")
    if match is None:
        raise DataError(f"unknown frequency {frequency!r}")
    years, months, days, hours, minutes, seconds, anchor = match.groups()
    ahead = np.arange(1, steps + 1)
    local = np.full(steps, zones.to_local(np.datetime64(last, "us"), zone))
    if years or months:
        count = int(years) * 12 if years else int(months)
        advance = _month_ends if anchor == "end" else _months
        return zones.to_utc(advance(local, ahead * count), zone)
    if anchor == "business":
        return zones.to_utc(_business_days(local, ahead * int(days or 1)), zone)
    if days:   # whole days in wall time
        return zones.to_utc(_fixed_step(local, ahead * int(days) * _DAY), zone)
    step = int(hours) * 3_600e6 if hours else int(minutes) * 60e6 if minutes else float(seconds) * 1e6
    return _fixed_step(np.full(steps, np.datetime64(last, "us")), ahead * round(step))   # in UTC


def describe(stamps, name, zone=None):
    """The data recipe's record of a time column: name, first and last stamp (in the
    zone, with its offset), frequency, and "zone" for stamps that have one."""
    first, last = zones.labels(stamps[[0, -1]], zone) if zone is not None else map(str, stamps[[0, -1]])
    record = {"column": name, "first": first, "last": last, "frequency": infer_frequency(stamps, zone)}
    return record if zone is None else {**record, "zone": zone}


def warn_gaps(stamps, zone, where):
    """One GapWarning when the stamps skip steps or depart from their frequency: how many
    pairs, the first, and the frequency kept. where: the source and column, for the message."""
    found = spacing(stamps, zone)
    if found.irregular:
        after = zones.labels(stamps[[found.first - 1]], zone)[0]
        warnings.warn(f"{where}: {found.irregular} gap(s) or uneven step(s) in the time stamps, the first "
                      f"after {after}; the frequency {found.frequency} of the other steps is used",
                      GapWarning, stacklevel=2)


# ---------------------------------------------------------------- --from

def start_row(start, length, stamps=None, zone=None, source="the series"):
    """The first row (0..length) that `start` names, length when it names none:

    None: 0. A row number (int, or text of one): >= 0 that row; negative counts from the
    end, -5 naming the last 5 rows (before the first row: 0). A date/time (text,
    datetime, datetime64): the first row whose stamp is at or after it (its wall time in
    the data's zone; text with an offset such as +05:00 or Z is converted); dates before
    the year 1 are not accepted. Errors: empty text, a date for data without stamps."""
    if start is None:
        return 0
    if isinstance(start, str) and not start.strip():
        raise DataError("from: the value is empty; give a row number (0, or -5 for the last 5 rows) "
                        "or a date/time such as 2024-03-01")
    if is_row(start):
        start = int(start)
        return start if start >= 0 else max(length + start, 0)
    if stamps is None:
        raise DataError(f"from: {source} has no time column of dates; give a row number (0..{length - 1}, "
                        "or negative from the end)")
    moment = _moment(start, zone)
    return int(np.searchsorted(np.asarray(stamps).astype("datetime64[us]"), moment))


def checked_start_row(start, length, stamps=None, zone=None, source="the series", name="the series"):
    """start_row, for a `start` that must name one of the `length` rows of `name`: a row
    number outside them, or a time after the last stamp, is an error."""
    row = start_row(start, length, stamps, zone, source)
    if is_row(start) and not -length <= int(start) < length:
        raise DataError(f"from: row {start} is outside {name} (rows 0..{length - 1}, or -{length}..-1 "
                        "from the end)")
    if row >= length:
        last = zones.labels(np.asarray(stamps)[-1:], zone)[0]
        raise DataError(f"from: {start} is after the last time of {name} ({last})")
    return row


def is_row(start):
    """Whether a --from value names a row (an int, or the text of one) rather than a time."""
    if isinstance(start, str):
        return bool(_ROW.match(start.strip()))
    return isinstance(start, (int, np.integer)) and not isinstance(start, bool)


def _moment(when, zone):
    """A --from date/time as a UTC instant datetime64[us]."""
    text = when if isinstance(when, str) else None
    given_zone = None
    if text is not None:
        text, given_zone = zones.split_offset(text)
    elif getattr(when, "tzinfo", None) is not None:   # an aware datetime: its UTC instant
        when, given_zone = when.astimezone(dt.timezone.utc).replace(tzinfo=None), "UTC"
    try:
        moment = np.datetime64(text if text is not None else when, "us")
    except (ValueError, TypeError, OverflowError):
        raise DataError(f"from: expected a row number or a date/time such as 2024-03-01; "
                        f"got {when!r}") from None
    if np.isnat(moment) or moment < _FIRST_DAY:
        raise DataError(f"from: {when!r} is not a date from the year 1 on; give a date/time such as "
                        "2024-03-01, or a row number (negative from the end)")
    if given_zone is not None:
        if zone is None:
            raise DataError(f"from: {when!r} has a zone offset, but the time column has none; "
                            "drop the offset")
        return zones.to_utc(moment, given_zone)
    return zones.to_utc(moment, zone)
