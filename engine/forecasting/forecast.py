"""Forecasts past the end of each series (docs/forecasting.md): one pass for up to the
model's horizon H steps; more steps roll forward in blocks of H, each block's forecasts
taken as the observed targets of the next, which is well defined only when every past
input is a target. Known inputs of the steps forecast come from rows after the last
observed target (empty target cells) or from a future file."""
import numpy as np
import pyarrow as pa

from engine.footprint import forecast_bytes, require
from engine.forecasting import frames as framing, intervals, outputs, run
from engine.panel.sources import Panel, time_array
from engine.series import DataError, Series


def forecast(model, metadata, data, steps, *, levels=outputs.DEFAULT_LEVELS, future=None, key=None,
             series_id=None, **panel_options):
    """A pyarrow Table of `steps` forecasts per series: [id,] time (or step), then per
    target NAME, NAME_loL, NAME_hiL per interval level, NAME_qX per quantile level.
    future: a Panel / table / path with the known inputs of the rows to forecast (read
    like the data), appended after each series' observed rows. Steps past the horizon
    carry no bounds or quantiles (NaN): they would understate the uncertainty."""
    recipe = metadata["data"]
    H = recipe["horizon"]
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise DataError(f"steps must be an integer >= 1; got {steps!r}")
    if steps > H and any(name not in recipe["targets"] for name in recipe["inputs"]):
        past_only = [name for name in recipe["inputs"] if name not in recipe["targets"]]
        raise DataError(f"--steps {steps} is more than the model's horizon {H}: forecasting further feeds the "
                        f"forecasts back as inputs, but the past input(s) {', '.join(past_only)} would be unknown "
                        f"there; use --steps {H} or a model trained with --horizon {steps}")
    levels = outputs.available_levels(recipe, intervals.parse_levels(levels))
    panel = run.read(data, recipe, key=key, series_id=series_id, **panel_options)
    columns = len(recipe["targets"]) * (1 + 2 * len(levels) + len(recipe.get("quantiles") or ()))
    what = f"--steps {steps} forecasts" + (f" of {len(panel.ids)} series" if "scaling" in recipe else "")
    require(forecast_bytes(steps, len(panel.ids), columns), what)   # before any is made
    if future is not None:
        panel = with_future(panel, run.read(future, recipe, key=None, series_id=series_id, **panel_options), recipe)
    blocks, rolled, origins = [], panel, None   # blocks: per block of H steps, the Forecasts of each series
    for done in range(0, steps, H):
        runs = run.run(model, recipe, rolled, run.last_origin_end)
        origins = origins or [int(one.frames.rows[-1]) for one in runs]
        found = [outputs.forecasts(one.outputs[-1:], one.frames.base[-1:], recipe, one.target_norm,
                                   levels if done == 0 else ()) for one in runs]
        blocks.append(found)
        if done + H < steps:
            rolled = _observed(rolled, runs, found, recipe)
    return _table(panel, recipe, blocks, steps, levels, origins)


def with_future(panel, future, recipe):
    """The panel with each series' future rows (its known inputs, targets empty) after its
    last observed target, replacing any rows there; the future's columns and times must
    match."""
    missing = [name for name in recipe["known"] if name not in future.names]
    extra = [name for name in future.names if name not in recipe["known"] and name not in recipe["targets"]]
    if missing or extra:
        raise DataError(f"future: expected the known input columns {', '.join(recipe['known']) or '(none)'}"
                        + (f"; missing {', '.join(missing)}" if missing else f"; unexpected {', '.join(extra)}"))
    series, times = [], []
    for series_id, one, stamps in zip(panel.ids, panel.series, panel.times):
        if series_id not in future.ids:
            raise DataError(f'future: no rows for series "{series_id}"')
        ahead = future.series[future.ids.index(series_id)]
        ahead_times = future.times[future.ids.index(series_id)]
        levels = one.values[:, [one.names.index(name) for name in recipe["targets"]]]
        keep = framing.last_observed_row(levels) + 1
        if stamps is not None and ahead_times is not None:
            expected = _continued(stamps[:keep], len(ahead_times), panel.time_zone, recipe)
            if expected is not None and not np.array_equal(expected.astype("datetime64[us]"),
                                                           np.asarray(ahead_times).astype("datetime64[us]")):
                raise DataError(f"future: the times of series \"{series_id}\" must continue its data from the last "
                                "observed target at its frequency")
        values = np.full((len(ahead.values), len(one.names)), np.nan)
        for name in recipe["known"]:
            values[:, one.names.index(name)] = ahead.values[:, ahead.names.index(name)]
        series.append(Series(np.concatenate([one.values[:keep], values]), one.names, one.source, one.invalid))
        times.append(None if stamps is None else np.concatenate([stamps[:keep], ahead_times]))
    return Panel(panel.ids, tuple(series), tuple(times), panel.source, panel.time_name, panel.time_zone)


