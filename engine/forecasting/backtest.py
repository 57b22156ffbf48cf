"""Backtests of a forecasting model (docs/forecasting.md): forecasts of steps 1..S from
rolling origins, the state warmed up on everything before each (no refit), scored against
the actual values and the seasonal naive forecast made at the same origin. A direct model
gives every origin's forecasts in one pass over each series."""
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from engine.forecasting import frames as framing, intervals, outputs, run, scores
from engine.losses import split_parameters
from engine.panel.sources import time_array
from engine.series import DataError, times as time_stamps


class Backtest(NamedTuple):
    """table: one row per (origin, id, step, target) (pyarrow Table); metrics: a dict with
    "steps" (one record per horizon step), "overall", "intervals" and "naive"."""
    table: pa.Table
    metrics: dict


def backtest(model, metadata, data, *, start=None, every=1, steps=None, season=1,
             levels=outputs.DEFAULT_LEVELS, key=None, series_id=None, first_target=False, **panel_options):
    """Backtest the model of `metadata` (a checkpoint's user metadata with a forecasting
    recipe) on `data`: origins from `start` (a row, negative from the end, or a time; None:
    the first row every input reaches; or a dict of those per series id) every `every` rows, forecasts of steps 1..steps
    (default: the model's horizon), intervals at `levels`. first_target: `start` names
    the row of the first origin's step 1 instead (evaluate's --from: score from there)."""
    recipe = metadata["data"]
    H = recipe["horizon"]
    steps = H if steps is None else _positive("steps", steps)
    every = _positive("every", every)
    season = _positive("season", season)
    if steps > H:
        raise DataError(f"steps {steps}: the model forecasts {H} step(s) from each origin (--horizon {H}); "
                        f"backtest at most {H} steps")
    panel = run.read(data, recipe, key=key, series_id=series_id, **panel_options)
    levels = outputs.available_levels(recipe, intervals.parse_levels(levels))
    for series_id, one, stamps in zip(panel.ids, panel.series, panel.times):   # --from checked first
        given = start[series_id] if isinstance(start, dict) else start
        if given is not None:
            name = "the series" if "scaling" not in recipe else f'series "{series_id}"'
            time_stamps.checked_start_row(given, len(one.values), stamps if framing.is_dated(stamps) else None,
                                          panel.time_zone, name, name)
    last_end = (lambda levels_, T: T - H) if recipe["known"] else (lambda levels_, T: T - 1)
    pieces = []
    for one in run.run(model, recipe, panel, last_end):
        chosen = _origins(one, start, every, panel.time_zone, recipe, int(first_target))
        if len(chosen):
            pieces.append(_score_series(one, chosen, recipe, steps, season, levels, panel.time_zone))
    if not pieces:
        raise DataError("no origin to backtest" + ("" if start is None else f" from {start!r}"))
    return Backtest(_table(pieces, recipe, levels, panel, "scaling" in recipe), _metrics(pieces, recipe, levels))


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


def _origins(one, start, every, zone, recipe, before=0):
    """Indices into one.frames.rows of the origins: from the row `before` rows before
    `start`, every `every` rows."""
    rows = one.frames.rows
    length = len(one.frames.levels)
    if isinstance(start, dict):   # a start per series
        start = start[one.series_id]
    if start is None:
        first = int(rows[0])
    else:
        first = time_stamps.checked_start_row(start, length, one.stamps if framing.is_dated(one.stamps) else None, zone,
                                              _name(one), _name(one)) - before
        if first >= length - 1:
            raise DataError(f"from: {start} leaves no origin with a value to forecast in {_name(one)} (its last "
                            f"origin is row {length - 2})")
        if first < rows[0] and before:   # evaluate: score what can be forecast
            first = int(rows[0])
        if first < rows[0]:
            raise DataError(f"from: {start} is before row {rows[0] + before} of {_name(one)}, the first the model "
                            f"can forecast from (its lags {','.join(map(str, recipe['lags'])) or 'none'} and "
                            f"differencing {'on' if recipe['difference'] else 'off'} need the rows before)")
    return np.flatnonzero((rows >= first) & ((rows - first) % every == 0))


def _name(one):
    return "the series" if one.series_id == "series" else f'series "{one.series_id}"'


class _Scored(NamedTuple):
    series_id: str
    origins: np.ndarray        # (n,) origin rows
    stamps: np.ndarray         # (T + H,) stamps extended past the end, or None
    forecast: object           # outputs.Forecasts cut to `steps`
    actual: np.ndarray         # (n, S, O)
    naive: np.ndarray          # (n, S, O)
    scale: np.ndarray          # (n, S, O) gaussian scales in original units, or None


