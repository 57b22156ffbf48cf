"""The statistical baselines of the forecast quality benchmark (bench/quality.py), from
statsmodels (extra `bench`): ETS and ARIMA fitted once on one series' training part and
forecasting steps 1..H from each backtest origin with the data up to it, never refitted.

- ETS: Holt-Winters exponential smoothing, additive season of the member's period, with
  an additive damped trend for trending members; initial states by statsmodels'
  heuristic. From each origin its fitted smoothing parameters and initial states are run
  over the rows from the fit's first row to the origin, then forecast.
- ARIMA: regression with ARIMA(2, d, 1) errors (d = 1 for trending members, else 0, with
  a constant) on Fourier terms of the member's periods (up to 5 harmonics each) and the
  member's known inputs, a state-space SARIMAX. Its fitted results are extended over the
  rows after the training part (Kalman filter, same parameters) and each origin's
  forecasts follow from the state predicted at origin + 1.

Both are fitted on at most the last FIT_ROWS rows of the training part (the long hourly
series would take minutes each), on values standardised by that part's mean and sd.
"""
import warnings

import numpy as np

FIT_ROWS = 2000
HARMONICS = 5
AR, MA = 2, 1


def require_statsmodels():
    try:
        import statsmodels  # noqa: F401
    except ImportError:
        raise ImportError("the quality benchmark needs statsmodels: pip install -e '.[bench]'") from None


def fourier_terms(rows, periods):
    """(len(rows), 2 K per period) sin/cos of the first K = min((P - 1) // 2, HARMONICS)
    harmonics of each period P at `rows` (a harmonic of P / 2 would be a sine of zeros)."""
    columns = []
    for period in periods:
        for k in range(1, min((period - 1) // 2, HARMONICS) + 1):
            angle = 2 * np.pi * k * rows / period
            columns += [np.sin(angle), np.cos(angle)]
    return np.column_stack(columns) if columns else np.empty((len(rows), 0))


class Standard:
    """The z-score of a series' fit window: z = (y - mean) / sd."""

    def __init__(self, values):
        self.mean, self.sd = float(np.mean(values)), float(np.std(values)) or 1.0

    def __call__(self, values):
        return (values - self.mean) / self.sd

    def back(self, z):
        return z * self.sd + self.mean


def arima_forecasts(y, known, start, origins, steps, periods, trending):
    """ARIMA's forecasts (len(origins), steps) of y (T,) from `origins` (rows >= start - 1),
    fitted on the rows before `start`; known: (T, k) inputs known in advance or None."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    first = max(0, start - FIT_ROWS)
    scale = Standard(y[first:start])
    rows = np.arange(len(y))
    exog = fourier_terms(rows, periods)
    if known is not None:
        exog = np.column_stack([exog, (known - known[first:start].mean(0)) / (known[first:start].std(0) + 1e-12)])
    model = SARIMAX(scale(y[first:start]), exog=exog[first:start], order=(AR, int(trending), MA), trend="c")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # convergence chatter of the optimizer
        fitted = model.fit(disp=False)
        extended = fitted.extend(scale(y[start:]), exog=exog[start:])
    return scale.back(forecasts_from_states(extended, origins - start, steps))


def forecasts_from_states(results, origins, steps):
    """Mean forecasts (len(origins), steps) of a univariate statsmodels state-space
    `results` from positions `origins` of its sample (-1: from the state before its first
    row): y[o + h] = d[o + h] + Z a[o + h], a[o + 1] the state predicted from the data up
    to o, a[t + 1] = c[t] + T a[t]. NaN where o + h is past the sample (intercepts unknown)."""
    filtered = results.filter_results
    design, transition = filtered.design[0, :, 0], filtered.transition[:, :, 0]
    n = results.nobs
    obs = np.broadcast_to(np.asarray(filtered.obs_intercept).reshape(1, -1)[0], (n,)) \
        if np.size(filtered.obs_intercept) == 1 else np.asarray(filtered.obs_intercept)[0]
    state_intercept = np.asarray(filtered.state_intercept).reshape(len(design), -1)
    state = filtered.predicted_state[:, origins + 1]              # (k, n_origins)
    forecasts = np.full((len(origins), steps), np.nan)
    for h in range(steps):
        rows = origins + 1 + h
        inside = rows < n
        forecasts[inside, h] = obs[rows[inside]] + design @ state[:, inside]
        intercept = state_intercept[:, np.minimum(rows, state_intercept.shape[1] - 1)]
        state = intercept + transition @ state
    return forecasts


def ets_forecasts(y, start, origins, steps, season, trending):
    """ETS's forecasts (len(origins), steps) of y (T,) from `origins` (rows >= start - 1),
    fitted on the rows before `start`."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    first = max(0, start - FIT_ROWS)
    scale = Standard(y[first:start])
    z = scale(y)
    shape = dict(trend="add" if trending else None, damped_trend=trending, seasonal="add",
                 seasonal_periods=season)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = ExponentialSmoothing(z[first:start], initialization_method="heuristic", **shape).fit()
        p = fitted.params
        initial = dict(initial_level=p["initial_level"], initial_seasonal=p["initial_seasons"],
                       **({"initial_trend": p["initial_trend"]} if trending else {}))
        smoothing = dict(smoothing_level=p["smoothing_level"], smoothing_seasonal=p["smoothing_seasonal"],
                         **({"smoothing_trend": p["smoothing_trend"], "damping_trend": p["damping_trend"]}
                            if trending else {}))
        forecasts = [ExponentialSmoothing(z[first:origin + 1], initialization_method="known", **initial, **shape)
                     .fit(optimized=False, **smoothing).forecast(steps) for origin in origins]
    return scale.back(np.asarray(forecasts))
