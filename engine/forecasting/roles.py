"""The roles of a series' columns in a forecasting recipe (docs/forecasting.md): targets,
past inputs, known inputs, calendar features, seasonal lags and static values, checked
against the data and the horizon, with defaults from the data's frequency."""
import numbers

import numpy as np

from engine.data import select_columns
from engine.forecasting import calendar as calendar_features
from engine.series import DataError

RECIPE_VERSION = 2
LAG_SHARE = 3   # an automatic lag is kept when the shortest series has at least LAG_SHARE lags of rows
TREND_RANK = 0.9   # trending: the means of the tenths of a series rank with time at least this well
WANDER_RATIO = 2.0   # wandering: changes over a quarter of a series this many times as variable as over a season


def resolve(series, *, targets=None, inputs=None, known=None, calendar=None, lags="auto", static=None,
            horizon=1, frequency=None, shortest=None, panel=False, has_time=False):
    """Recipe fields {"version", "targets", "inputs", "known", "calendar", "lags", "static"}
    for `series` (an engine Series: its column names and time column) and the options as
    `bptt train` takes them (has_time: the data has a time column of dates). Targets default to every column that is not a known input or
    static; inputs (past inputs) default to the targets. lags "auto": the lags suiting
    the frequency (engine.forecasting.calendar.suited_lags) that are at least the horizon
    and fit LAG_SHARE times into the shortest series (`shortest` rows); "none": none."""
    known_names = _names(series, known, "known")
    static_names = _names(series, static, "static")
    if static_names and not panel:
        raise DataError("static: per-series values need a panel of series (--id-column, wide columns or "
                        "a directory of files); a single series has no per-series values")
    others = set(known_names) | set(static_names)
    if targets is None:
        if all(name in others for name in series.names):
            raise DataError("no column is left to forecast: give --targets")
        target_names = _names(series, [name for name in series.names if name not in others], "targets")
    else:
        target_names = _names(series, targets, "targets")
    for option, chosen in (("known", known_names), ("static", static_names)):
        clash = [name for name in chosen if name in target_names]
        if clash:
            raise DataError(f'{option}: "{clash[0]}" is a target; a target cannot also be a {option} input '
                            "(change --targets or --" + option + ")")
    both = set(known_names) & set(static_names)
    if both:
        raise DataError(f'static: "{sorted(both)[0]}" is also a known input; give it once')
    input_names = target_names if inputs is None else _names(series, inputs, "inputs")
    return {"version": RECIPE_VERSION, "targets": target_names, "inputs": input_names, "known": known_names,
            "calendar": calendar_features.parse(calendar, frequency, has_time),
            "lags": parse_lags(lags, horizon, frequency, shortest), "static": static_names}


def parse_lags(spec, horizon, frequency=None, shortest=None):
    """--lags: "auto" / None (see resolve), "none", or lags in steps ("24,168", "24+168" as a
    sweep's --space writes it, or a list)."""
    if spec is None or spec == "auto":
        return [lag for lag in calendar_features.suited_lags(frequency)
                if lag >= horizon and (shortest is None or LAG_SHARE * lag <= shortest)]
    if spec == "none" or (isinstance(spec, (list, tuple)) and not spec):
        return []
    tokens = [token.strip() for token in spec.replace("+", ",").split(",")] if isinstance(spec, str) else list(spec)
    lags = []
    for token in tokens:
        if isinstance(token, str) and token.isdigit():
            token = int(token)
        if isinstance(token, bool) or not isinstance(token, numbers.Integral) or token < 1:
            raise DataError(f"lags: expected whole numbers of steps >= 1 separated by commas (or auto, none); "
                            f"got {spec!r}")
        lags.append(int(token))
    if len(set(lags)) != len(lags):
        raise DataError(f"lags: a lag is listed twice in {spec!r}")
    short = [lag for lag in lags if lag < horizon]
    if short:
        raise DataError(f"lags: lag {short[0]} is shorter than the horizon {horizon}: the value it names for "
                        f"step {horizon} is not observed at the forecast origin; use lags >= {horizon}")
    return sorted(lags)


def _names(series, spec, option):
    """The column names a spec chooses (none for None or "none")."""
    if spec is None or spec == "none" or (isinstance(spec, (list, tuple)) and not spec):
        return []
    return list(select_columns(series, spec, option).names)


def check_horizon(horizon):
    """--horizon: an integer >= 1."""
    if isinstance(horizon, bool) or not isinstance(horizon, numbers.Integral) or horizon < 1:
        raise DataError(f"horizon must be an integer >= 1; got {horizon!r}")
    return int(horizon)


def trending(series_list, targets, val_fraction=0.0):
    """--difference left unset: whether to model the targets' changes. True when most
    (target, series) pairs trend: the means of the ten consecutive tenths of their
    training values (the validation tail left out) rise or fall with time, a Spearman rank
    correlation of TREND_RANK or more in size (a stationary series gets there with
    probability about 1e-4; a seasonal cycle shorter than a tenth averages out). Pairs
    with fewer than 20 observed values do not vote."""
    votes = []
    for one in series_list:
        levels = select_columns(one, targets, "targets").values
        for column in levels[:len(levels) - round(val_fraction * len(levels))].T:
            observed = column[~np.isnan(column)]
            if len(observed) < 20:
                continue
            observed = observed / max(np.abs(observed).max(), np.finfo(float).tiny)   # no overflow in the sums
            means = [part.mean() for part in np.array_split(observed, 10)]
            votes.append(abs(_rank_correlation(np.arange(10), np.array(means))) >= TREND_RANK)
    return bool(votes) and float(np.mean(votes)) > 0.5


def wandering(series_list, targets, lags, val_fraction=0.0):
    """--difference left unset: whether the targets' level wanders (a random walk under
    the season) in most training rows. Per (target, series) of training values (the
    validation tail left out), with S the shortest seasonal lag: the variance of the
    changes over k S steps, the most whole seasons within a quarter of the series, over
    that of the changes over S steps. A stationary series' ratio stays near 1 (an AR(1) of
    coefficient 0.95 under a daily cycle: about 1.4), a random walk's grows with k; the
    pairs above WANDER_RATIO vote by their rows, pairs with k < 2 do not vote. Without
    lags (no season to compare with) never."""
    if not lags:
        return False
    season, wander, rows = min(lags), 0, 0
    for one in series_list:
        levels = select_columns(one, targets, "targets").values
        for column in levels[:len(levels) - round(val_fraction * len(levels))].T:
            k = len(column) // 4 // season
            if k < 2:
                continue
            ratio = _change_variance(column, k * season) / _change_variance(column, season)
            rows += len(column)
            wander += len(column) if ratio > WANDER_RATIO else 0
    return rows > 0 and wander > rows / 2


def _change_variance(column, steps):
    """The variance of column[t] - column[t - steps] over the pairs observed (inf: none vary)."""
    changes = column[steps:] - column[:-steps]
    changes = changes[np.isfinite(changes)]
    spread = float(changes.var()) if len(changes) > 1 else 0.0
    return spread if spread > 0 else np.inf


def _rank_correlation(a, b):
    """Spearman's rank correlation of a and b (no ties expected among means)."""
    rank_a, rank_b = (np.argsort(np.argsort(values)).astype(float) for values in (a, b))
    return float(np.corrcoef(rank_a, rank_b)[0, 1])
