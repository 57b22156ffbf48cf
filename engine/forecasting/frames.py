"""Direct multi-horizon framing (docs/forecasting.md): the model's input at origin row t
and the targets it learns there, from a series and the roles of its columns.

Input at origin t, in this order (feature_names): the past inputs at t (the targets by
default; with differencing, target columns enter as changes); then for each step h = 1..H
the known inputs at t + h, the calendar features of t + h (sin/cos pairs) and, per lag L
and target, the target at t + h - L (a lag is at least H, so that value is observed at t;
missing values carried forward). Static per-series values come last (engine.forecasting
.statics appends them after scaling). Targets at t: the K = H * O entries
level[t + h, o] at column (h - 1) * O + o, NaN where missing or past the end. With
differencing, targets and lag values are taken relative to base[t], the last observed
target level at t, and forecasts are base[t] plus the model's output.
"""
from typing import NamedTuple

import numpy as np

from engine.data import _last_observed, fill_missing, select_columns
from engine.forecasting import calendar
from engine.series import DataError, times as time_stamps, zones


class Frames(NamedTuple):
    """x (N, I) raw dynamic features of origins `rows` (N,); y (N, K) target entries (relative
    to base with differencing); base (N, O) last observed target level at each origin; levels
    (T, O) the targets of every row of the series (NaN missing)."""
    x: np.ndarray
    y: np.ndarray
    base: np.ndarray
    rows: np.ndarray
    levels: np.ndarray


def feature_names(recipe):
    """The names of the model's input columns, in order: past inputs, then per step h
    NAME@t+h for known inputs, calendar features and lags (TARGET_lagL@t+h), then static."""
    names = [f"d({name})" if recipe["difference"] and name in recipe["targets"] else name
             for name in recipe["inputs"]]
    per_step = list(recipe["known"]) + calendar.names(recipe["calendar"]) + \
        [f"{target}_lag{lag}" for lag in recipe["lags"] for target in recipe["targets"]]
    for h in range(1, recipe["horizon"] + 1):
        names += [f"{name}@t+{h}" for name in per_step]
    return names + list(recipe["static"])


def first_origin(recipe):
    """The first row that can be an origin: every lag reaches back into the series, and
    differencing has a previous row."""
    return max(max(recipe["lags"], default=0) - 1, int(recipe["difference"]))


def frame_series(series, recipe, stamps=None, zone=None, end=None, where="the series"):
    """Frames of the origins first_origin(recipe) .. end - 1 of `series` (an engine Series;
    stamps (T,) its time stamps, UTC instants of `zone`, for calendar features). end None:
    the last row whose targets all lie in the series (T - H). Known inputs are read up to
    row end - 1 + H; calendar stamps past the last row follow the series' frequency.
    Missing past inputs and known inputs of observed rows are filled by the recipe's fill;
    a missing known input of a later row (the future) is an error naming its time."""
    check_columns(series, recipe)
    H, T = recipe["horizon"], len(series.values)
    end = T - H if end is None else end
    first = first_origin(recipe)
    if end <= first:
        raise DataError(f"{where} has {T} rows, too few for horizon {H}"
                        + (f" and lags {','.join(map(str, recipe['lags']))}" if recipe["lags"] else "")
                        + f" (at least {first + H + 1} needed)")
    past = _past(series, recipe, end)
    levels = select_columns(series, recipe["targets"], "targets").values
    base = _last_observed(levels)
    origins = np.arange(first, end)
    parts = [past[origins]]
    ahead = origins[:, None] + np.arange(1, H + 1)   # (N, H) rows t + h
    per_step = []
    if recipe["known"]:
        known = _known(series, recipe, min(end, T), end - 1 + H, stamps, zone, where)
        per_step.append(known[ahead])   # (N, H, k)
    if recipe["calendar"]:
        per_step.append(_calendar(stamps, zone, end - 1 + H, recipe, where)[ahead])
    if recipe["lags"]:
        carried = _carried(levels)
        lagged = [carried[ahead - lag] for lag in recipe["lags"]]   # each (N, H, O)
        values = np.concatenate(lagged, axis=2)
        if recipe["difference"]:
            values = values - np.tile(base[origins], len(recipe["lags"]))[:, None, :]
        per_step.append(values)
    if per_step:
        parts.append(np.concatenate(per_step, axis=2).reshape(len(origins), -1))
    x = np.concatenate(parts, axis=1)
    padded = np.concatenate([levels, np.full((H, levels.shape[1]), np.nan)])
    y = padded[ahead]   # (N, H, O)
    if recipe["difference"]:
        y = y - base[origins][:, None, :]
    if not np.isfinite(x).all():
        row = origins[np.argmax(~np.isfinite(x).all(axis=1))]
        raise DataError(f"{where}: the inputs of row {row} are not all finite (a target observed only "
                        "later: start the series at its first observed target, or fill it)")
    return Frames(x, y.reshape(len(origins), -1), base[origins], origins, levels)


