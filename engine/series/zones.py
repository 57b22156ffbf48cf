"""Time zones of time stamps. A series' stamps are kept as UTC instants (numpy
datetime64, increasing) with the zone of the data beside them: None (plain local stamps,
no zone), "UTC", a fixed offset "+05:00", or a named zone "Europe/Paris" (stdlib
zoneinfo). Calendar arithmetic (months, business days) and labels use the local wall
time of the zone; stamps written by the tool carry the zone's offset."""
import datetime as dt
import re

import numpy as np

from engine.series.base import DataError

_OFFSET = re.compile(r"^(?:Z|UTC|([+-])(\d{2}):?(\d{2}))$")
_SUFFIX = re.compile(r"(Z|[+-]\d{2}:?\d{2})$")
_SECOND = 1_000_000   # microseconds


def offset_of_text(text):
    """The zone offset written at the end of a stamp ("...+05:00", "...Z") as a zone name
    ("+05:00", "UTC"), or None when the stamp has none."""
    text = text.strip()
    match = _SUFFIX.search(text)
    if match is None or "T" not in text.upper() and " " not in text:
        return None
    return normalized(match.group(1))


def split_offset(text):
    """(stamp text without its offset, zone of the offset or None)."""
    zone = offset_of_text(text)
    return (text.strip() if zone is None else _SUFFIX.sub("", text.strip())), zone


def normalized(zone):
    """A zone name as kept: "UTC", "+05:00" (fixed offsets of any spelling), or a named zone."""
    if zone is None:
        return None
    match = _OFFSET.match(zone)
    if match is None:
        return zone
    sign, hours, minutes = match.groups()
    if sign is not None and (int(hours) > 23 or int(minutes) > 59):
        raise DataError(f"unknown time zone offset {zone!r}; offsets run from -23:59 to +23:59")
    if sign is None or int(hours) == int(minutes) == 0:
        return "UTC"
    return f"{sign}{hours}:{minutes}"


def to_local(stamps, zone):
    """UTC instants (datetime64) -> the zone's wall times, datetime64[us] without a zone."""
    stamps = np.asarray(stamps).astype("datetime64[us]")
    if zone is None:
        return stamps
    return stamps + offsets(stamps, zone).astype("timedelta64[us]")


def to_utc(local, zone):
    """The zone's wall times (datetime64) -> UTC instants, datetime64[us] (a wall time that
    a clock change skips or repeats takes the offset in force just before the change)."""
    local = np.asarray(local).astype("datetime64[us]")
    if zone is None:
        return local
    guess = local - offsets(local, zone).astype("timedelta64[us]")
    return local - offsets(guess, zone).astype("timedelta64[us]")


def offsets(stamps, zone):
    """(T,) int64 microseconds to add to UTC instants `stamps` for the zone's wall time."""
    stamps = np.asarray(stamps).astype("datetime64[us]").astype(np.int64)
    fixed = _fixed_offset(zone)
    if fixed is not None:
        return np.full(stamps.shape, fixed, dtype=np.int64)
    info = _zoneinfo(zone)
    if stamps.size == 0:
        return np.zeros(0, dtype=np.int64)
    # offsets change rarely: ask the zone at the start and end of each day holding a stamp,
    # and find a change within such a day to the second
    day = 86_400 * _SECOND
    first, last = int(stamps.min()) // day, int(stamps.max()) // day
    dense = last - first < stamps.size   # every day of the span, else only the days of the stamps
    starts = (np.arange(first, last + 1) if dense else np.unique(stamps // day)) * day
    points = np.unique(np.concatenate([starts, starts + day]))
    at_points = np.array([_offset_at(info, int(instant)) for instant in points])
    changes, values = [points[0]], [at_points[0]]
    for index in np.flatnonzero(at_points[1:] != at_points[:-1]):
        low, high = int(points[index]) // _SECOND, int(points[index + 1]) // _SECOND   # seconds
        if high - low == day // _SECOND:   # within a day of stamps: the first second of the new offset
            while high - low > 1:
                middle = (low + high) // 2
                same = _offset_at(info, middle * _SECOND) == at_points[index]
                low, high = (middle, high) if same else (low, middle)
        changes.append(high * _SECOND)   # (between days without stamps, anywhere will do)
        values.append(at_points[index + 1])
    return np.asarray(values, dtype=np.int64)[np.searchsorted(changes, stamps, side="right") - 1]


def labels(stamps, zone):
    """ISO 8601 text of UTC instants in the zone's wall time, without zero seconds
    (2024-03-01T06:00) and with the zone's offset when it has one (2024-03-01T06:00+05:00,
    2024-03-01T00:00+05:00); plain stamps all at midnight as dates (2024-03-01)."""
    stamps = np.asarray(stamps).astype("datetime64[us]")
    local = to_local(stamps, zone)
    text = [label.rstrip("0").rstrip(".") for label in np.datetime_as_string(local, unit="us")]   # 12:00:00.5
    if zone is None and all(label.endswith("T00:00:00") for label in text):
        return [label[:10] for label in text]
    text = [label[:-3] if label.endswith(":00") and len(label) == 19 else label for label in text]
    if zone is None:
        return text
    return [label + _offset_text(int(offset)) for label, offset in zip(text, offsets(stamps, zone))]


def check(zone):
    """A zone name of the data, normalized; DataError for an unknown one."""
    zone = normalized(zone)
    if zone is not None and _fixed_offset(zone) is None:
        _zoneinfo(zone)
    return zone


def _offset_text(microseconds):
    if microseconds == 0:
        return "Z"
    sign = "+" if microseconds > 0 else "-"
    minutes = abs(microseconds) // (60 * _SECOND)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _fixed_offset(zone):
    """Microseconds of a fixed-offset zone ("UTC", "+05:00"), None for a named zone."""
    match = _OFFSET.match(zone)
    if match is None:
        return None
    sign, hours, minutes = match.groups()
    if sign is None:
        return 0
    return (1 if sign == "+" else -1) * (int(hours) * 60 + int(minutes)) * 60 * _SECOND


def _zoneinfo(zone):
    import zoneinfo
    try:
        return zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise DataError(f"unknown time zone {zone!r}") from None


_EARLIEST, _LATEST = (int(np.datetime64(day, "us").astype(np.int64)) for day in ("0001-01-02", "9999-12-30"))


def _offset_at(info, microseconds):
    """The zone's offset (microseconds) at a UTC instant; the ends of the calendar take
    the offset of the day next to them (Python's datetime stops at the years 1 and 9999)."""
    microseconds = min(max(microseconds, _EARLIEST), _LATEST)
    instant = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=microseconds)
    return int(instant.astimezone(info).utcoffset() / dt.timedelta(microseconds=1))