def _continued(stamps, count, zone, recipe):
    """The `count` stamps after dated `stamps` at their frequency, or None."""
    extended = framing.extended_stamps(stamps, len(stamps) + count, zone, recipe) if stamps is not None else None
    return None if extended is None else extended[len(stamps):]


def _observed(panel, runs, found, recipe):
    """The panel with each series' next H rows holding the forecasts as observed targets."""
    series = []
    times = []
    H = recipe["horizon"]
    for one, stamps, result, ran in zip(panel.series, panel.times, found, runs):
        end = int(ran.frames.rows[-1]) + 1
        values = one.values[:end + H].copy()
        if len(values) < end + H:
            values = np.concatenate([values, np.full((end + H - len(values), values.shape[1]), np.nan)])
        columns = [one.names.index(name) for name in recipe["targets"]]
        values[end:end + H, columns] = result.point[0]
        values = np.concatenate([values, one.values[end + H:]]) if len(one.values) > end + H else values
        series.append(Series(values, one.names, one.source, one.invalid))
        if stamps is not None and len(stamps) < len(values):
            stamps = np.concatenate([stamps, _continued(stamps, len(values) - len(stamps), panel.time_zone, recipe)
                                     .astype(np.asarray(stamps).dtype)])
        times.append(stamps)
    return Panel(panel.ids, tuple(series), tuple(times), panel.source, panel.time_name, panel.time_zone)


def _table(panel, recipe, blocks, steps, levels, origins):
    """The forecast table of `steps` steps from each series' origin (its row in `origins`)."""
    columns = {}
    N = len(panel.ids)
    if "scaling" in recipe:
        columns[recipe.get("id_column") or "id"] = pa.array(np.repeat(np.array(panel.ids, dtype=object), steps),
                                                            pa.string())
    stamps = [_continued(times[:origin + 1] if times is not None else None, steps, panel.time_zone, recipe)
              for times, origin in zip(panel.times, origins)]
    if all(stamp is not None for stamp in stamps):
        columns[recipe.get("time_column") or "time"] = \
            time_array(np.concatenate(stamps).astype("datetime64[us]"), panel.time_zone)
    else:
        columns["step"] = pa.array(np.tile(np.arange(1, steps + 1), N), pa.int64())
    point = np.concatenate([np.concatenate([block[i].point[0] for block in blocks])[:steps] for i in range(N)])
    first = blocks[0]
    for o, name in enumerate(recipe["targets"]):
        columns[name] = pa.array(point[:, o])
        for level in levels:
            for side, part in (("lo", 0), ("hi", 1)):
                values = np.concatenate([_padded(first[i].bounds[level][part][0][:, o], steps) for i in range(N)])
                columns[f"{name}_{side}{level:g}"] = pa.array(values)
        if first[0].quantiles is not None:
            for j, q in enumerate(first[0].levels_q):
                values = np.concatenate([_padded(first[i].quantiles[0, j][:, o], steps) for i in range(N)])
                columns[f"{name}_q{q:g}"] = pa.array(values)
    return pa.table(columns)


def _padded(values, steps):
    """values (H,) cut or NaN-padded to `steps`."""
    return np.concatenate([values[:steps], np.full(max(steps - len(values), 0), np.nan)])
