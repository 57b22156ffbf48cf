"""Time series for training and forecasting: choosing columns (reading is engine/series.py),
filling missing inputs, z-score normalisation, differencing, next-step framing, parallel
streams, the validation tail, the persistence baseline and forecast metrics. Pure NumPy.

A series is (T, C): T time steps of C columns. Model-ready arrays are time-major, inputs
x (T, B, I) and targets y (T, B, O), time-major as PyTorch's; NaN targets are missing values
that the loss skips, inputs must be finite. Every problem with the data raises DataError,
a ValueError with a one-line message naming the file (line, column) or option to change.
"""
import math
import numbers
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from engine.series import DataError, Series, as_series, listing, read_file
from engine.series import times

FILL_METHODS = ("ffill", "zero", "linear")


# ---------------------------------------------------------------- reading

def load_series(path, columns=None, key=None, time_column=None):
    """Read a series from a CSV file (header optional; delimiter , ; tab or whitespace;
    empty / NA / NaN cells are missing; lines starting with # are skipped; .gz, .bz2 and
    .zst compressed), a Parquet or Feather / Arrow file, a .npy array (T,) or (T, C), or a
    .npz archive: its only array, the array named `key`, or several 1-D arrays of one length
    taken as columns named by their keys. `path` may also be data in memory: a numpy
    array, a pandas DataFrame / Series or a pyarrow Table. time_column: the column of time
    stamps (default: the first column of dates/times, if any; False: none), kept as
    Series.time and checked to increase. columns: the columns to keep (see select_columns), all by default; a
    non-numeric cell in a kept column raises DataError naming file, line and column.
    Returns a Series with values (T, C)."""
    return select_columns(as_series(path, key, time_column), columns)


# ---------------------------------------------------------------- columns and missing inputs

def select_columns(series, spec, option="columns"):
    """The columns of `series` chosen by `spec`: None (all), a list of names and/or 0-based
    indices, or a comma string like "temp,2" (a name wins over an index of the same
    spelling). option: how the spec is named in errors ("inputs", "targets")."""
    if spec is None:
        spec = list(range(len(series.names)))
    tokens = [token.strip() for token in spec.split(",")] if isinstance(spec, str) else list(spec)
    if not tokens or any(token == "" for token in tokens):
        raise DataError(f"{option}: expected column names or indices separated by commas; got {spec!r}")
    indices = [_column_index(series, token, option) for token in tokens]
    if len(set(indices)) != len(indices):
        raise DataError(f"{option}: a column is listed twice in {spec!r}")
    for index in indices:
        if series.names[index] in series.invalid:
            raise DataError(series.invalid[series.names[index]])
    return Series(series.values[:, indices], tuple(series.names[i] for i in indices), series.source,
                  time=series.time, time_name=series.time_name, time_zone=series.time_zone)


def _column_index(series, token, option):
    C = len(series.names)
    if isinstance(token, str) and token in series.names:
        return series.names.index(token)
    if isinstance(token, str) and token.isdigit():
        token = int(token)
    if isinstance(token, numbers.Integral) and not isinstance(token, bool) and 0 <= token < C:
        return int(token)
    raise DataError(f"{option}: unknown column {token!r} in {series.source}; available columns: "
                    f"{listing(series.names)} (or indices 0..{C - 1})")


def fill_missing(values, method, names=None):
    """values (T, C) with NaN filled per column: "ffill" carries the last value forward (a
    leading gap takes the first value), "zero" writes 0, "linear" interpolates in time
    (ends held at the nearest value). method None: no NaN allowed. Returns a new array."""
    if method is not None and method not in FILL_METHODS:
        raise DataError(f"fill must be one of {', '.join(FILL_METHODS)}; got {method!r}")
    values = np.array(values, dtype=np.float64)
    missing = np.isnan(values)
    if not missing.any():
        return values
    names = names or [str(index) for index in range(values.shape[1])]
    if method is None:
        row, column = np.argwhere(missing)[0]
        raise DataError(f"inputs hold {missing.sum()} missing values (first at step {row}, column "
                        f'"{names[column]}"); choose how to fill them: --fill ffill|zero|linear')
    if method == "zero":
        return np.where(missing, 0.0, values)
    empty = missing.all(axis=0)
    if empty.any():
        raise DataError(f'input column "{names[np.argmax(empty)]}" holds no values to fill from')
    if method == "ffill":
        index = _last_observed_index(values)
        first = np.argmax(~missing, axis=0)
        return np.take_along_axis(values, np.where(index < 0, first, index), axis=0)
    steps = np.arange(len(values))
    for column in np.flatnonzero(missing.any(axis=0)):
        known = ~missing[:, column]
        values[:, column] = np.interp(steps, steps[known], values[known, column])
    return values