def check_columns(series, recipe):
    """The recipe's columns are in the series (the inputs first, then targets and known
    inputs, so a missing column is named as before forecasting recipes)."""
    for option in ("inputs", "targets", "known"):
        if recipe[option]:
            select_columns(series, recipe[option], option)


def _past(series, recipe, end):
    """(end, P) past inputs of the rows before `end`, filled; with differencing target columns
    as changes (row 0 NaN)."""
    inputs = select_columns(series, recipe["inputs"], "inputs")
    values = fill_missing(inputs.values[:end], recipe["fill"], inputs.names)
    if recipe["difference"]:
        changed = [i for i, name in enumerate(inputs.names) if name in recipe["targets"]]
        values[1:, changed] = values[1:, changed] - values[:-1, changed]
        values[0, changed] = np.nan
    return values


def _known(series, recipe, observed_end, needed_end, stamps, zone, where):
    """(needed_end + 1, k) known inputs: rows before observed_end filled by the recipe's
    fill, later rows (the future) as given, every one present."""
    known = select_columns(series, recipe["known"], "known")
    values = known.values
    if needed_end >= len(values):
        raise DataError(f"{where}: known inputs are needed up to {_label(series, stamps, zone, needed_end)}, "
                        f"{needed_end - len(values) + 1} row(s) past the data's end; add rows with their "
                        "known inputs (empty targets) or give them with --future")
    values = values[:needed_end + 1].copy()
    values[:observed_end] = fill_missing(values[:observed_end], recipe["fill"] or "ffill", known.names)
    missing = np.argwhere(np.isnan(values))
    if len(missing):
        row, column = missing[0]
        raise DataError(f'{where}: known input "{known.names[column]}" is missing at '
                        f"{_label(series, stamps, zone, row)}; give its value there (or with --future)")
    return values


def _calendar(stamps, zone, needed_end, recipe, where):
    """(needed_end + 1, 2C) calendar features, stamps past the data extended at their frequency."""
    if not is_dated(stamps):
        raise DataError(f"{where}: calendar features need a time column of dates or times")
    stamps = extended_stamps(stamps, needed_end + 1, zone, recipe)
    if stamps is None:
        raise DataError(f"{where}: the time stamps have no regular frequency to continue past the data's "
                        "end for calendar features")
    return calendar.encode(stamps[:needed_end + 1], zone, recipe["calendar"])


def extended_stamps(stamps, length, zone, recipe=None):
    """Dated stamps (T,) (UTC instants of `zone`) continued to `length` rows at their
    frequency (inferred, else the one the recipe recorded), as datetime64[us]; None for
    stamps that are not dates, or that must grow and have no frequency."""
    if not is_dated(stamps):
        return None
    stamps = np.asarray(stamps).astype("datetime64[us]")
    if length <= len(stamps):
        return stamps
    frequency = time_stamps.infer_frequency(stamps, zone) or ((recipe or {}).get("time") or {}).get("frequency")
    if frequency is None:
        return None
    return np.concatenate([stamps, time_stamps.next_stamps(stamps[-1], frequency, length - len(stamps), zone)])


def is_dated(stamps):
    """Whether stamps are dates/times (not None, not plain numbers)."""
    return stamps is not None and np.issubdtype(np.asarray(stamps).dtype, np.datetime64)


def _carried(levels):
    """levels (T, O) with NaN carried forward (a leading gap takes the first value)."""
    carried = _last_observed(levels)
    first = np.argmax(~np.isnan(levels), axis=0)
    return np.where(np.isnan(carried), levels[first, np.arange(levels.shape[1])], carried)


def _label(series, stamps, zone, row):
    """Row `row` of a series as its time (past the end: counted at the frequency) or row number."""
    stamps = extended_stamps(stamps, row + 1, zone)
    return f"row {row}" if stamps is None else zones.labels(stamps[row:row + 1], zone)[0]


def last_observed_row(levels):
    """The last row with an observed target (-1 when none): origins end after it."""
    observed = np.flatnonzero(~np.isnan(levels).all(axis=1))
    return int(observed[-1]) if len(observed) else -1