def _score_series(one, chosen, recipe, steps, season, levels, zone):
    framed = one.frames
    found = outputs.forecasts(one.outputs[chosen], framed.base[chosen], recipe, one.target_norm, levels)
    cut = outputs.Forecasts(found.point[:, :steps], {level: (lo[:, :steps], hi[:, :steps])
                                                     for level, (lo, hi) in found.bounds.items()},
                            None if found.quantiles is None else found.quantiles[:, :, :steps], found.levels_q)
    origins = framed.rows[chosen]
    T, O = framed.levels.shape
    padded = np.concatenate([framed.levels, np.full((steps, O), np.nan)])
    ahead = origins[:, None] + np.arange(1, steps + 1)               # (n, S) rows forecast
    carried = framing._last_observed(framed.levels)
    lag = season * np.ceil(np.arange(1, steps + 1) / season).astype(int)   # seasonal naive: same season, known
    naive = carried[ahead - lag]
    scale = None
    if recipe.get("loss") == "gaussian":
        parts = split_parameters(one.outputs[chosen], "gaussian", ())
        H = recipe["horizon"]
        scale = (parts["scale"] * one.target_norm.std).reshape(len(chosen), H, O)[:, :steps]
    return _Scored(one.series_id, origins, framing.extended_stamps(one.stamps, T + steps, zone, recipe), cut, padded[ahead], naive, scale)


def _table(pieces, recipe, levels, panel, is_panel):
    """One row per (origin, id, step, target): origin, [id], time, step, target, forecast,
    actual, naive (the seasonal naive forecast from the same origin), lo80, hi80, ..."""
    names = recipe["targets"]
    columns = {name: [] for name in ("origin", "id", "time", "step", "target", "forecast", "actual", "naive")}
    for level in levels:
        columns[f"lo{level:g}"], columns[f"hi{level:g}"] = [], []
    for piece in pieces:
        n, S, O = piece.actual.shape
        origin = np.repeat(piece.origins, S * O)
        row = (piece.origins[:, None, None] + np.arange(1, S + 1)[None, :, None] + np.zeros((1, 1, O), int)).ravel()
        columns["origin"].append(origin)
        columns["time"].append(row)
        columns["id"].append(np.full(n * S * O, piece.series_id, dtype=object))
        columns["step"].append(np.tile(np.repeat(np.arange(1, S + 1), O), n))
        columns["target"].append(np.tile(np.array(names, dtype=object), n * S))
        columns["forecast"].append(piece.forecast.point.ravel())
        columns["actual"].append(piece.actual.ravel())
        columns["naive"].append(piece.naive.ravel())
        for level in levels:
            lo, hi = piece.forecast.bounds[level]
            columns[f"lo{level:g}"].append(lo.ravel())
            columns[f"hi{level:g}"].append(hi.ravel())
    table = {}
    stamps = {piece.series_id: piece.stamps for piece in pieces}
    for name, parts in columns.items():
        values = np.concatenate(parts)
        if name == "id":
            if is_panel:
                table["id"] = pa.array(values, pa.string())
        elif name in ("origin", "time"):
            ids = np.concatenate(columns["id"])
            if all(framing.is_dated(stamp) for stamp in stamps.values()):
                when = np.concatenate([stamps[series][rows] for series, rows in _by_series(ids, values)])
                table[name] = time_array(when.astype("datetime64[us]"), panel.time_zone)
            else:
                table[name] = pa.array(values.astype(np.int64))
        elif name in ("step",):
            table[name] = pa.array(values.astype(np.int64))
        elif name == "target":
            table[name] = pa.array(values, pa.string())
        else:
            table[name] = pa.array(values.astype(np.float64))
    return pa.table(table)


def _by_series(ids, rows):
    """(series id, rows) runs in order (the table lists each series' rows together)."""
    if not len(ids):
        return []
    breaks = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    return [(ids[a], rows[a:b]) for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(ids)])]


def _metrics(pieces, recipe, levels):
    """Point metrics per step and overall beside the seasonal naive's, and interval scores."""
    forecast = np.concatenate([piece.forecast.point for piece in pieces])
    actual = np.concatenate([piece.actual for piece in pieces])
    naive = np.concatenate([piece.naive for piece in pieces])
    scored = ~np.isnan(actual) & ~np.isnan(naive)
    actual = np.where(scored, actual, np.nan)
    *per_step, overall = scores.step_metrics(forecast, actual, naive)
    interval_scores = {}
    for level in levels:
        lo = np.concatenate([piece.forecast.bounds[level][0] for piece in pieces])
        hi = np.concatenate([piece.forecast.bounds[level][1] for piece in pieces])
        interval_scores[f"{level:g}"] = {"coverage": scores.coverage(actual, lo, hi),
                                         "mean_width": scores.mean_width(actual, lo, hi),
                                         "interval_score": scores.interval_score(actual, lo, hi, level)}
    distribution = {}
    if recipe.get("loss") == "gaussian":
        scale = np.concatenate([piece.scale for piece in pieces])
        distribution["crps"] = scores.crps_gaussian(actual, forecast, scale)
    elif recipe.get("loss") == "quantile":
        quantiles = np.concatenate([piece.forecast.quantiles for piece in pieces], axis=0)   # (n, Q, S, O)
        moved = np.moveaxis(quantiles, 1, 0)
        distribution["pinball"] = scores.pinball(actual, moved, recipe["quantiles"])
        distribution["crps"] = scores.crps_quantiles(actual, moved, recipe["quantiles"])
    return {"steps": per_step, "overall": overall, "intervals": interval_scores, **distribution,
            "origins": int(sum(len(piece.origins) for piece in pieces))}
