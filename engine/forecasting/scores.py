"""Scores of interval, quantile and Gaussian forecasts, and point-forecast metrics per horizon
step. Arrays of forecasts and actuals have any (broadcast) shape; a NaN actual is not
scored; each score is the mean over the scored entries (NaN when there is none)."""
import math

import numpy as np
from scipy.stats import norm

from engine.data import mae, mase, rmse, smape


def coverage(actual, lo, hi):
    """Fraction of the scored actuals inside their closed interval [lo, hi]."""
    actual, lo, hi = _scored(actual, lo, hi)
    return _mean((actual >= lo) & (actual <= hi))


def mean_width(actual, lo, hi):
    """Mean width hi - lo of the intervals of the scored actuals."""
    _, lo, hi = _scored(actual, lo, hi)
    return _mean(hi - lo)


def interval_score(actual, lo, hi, level):
    """Mean interval (Winkler) score of central `level`% intervals, alpha = 1 - level/100:
    (hi - lo) + 2/alpha (lo - y) if y < lo, + 2/alpha (y - hi) if y > hi (Gneiting &
    Raftery, "Strictly proper scoring rules, prediction, and estimation", JASA 102(477):
    359-378, 2007, eq. 43). Lower is better."""
    actual, lo, hi = _scored(actual, lo, hi)
    penalty = 2 / (1 - level / 100)
    return _mean((hi - lo) + penalty * np.maximum(lo - actual, 0) + penalty * np.maximum(actual - hi, 0))


def pinball(actual, quantiles, levels):
    """Mean pinball (quantile) loss over the levels and the scored entries: quantiles
    (Q, ...) forecast at levels (Q,) for actual (...); per level q and entry
    max(q (y - f), (q - 1) (y - f))."""
    actual, quantiles = np.asarray(actual, dtype=np.float64), np.asarray(quantiles, dtype=np.float64)
    shape = np.broadcast_shapes(actual.shape, quantiles.shape[1:])   # one level's entries
    levels = np.asarray(levels, dtype=np.float64).reshape((-1,) + (1,) * len(shape))
    if len(levels) != len(quantiles):
        raise ValueError(f"{len(levels)} levels for {len(quantiles)} quantile forecasts")
    errors = actual - np.broadcast_to(quantiles, (len(quantiles),) + shape)   # (Q, ...)
    observed = np.broadcast_to(~np.isnan(actual), errors.shape)
    return _mean(np.maximum(levels * errors, (levels - 1) * errors)[observed])


def crps_gaussian(actual, mean, scale):
    """Mean continuous ranked probability score of Normal(mean, scale**2) forecasts, closed
    form: scale (z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)), z = (y - mean) / scale
    (Gneiting, Raftery, Westveld & Goldman, "Calibrated probabilistic forecasting using
    ensemble model output statistics and minimum CRPS estimation", Monthly Weather Review
    133(5): 1098-1118, 2005, eq. 5). Lower is better; in the units of the actuals."""
    actual, mean, scale = _scored(actual, mean, scale)
    z = (actual - mean) / scale
    return _mean(scale * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / math.sqrt(math.pi)))


def crps_quantiles(actual, quantiles, levels):
    """The usual quantile-based approximation of the CRPS: twice the mean pinball loss over
    the levels (the CRPS is twice the integral of the pinball loss over all levels in
    (0, 1); the mean over a grid of levels approximates that integral)."""
    return 2 * pinball(actual, quantiles, levels)


def step_metrics(forecast, actual, naive):
    """Point-forecast metrics per horizon step of forecasts (N, H, O) against actuals
    (N, H, O) beside a naive forecast (N, H, O) (e.g. seasonal naive): a list of H dicts
    {"step": h (1..H), "count", "mae", "rmse", "smape", "mase", "naive_mae"} and one more
    with "step": "overall" over all steps. Scored: the entries whose actual and naive
    forecast are both known (NaN elsewhere), so that MASE = the forecast's MAE / the naive
    MAE on the same entries (engine.data.mase); count: how many."""
    forecast, actual, naive = (np.asarray(part, dtype=np.float64) for part in (forecast, actual, naive))
    if not forecast.shape == actual.shape == naive.shape or forecast.ndim != 3:
        raise ValueError(f"forecast, actual and naive must be (N, H, O) alike; got {forecast.shape}, "
                         f"{actual.shape} and {naive.shape}")
    actual = np.where(np.isnan(naive), np.nan, actual)
    steps = [{"step": step + 1, **_metrics(forecast[:, step], actual[:, step], naive[:, step])}
             for step in range(forecast.shape[1])]
    return steps + [{"step": "overall", **_metrics(forecast, actual, naive)}]


def _metrics(forecast, actual, naive):
    return {"count": int(np.count_nonzero(~np.isnan(actual))), "mae": mae(forecast, actual),
            "rmse": rmse(forecast, actual), "smape": smape(forecast, actual),
            "mase": mase(forecast, actual, naive), "naive_mae": mae(naive, actual)}


def _scored(actual, *forecasts):
    """The scored entries (flat) of actual and of forecasts broadcast to its shape."""
    actual = np.asarray(actual, dtype=np.float64)
    parts = np.broadcast_arrays(actual, *(np.asarray(part, dtype=np.float64) for part in forecasts))
    observed = ~np.isnan(parts[0])
    return tuple(part[observed] for part in parts)


def _mean(values):
    return float(np.mean(values)) if np.size(values) else math.nan
