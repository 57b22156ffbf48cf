"""Per-series evaluation and forecasts of a model trained on a panel (docs/forecasting.md):
metrics per series and over the panel, and forecasts per (id, time) in each
series' original units."""
import math
import numbers

import numpy as np
import pyarrow as pa

from engine.data import mae, mase, mse, seasonal_naive, smape, to_original_units
from engine.footprint import forecast_bytes, require
from engine.panel.prepare import forward_series, prepare_panel_frames, stack_states
from engine.panel.scaling import PanelScaler
from engine.panel.sources import future_times, time_array
from engine.series import DataError
from engine.series.times import is_row, start_row


def score(predictions, targets, naive):
    """Metrics of predictions (n, O) against targets (n, O) (NaN: not scored) beside the
    naive forecast (n, O) on the same targets: steps (rows with a scored target), mse,
    mae, rmse, smape (percent), mase (engine.data.mase) and naive_mae."""
    return {"steps": int((~np.isnan(targets)).any(axis=1).sum()) if targets.ndim == 2 else 0,
            "mse": mse(predictions, targets), "mae": mae(predictions, targets),
            "rmse": math.sqrt(mse(predictions, targets)), "smape": smape(predictions, targets),
            "mase": mase(predictions, targets, naive), "naive_mae": mae(naive, targets)}


def evaluate_panel(model, metadata, source, season=1, start=None, series_id=None, key=None,
                   **panel_options):
    """Score a model trained on a panel (metadata: the checkpoint's user metadata) over
    every series of `source` (or the one `series_id`), in original units.

    Each series runs from a zero state over all its rows; the targets scored are the
    observed ones from `start` on (None: all; an int row of each series, negative
    counting from its end, -5 the last 5 rows; a date / datetime64 / ISO string: rows at
    or after that time, in the data's zone unless it has an offset; or a dict {series
    id: such a start} for a start per series, as a sweep scores each validation tail)
    that also have a seasonal naive forecast of period `season` (1: persistence), so the
    state is warmed up on everything before `start`. Returns the aggregate metrics at the
    top level: mse, mae, rmse, smape and naive_mae over all scored targets pooled
    (mse/mae/rmse therefore weigh large-scale series more), mase the mean of the series'
    defined MASE (mase_count of them), steps; and "series": one score() record per id."""
    recipe = metadata["data"]
    horizon = recipe["horizon"]
    frames, panel = prepare_panel_frames(source, recipe, series_id, key, **panel_options)
    zone = panel.time_zone
    outputs, _ = forward_series(model, [frame.x for frame in frames])
    scaler = PanelScaler.from_dict(recipe["scaling"])
    records, pooled = [], []
    for frame, y_hat in zip(frames, outputs):
        O = frame.levels.shape[1]
        if len(frame.x) <= horizon:   # nothing to score, but listed
            parts = (np.empty((0, O)),) * 3
        else:
            _, norm_y = scaler.for_series(frame.series_id)
            predictions = to_original_units(y_hat[:-horizon], frame.base[:-horizon],
                                            {"target_norm": norm_y.to_dict(),
                                             "difference": recipe["difference"]})
            naive = seasonal_naive(frame.levels, season, horizon)
            targets = frame.levels[horizon:]
            scored = ~np.isnan(targets) & ~np.isnan(naive) & _from(frame, start, horizon, zone)[:, None]
            parts = (predictions, np.where(scored, targets, np.nan), naive)
        records.append({"id": frame.series_id, **score(*parts)})
        pooled.append(parts)
    if not any(record["steps"] for record in records):
        raise DataError("no series has an observed target to score"
                        + ("" if start is None else f" from {start!r}"))
    aggregate = score(*(np.concatenate(part) for part in zip(*pooled)))
    defined = [record["mase"] for record in records if not math.isnan(record["mase"])]
    aggregate["mase"] = float(np.mean(defined)) if defined else math.nan
    return {**aggregate, "mase_count": len(defined), "series": records}


def _from(frame, start, horizon, zone):
    """(T' - horizon,) bool: the targets of `frame` at or after `start` (see evaluate_panel;
    engine.series.times.start_row, per series). zone: the zone of the panel's times."""
    if isinstance(start, dict):
        start = start[frame.series_id]
    length = int(frame.rows[-1]) + 1
    dated = frame.times is not None and np.issubdtype(frame.times.dtype, np.datetime64)
    first = start_row(start, length, frame.times if dated else None, zone, f'series "{frame.series_id}"')
    if not is_row(start):   # an index into frame.times, whose rows are the series' last ones
        first += int(frame.rows[0])
    return frame.rows[horizon:] >= first