def _last_observed_index(values):
    """(T, C): the row of the last non-NaN value at or before each step, -1 before the first."""
    rows = np.where(np.isnan(values), -1, np.arange(len(values))[:, None])
    return np.maximum.accumulate(rows, axis=0)


def _last_observed(values):
    """values (T, C) with each NaN replaced by the last value before it (NaN before the first)."""
    index = _last_observed_index(values)
    filled = np.take_along_axis(values, np.maximum(index, 0), axis=0)
    return np.where(index < 0, np.nan, filled)


# ---------------------------------------------------------------- normalisation, differencing

@dataclass(frozen=True)
class Normalizer:
    """z-score per column: (values - mean) / std, with mean and std (C,) float64."""
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values):
        """Fit on values (T, C) ignoring NaN; a constant column gets std 1."""
        values = np.asarray(values, dtype=np.float64)
        empty = np.isnan(values).all(axis=0)
        if empty.any():
            raise DataError(f"cannot fit the normalisation: column {np.argmax(empty)} holds no values")
        # Scaled by a power of two per column (exact) so that sums and squares cannot
        # overflow, even for values near the float64 limit (1e300 squared is inf).
        # 2**(e - 1) for a largest magnitude m * 2**e (0.5 <= m < 1): finite up to the float64
        # limit (2**e itself is inf there), and scaled values lie within [-2, 2).
        scale = np.ldexp(1.0, np.frexp(np.nanmax(np.abs(values), axis=0))[1] - 1)
        scale = np.where(scale > 0, scale, 1.0)  # an all-zero column
        scaled = values / scale
        mean = np.nanmean(scaled, axis=0) * scale
        std = np.nanstd(scaled, axis=0) * scale
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
            raise DataError("cannot fit the normalisation: the values' spread exceeds the float64 "
                            "range; rescale the data")
        return cls(mean, np.where(std > 0, std, 1.0))

    def transform(self, values):
        """values (..., C) in original units -> normalised, same shape (inf where a value is
        beyond the float64 range in these units: callers check finiteness and say so)."""
        with np.errstate(over="ignore"):
            return (np.asarray(values, dtype=np.float64) - self.mean) / self.std

    def inverse_transform(self, values):
        """values (..., C) normalised -> original units, same shape (inf beyond the range)."""
        with np.errstate(over="ignore"):
            return np.asarray(values, dtype=np.float64) * self.std + self.mean

    def to_dict(self):
        """{"mean": [C floats], "std": [C floats]}, JSON-ready for checkpoint metadata."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, record):
        try:
            mean = np.array(record["mean"], dtype=np.float64)
            std = np.array(record["std"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"normalisation record must hold lists 'mean' and 'std' ({error})") from None
        if mean.ndim != 1 or mean.shape != std.shape or not np.all(np.isfinite(mean)) \
                or not np.all(std > 0) or not np.all(np.isfinite(std)):
            raise DataError("normalisation record must hold equal-length finite 'mean' and "
                            "positive 'std' lists")
        return cls(mean, std)


def difference(values):
    """Changes between consecutive steps: values (T, C) -> (T - 1, C)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        raise DataError(f"differencing needs at least 2 steps; got {len(values)}")
    return values[1:] - values[:-1]


def undifference(deltas, last_level):
    """Integrate changes deltas (T, C) from last_level (C,), the level just before the first
    change, back to levels (T, C): levels[t] = last_level + deltas[0] + ... + deltas[t]."""
    return np.asarray(last_level, dtype=np.float64) + np.cumsum(deltas, axis=0)


# ---------------------------------------------------------------- framing

