"""A forecasting model's outputs (docs/forecasting.md) in original units: the point
forecast (the mean, or a quantile model's median), its intervals at chosen levels and a
quantile model's quantiles. The model outputs P blocks of K = H * O entries (engine.losses:
one for mse, mean and scale for gaussian, one per level for quantile), in model units."""
from typing import NamedTuple

import numpy as np

from engine.forecasting import intervals
from engine.losses import split_parameters

DEFAULT_LEVELS = (80.0, 95.0)


class Forecasts(NamedTuple):
    """point (N, H, O); bounds {level: (lo, hi)} each (N, H, O); quantiles (N, Q, H, O)
    sorted along Q, or None; levels_q: the quantile levels (or ())."""
    point: np.ndarray
    bounds: dict
    quantiles: np.ndarray
    levels_q: tuple


def with_loss(recipe, trainer):
    """A forecasting recipe with the trainer's loss (and quantile levels) recorded:
    they decide what the outputs mean. Older recipes are returned unchanged."""
    if recipe.get("version") is None:
        return recipe
    return {**recipe, "loss": trainer.loss, "quantiles": list(getattr(trainer, "quantiles", None) or [])}


def with_conformal(recipe, model, validation):
    """The recipe with the split-conformal calibration of the model's intervals on the
    validation data (Vovk et al. 2005; Lei et al. 2018), in model units per entry, or None
    without validation data:
    - mse: the quantiles of the absolute residuals |y - y_hat| (intervals y_hat -/+ q);
    - gaussian: those of the residuals in scales, |y - mean| / scale (normalised conformal,
      Papadopoulos et al. 2008: intervals mean -/+ q scale, as wide as the model's own
      where its scales are right);
    - quantile: per interval level its quantile pair gives, the conformal quantile of
      max(lo - y, y - hi) (conformalized quantile regression, Romano, Patterson & Candes,
      NeurIPS 2019: intervals [lo - c, hi + c], c < 0 narrowing them)."""
    loss = recipe.get("loss", "mse")
    if validation is None:
        return {**recipe, "conformal": None}
    x_val, y_val = validation
    y_hat, _ = model.forward(x_val)   # (V, B, P*K)
    K = y_val.shape[-1]
    y = y_val.reshape(-1, K)
    parts = split_parameters(y_hat.reshape(-1, y_hat.shape[-1]).astype(np.float64), loss, recipe.get("quantiles"))
    if loss == "quantile":
        levels_q = recipe["quantiles"]
        record = {}
        for level in intervals.available_levels(levels_q):
            lo, hi = intervals.quantile_bounds(np.moveaxis(parts["quantiles"], 1, 0), levels_q, level)
            record[f"{level:g}"] = _conformal_quantiles(np.maximum(lo - y, y - hi), level)
        return {**recipe, "conformal": {"levels": record, "n": np.sum(~np.isnan(y), axis=0).tolist()}}
    residuals = np.abs(parts["mean"] - y)
    if loss == "gaussian":
        residuals = residuals / parts["scale"]
    return {**recipe, "conformal": intervals.Conformal.fit(residuals).to_dict()}


def _conformal_quantiles(scores, level):
    """Per column of scores (n, K) (NaN skipped), the split-conformal quantile at `level`
    percent: the ceil((n + 1) level / 100)-th smallest score (the largest when that
    exceeds n); NaN for a column without scores."""
    quantiles = []
    for column in scores.T:
        column = np.sort(column[~np.isnan(column)])
        rank = min(int(np.ceil((len(column) + 1) * level / 100 - 1e-9)), len(column))
        quantiles.append(float(column[rank - 1]) if len(column) else None)
    return quantiles


def available_levels(recipe, levels):
    """The interval levels this model can give among `levels`: all of them for a
    distribution model or a calibrated point model, those whose symmetric quantile pair
    a quantile model has, none for an uncalibrated point model."""
    loss = recipe.get("loss", "mse")
    if loss == "gaussian":
        return tuple(levels)
    if loss == "quantile":   # its quantile pairs (each calibrated when the model has a calibration)
        given = intervals.available_levels(recipe["quantiles"])
        return tuple(level for level in levels if any(abs(level - other) < 1e-6 for other in given))
    return tuple(levels) if recipe.get("conformal") else ()


def forecasts(y_hat, base, recipe, target_norm, levels=DEFAULT_LEVELS):
    """Forecasts of origins with model outputs y_hat (N, P*K) and last observed levels base
    (N, O), the target normalisation `target_norm` (a Normalizer of K entries), at the
    interval `levels` (percent; see available_levels)."""
    H, O = recipe["horizon"], base.shape[1]
    N = len(y_hat)
    loss, levels_q = recipe.get("loss", "mse"), tuple(recipe.get("quantiles") or ())
    parts = split_parameters(np.asarray(y_hat, dtype=np.float64), loss, levels_q)
    shift = base[:, None, :] if recipe["difference"] else 0.0

    def original(values):   # (N, K) model units -> (N, H, O) original units
        return target_norm.inverse_transform(values).reshape(N, H, O) + shift

    std = target_norm.std.reshape(H, O)
    bounds, quantiles = {}, None
    calibration = recipe.get("conformal")
    if loss == "quantile":
        quantiles = np.stack([original(parts["quantiles"][:, j]) for j in range(len(levels_q))], axis=1)
        point = quantiles[:, _median(levels_q)]
        for level in available_levels(recipe, levels):
            lo, hi = intervals.quantile_bounds(np.moveaxis(quantiles, 1, 0), levels_q, level)
            shift = np.array(calibration["levels"][f"{level:g}"], dtype=np.float64).reshape(H, O) * std \
                if calibration else 0.0
            bounds[level] = (lo - shift, hi + shift)
    else:
        point = original(parts["mean"])
        conformal = intervals.Conformal.from_dict(calibration) if calibration else None
        scale = parts["scale"].reshape(N, H, O) * std if loss == "gaussian" else std
        for level in levels if loss == "gaussian" or conformal else ():
            if conformal is None:
                bounds[level] = intervals.gaussian_bounds(point, scale, level)
            else:   # residuals in scales (gaussian) or in model units (mse)
                half = conformal.half_width(level).reshape(H, O) * scale
                bounds[level] = (point - half, point + half)
    return Forecasts(point, bounds, quantiles, levels_q)


def _median(levels_q):
    """The index of the level nearest 0.5 (the median when the model has it)."""
    return int(np.argmin(np.abs(np.asarray(levels_q) - 0.5)))