def forecast_panel(model, metadata, source, steps, series_id=None, key=None, **panel_options):
    """Forecast `steps` steps past the end of every series of `source` (or the one
    `series_id`), in each series' original units. Each series warms the state up over
    all its rows; beyond the model's horizon the forecasts are fed back as inputs, all
    series at once (needs horizon 1 and inputs equal to targets). Returns a pyarrow
    Table, one row per (id, time): columns id, time (named as in the training data, else
    "id" and "time"; the next times at the series' frequency) or, without a time column,
    "step" (1 = the first step past the end), then one column per target."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise DataError(f"steps must be an integer >= 1; got {steps!r}")
    recipe = metadata["data"]
    horizon = recipe["horizon"]
    frames, panel = prepare_panel_frames(source, recipe, series_id, key, **panel_options)
    require(forecast_bytes(steps, len(frames), len(recipe["targets"])),
            f"--steps {steps} forecasts of {len(frames)} series")  # before any of them is made
    outputs, states = forward_series(model, [frame.x for frame in frames])
    scaler = PanelScaler.from_dict(recipe["scaling"])
    target_norms = [scaler.for_series(frame.series_id)[1] for frame in frames]
    if steps <= horizon:
        # the last `horizon` outputs already forecast the next `horizon` steps
        forecasts = []
        for frame, y_hat, norm_y in zip(frames, outputs, target_norms):
            rows = slice(len(y_hat) - horizon, len(y_hat) - horizon + steps)
            forecasts.append(to_original_units(y_hat[rows], frame.base[rows],
                                               {"target_norm": norm_y.to_dict(),
                                                "difference": recipe["difference"]}))
    else:
        forecasts = _fed_back(model, recipe, scaler, frames, outputs, states, steps)
    return _forecast_table(panel, forecasts, recipe["targets"], steps,
                           recipe.get("id_column") or "id", recipe.get("time_column") or "time")


def _fed_back(model, recipe, scaler, frames, outputs, states, steps):
    """Autoregressive forecasts of all N series side by side: N arrays (steps, O)."""
    if recipe["horizon"] != 1 or recipe["inputs"] != recipe["targets"]:
        raise DataError(f"--steps {steps} needs feeding forecasts back, which needs a model trained "
                        "with --horizon 1 and its inputs equal to its targets; this one has horizon "
                        f"{recipe['horizon']}, inputs {recipe['inputs']}, targets {recipe['targets']}")
    norms = [scaler.for_series(frame.series_id) for frame in frames]
    x_mean, x_std = (np.stack([getattr(norm_x, part) for norm_x, _ in norms]) for part in ("mean", "std"))
    y_mean, y_std = (np.stack([getattr(norm_y, part) for _, norm_y in norms]) for part in ("mean", "std"))
    level = np.stack([frame.base[-1] for frame in frames])         # (N, O) last observed levels
    output = np.stack([y_hat[-1] for y_hat in outputs])           # (N, O) normalised
    state = stack_states(states)
    forecasts = np.empty((steps,) + level.shape)
    for step in range(steps):
        forecast = output * y_std + y_mean + (level if recipe["difference"] else 0)
        fed_back = forecast - level if recipe["difference"] else forecast
        forecasts[step], level = forecast, forecast
        if step + 1 < steps:
            y_hat, state = model.forward(((fed_back - x_mean) / x_std)[None], state)   # (1, N, I)
            output = y_hat[0]
    return [forecasts[:, i] for i in range(len(frames))]


def _forecast_table(panel, forecasts, names, steps, id_name, time_name):
    ids = np.repeat(np.array(panel.ids, dtype=object), steps)
    columns = {id_name: pa.array(ids, pa.string())}
    times = [future_times(times, steps, panel.time_zone) for times in panel.times]
    if all(stamp is not None for stamp in times):
        columns[time_name] = time_array(np.concatenate(times), panel.time_zone)
    else:
        columns["step"] = pa.array(np.tile(np.arange(1, steps + 1), len(forecasts)))
    values = np.concatenate(forecasts)
    for i, name in enumerate(names):
        columns[name] = pa.array(values[:, i])
    return pa.table(columns)