def frame(inputs, targets, horizon=1):
    """Next-step framing: inputs (T, I), targets (T, O) -> x (T - horizon, I) = inputs[t],
    y (T - horizon, O) = targets[t + horizon]."""
    horizon = _positive_int("horizon", horizon)
    if len(inputs) != len(targets):
        raise DataError(f"inputs and targets must have the same length; got {len(inputs)} and {len(targets)}")
    if len(inputs) <= horizon:
        raise DataError(f"the series has {len(inputs)} steps, too short for horizon {horizon}; "
                        "use a longer series or a smaller --horizon")
    return inputs[:len(inputs) - horizon], targets[horizon:]


def split_validation(x, y, val_fraction):
    """Cut off the last round(val_fraction * T) steps of x (T, I), y (T, O) as the validation
    tail, so validation follows training in time. Returns (x_train, y_train), (x_val, y_val);
    the validation pair is None for val_fraction 0."""
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real) \
            or not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be a number in [0, 1); got {val_fraction!r}")
    T = len(x)
    V = round(val_fraction * T)
    if val_fraction > 0 and not 0 < V < T:
        raise DataError(f"val_fraction {val_fraction} of {T} steps leaves "
                        f"{'no validation steps' if V == 0 else 'no training steps'}; change --val-fraction")
    if V == 0:
        return (x, y), None
    return (x[:T - V], y[:T - V]), (x[T - V:], y[T - V:])


def to_streams(x, y, streams, min_steps=1):
    """Cut one long series x (T, I), y (T, O) into `streams` contiguous pieces of S = T // streams
    steps, side by side: x (S, B, I), y (S, B, O) with stream b = steps [b S, (b + 1) S).
    The last T - B S steps are dropped. S must be >= min_steps (e.g. the TBPTT stride k1)."""
    streams = _positive_int("streams", streams)
    min_steps = _positive_int("min_steps", min_steps)
    T = len(x)
    S = T // streams
    if S < min_steps:
        raise DataError(f"the training part has {T} steps; cut into {streams} streams that is {S} "
                        f"steps per stream, fewer than the {min_steps} needed (k1); use fewer "
                        "--streams, a smaller --k1 or a longer series")

    def cut(array):  # (T, F) -> (B, S, F) -> time-major (S, B, F)
        return np.ascontiguousarray(array[:S * streams].reshape(streams, S, -1).transpose(1, 0, 2))
    return cut(x), cut(y)


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise DataError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


# ---------------------------------------------------------------- the whole pipeline

