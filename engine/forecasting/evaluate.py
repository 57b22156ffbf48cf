"""Evaluation of a forecasting model (docs/forecasting.md): a backtest from every origin
(engine.forecasting.backtest) summarised as `bptt evaluate` reports it: the point metrics
over every step forecast beside the seasonal naive ("baseline"), per step, the interval
scores, and for a panel one record per series."""
import math

import numpy as np

from engine.data import mae, mase, mse, smape
from engine.forecasting import backtest as backtests, outputs


def evaluate(model, metadata, data, *, start=None, season=1, levels=outputs.DEFAULT_LEVELS, key=None,
             series_id=None, **panel_options):
    """A dict: mse, mae, rmse, smape, mase and baseline_mse / baseline_mae / baseline_rmse
    (the seasonal naive of period `season`, 1: persistence) over every forecast entry of
    steps 1..H from every origin whose step 1 is at or after `start` (a row, negative from
    the end, a date/time, or a dict of those per series; None: every origin), the state
    warmed up on the rows before; "steps" the
    origins scored; "per_step", "intervals" (coverage, mean width and interval score per
    level) and, for distribution models, "crps" (and "pinball" for quantile models). A
    panel model adds "series": one record per id, and its "mase" is the mean of the
    series' defined MASE (mase_count of them)."""
    found = backtests.backtest(model, metadata, data, start=start, every=1, season=season, levels=levels,
                               key=key, series_id=series_id, first_target=True, **panel_options)
    table = found.table
    forecast, actual, naive = (table.column(name).to_numpy() for name in ("forecast", "actual", "naive"))
    scored = ~np.isnan(actual) & ~np.isnan(naive)
    if not scored.any():
        raise backtests.DataError("no observed target to evaluate" + ("" if start is None else f" from {start!r}"))
    origins = table.column("origin").to_numpy()
    ids = table.column("id").to_numpy(zero_copy_only=False) if "id" in table.column_names else None
    result = {**_point(forecast[scored], actual[scored], naive[scored]),
              "steps": _origins_scored(origins, ids, scored), "season": season, "per_step": found.metrics["steps"],
              "intervals": found.metrics["intervals"],
              **{name: found.metrics[name] for name in ("crps", "pinball") if name in found.metrics}}
    if ids is not None:
        records = []
        for series in dict.fromkeys(ids):
            mine = scored & (ids == series)
            record = _point(forecast[mine], actual[mine], naive[mine])
            records.append({"id": str(series), "steps": _origins_scored(origins, None, mine), **record})
        defined = [record["mase"] for record in records if not math.isnan(record["mase"])]
        result.update(mase=float(np.mean(defined)) if defined else math.nan, mase_count=len(defined),
                      series=records)
    return result


def _origins_scored(origins, ids, scored):
    """How many (series, origin) pairs have a scored entry."""
    pairs = origins[scored] if ids is None else list(zip(ids[scored], origins[scored]))
    return int(len(set(pairs.tolist() if ids is None else pairs)))


def _point(forecast, actual, naive):
    """Point metrics of forecast against actual beside naive (1-D, all scored)."""
    return {"mse": mse(forecast, actual), "mae": mae(forecast, actual), "rmse": math.sqrt(mse(forecast, actual)),
            "smape": smape(forecast, actual), "mase": mase(forecast, actual, naive),
            "baseline_mse": mse(naive, actual), "baseline_mae": mae(naive, actual),
            "baseline_rmse": math.sqrt(mse(naive, actual)), "naive_mae": mae(naive, actual)}