class TrainingData(NamedTuple):
    """x_train (S, B, I), y_train (S, B, O) normalised; x_val (V, 1, I), y_val (V, 1, O) the
    validation tail as one stream, or None; metadata: the JSON-ready recipe (see
    prepare_training_data) that prepare_forecast_data and to_original_units follow."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    metadata: dict


def prepare_training_data(source, inputs=None, targets=None, horizon=1, streams=1,
                          val_fraction=0.0, fill=None, difference=False, min_steps=1, key=None):
    """Model-ready training data from a path, Series or array (T,) / (T, C).

    targets: the columns to forecast (default all); inputs: the model's input columns
    (default the targets: autoregressive), specs as in select_columns. The model sees the
    inputs at t (NaN filled by `fill`) and learns the targets at t + horizon (NaN targets
    stay missing). difference: target columns enter as changes (first differences among the
    inputs; the targets become level[t + horizon] - last observed level at t), so forecasts
    are not bound to the training range. Normalisation is fitted on the training part only;
    the validation tail is the last val_fraction of time; the training part is cut into
    `streams` streams of at least min_steps steps. Returns TrainingData; its metadata holds
    source, columns, inputs, targets, horizon, fill, difference, streams, val_fraction,
    train_steps, val_steps, input_norm and target_norm."""
    series = as_series(source, key)
    target_names = select_columns(series, targets, "targets").names
    input_names = target_names if inputs is None else select_columns(series, inputs, "inputs").names
    recipe = {"source": series.source, "columns": list(series.names), "inputs": list(input_names),
              "targets": list(target_names), "horizon": _positive_int("horizon", horizon),
              "fill": fill, "difference": bool(difference)}
    if series.time is not None:
        recipe["time"] = times.describe(series.time, series.time_name, series.time_zone)
    features, levels, base = _features(series, recipe, need_base=bool(difference))
    x, y = frame(features, levels, horizon)
    if difference:
        y = y - base[:len(y)]
    return assemble_training_data(x, y, recipe, target_names, streams, val_fraction, min_steps)


def assemble_training_data(x, y, recipe, target_names, streams, val_fraction, min_steps=1):
    """TrainingData from framed inputs x (N, I) and targets y (N, K) of one series:
    the validation tail split off, normalisation fitted on the training part, the
    training part cut into streams; metadata: the recipe plus the keys prepare_training_data lists."""
    train, validation = split_validation(x, y, val_fraction)
    _require_targets(train[1], target_names, "the training part")
    input_norm, target_norm = Normalizer.fit(train[0]), Normalizer.fit(train[1])
    # cut first, then normalise the fresh stream arrays in place: no full-length temporaries
    x_train, y_train = to_streams(train[0], train[1], streams, min_steps)
    _normalize_in_place(x_train, input_norm)
    _normalize_in_place(y_train, target_norm)
    x_val = y_val = None
    if validation is not None:
        _require_targets(validation[1], target_names, "the validation tail")
        x_val = input_norm.transform(validation[0])[:, None, :]
        y_val = target_norm.transform(validation[1])[:, None, :]
    metadata = {**recipe, "streams": streams, "val_fraction": float(val_fraction),
                "train_steps": len(train[0]), "val_steps": 0 if x_val is None else len(x_val),
                "input_norm": input_norm.to_dict(), "target_norm": target_norm.to_dict()}
    return TrainingData(x_train, y_train, x_val, y_val, metadata)


class ForecastData(NamedTuple):
    """x (T', 1, I) normalised model inputs; levels (T', O) the targets in original units;
    base (T', O) the last observed target level at each step. The model output at row t
    forecasts levels[t + horizon]. T' = T, or T - 1 with differencing."""
    x: np.ndarray
    levels: np.ndarray
    base: np.ndarray


def prepare_forecast_data(source, metadata, key=None):
    """Inputs of a whole series (path, Series or array) for a model trained with
    `metadata` (from prepare_training_data): same columns by name, fill, differencing
    and input normalisation. Returns ForecastData."""
    series = as_series(source, key)
    try:
        features, levels, base = _features(series, metadata)
        input_norm = Normalizer.from_dict(metadata["input_norm"])
    except KeyError as error:
        raise DataError(f"the data recipe lacks {error} (metadata not from prepare_training_data)") from None
    if len(input_norm.mean) != features.shape[1]:
        raise DataError(f"the input normalisation has {len(input_norm.mean)} columns, the inputs "
                        f"{features.shape[1]}")
    return ForecastData(input_norm.transform(features)[:, None, :], levels, base)


def to_original_units(y_hat, base, metadata):
    """Model outputs y_hat (T, O) (normalised; changes with differencing) -> forecast levels
    (T, O) in original units; base (T, O) is ForecastData.base for the same rows."""
    levels = Normalizer.from_dict(metadata["target_norm"]).inverse_transform(y_hat)
    with np.errstate(over="ignore"):  # a level beyond the float64 range is inf, reported as such
        return levels + base if metadata["difference"] else levels


def _normalize_in_place(values, norm):
    """values (..., C) -> (values - mean) / std, overwriting values (as Normalizer.transform)."""
    with np.errstate(over="ignore"):  # inf beyond the range, refused by the finiteness checks
        np.subtract(values, norm.mean, out=values)
        np.divide(values, norm.std, out=values)


def _features(series, recipe, need_base=True):
    """Apply a recipe's column choice, fill and differencing to a series: returns inputs
    (T', I) finite, levels (T', O) the raw targets, base (T', O) their last observed values
    (None unless need_base or differencing), with T' = T, or T - 1 with differencing (the
    first step has no change)."""
    inputs = select_columns(series, recipe["inputs"], "inputs")
    levels = select_columns(series, recipe["targets"], "targets").values
    filled = fill_missing(inputs.values, recipe["fill"], inputs.names)
    input_names = inputs.names
    del inputs   # its (T, I) copy, no longer needed
    base = _last_observed(levels) if need_base or recipe["difference"] else None
    if not recipe["difference"]:
        return filled, levels, base
    # target columns among the inputs become their changes; other inputs stay levels
    changed = [index for index, name in enumerate(input_names) if name in recipe["targets"]]
    features = filled[1:].copy()
    features[:, changed] = difference(filled[:, changed])
    return features, levels[1:], base[1:]


def _require_targets(y, names, part):
    """Every target column needs observed values in `part` (y (T, K), K a multiple of the
    O names: entry k is target k % O), or training is blind."""
    empty = np.isnan(y).all(axis=0)
    if empty.any():
        raise DataError(f'{part} holds no observed values of target "{names[np.argmax(empty) % len(names)]}"; '
                        "change --val-fraction or the data")


# ---------------------------------------------------------------- baseline and metrics

def persistence_baseline(targets, horizon=1):
    """The naive forecast: y_hat[t] = the last observed target at or before t, for
    targets[t + horizon]. targets (T, O) -> (T - horizon, O); NaN before the first observation."""
    return seasonal_naive(targets, 1, horizon)


def seasonal_naive(targets, season=1, horizon=1):
    """The seasonal naive forecast of period `season` for targets[t + horizon], made at t:
    the last observed target at or before t + horizon - lag, lag = season * ceil(horizon /
    season) (the latest known value of the same season; season 1 is persistence).
    targets (T, O) -> (T - horizon, O), aligned with targets[horizon:]; NaN where no
    such value exists yet."""
    targets = np.asarray(targets, dtype=np.float64)
    horizon = _positive_int("horizon", horizon)
    season = _positive_int("season", season)
    shift = season * math.ceil(horizon / season) - horizon   # rows further back than persistence
    persistence = _last_observed(targets)[:max(len(targets) - horizon, 0)]
    naive = np.full_like(persistence, np.nan)
    naive[shift:] = persistence[:max(len(persistence) - shift, 0)]
    return naive


def _errors(y_hat, y):
    """y_hat - y over the observed (non-NaN) targets, flattened."""
    y_hat, y = np.asarray(y_hat, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if y_hat.shape != y.shape:
        raise DataError(f"forecasts and targets must have the same shape; got {y_hat.shape} and {y.shape}")
    observed = ~np.isnan(y)
    with np.errstate(over="ignore"):  # an error beyond the float64 range is inf: the honest answer
        return y_hat[observed] - y[observed]


def mse(y_hat, y):
    """Mean squared error over the observed targets (nan when none)."""
    errors = _errors(y_hat, y)
    with np.errstate(over="ignore"):  # errors beyond 1e154 square to inf: the honest answer
        return float(np.mean(errors ** 2)) if errors.size else math.nan


def rmse(y_hat, y):
    """Root mean squared error over the observed targets (nan when none)."""
    return math.sqrt(mse(y_hat, y))


def mae(y_hat, y):
    """Mean absolute error over the observed targets (nan when none)."""
    errors = _errors(y_hat, y)
    with np.errstate(over="ignore"):  # a sum beyond the float64 range is inf
        return float(np.mean(np.abs(errors))) if errors.size else math.nan


def smape(y_hat, y):
    """Symmetric mean absolute percentage error over the observed targets, in percent
    (0..200): mean of 2 |y_hat - y| / (|y_hat| + |y|), a term 0 where both are 0 (nan when
    no targets)."""
    y_hat, y = np.asarray(y_hat, dtype=np.float64), np.asarray(y, dtype=np.float64)
    half_errors = _errors(y_hat / 2, y / 2)   # halves: no overflow
    if not half_errors.size:
        return math.nan
    observed = ~np.isnan(y)
    size = np.abs(y_hat[observed]) / 2 + np.abs(y[observed]) / 2
    terms = np.divide(np.abs(half_errors), size, out=np.zeros_like(size), where=size > 0)
    return float(200 * np.mean(terms))   # 2 |F - A| / (|F| + |A|) in percent


def mase(y_hat, y, naive):
    """Mean absolute scaled error: the MAE of y_hat over the MAE of the `naive` forecast
    (e.g. seasonal_naive) on the same observed targets of y; nan when the naive MAE is 0
    (the naive forecast is exact there: MASE is undefined) or there are no targets."""
    scale = mae(naive, y)
    return mae(y_hat, y) / scale if scale > 0 else math.nan
