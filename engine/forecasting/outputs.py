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
    """A point (mse) model's recipe with its split-conformal calibration: the quantiles of
    the absolute validation residuals per entry, in model units (None without validation
    data, or for a distribution model, which has its own intervals)."""
    if recipe.get("loss", "mse") != "mse" or validation is None:
        return {**recipe, "conformal": None}
    x_val, y_val = validation
    y_hat, _ = model.forward(x_val)   # (V, B, K)
    residuals = np.abs(y_hat.astype(np.float64) - y_val).reshape(-1, y_val.shape[-1])
    return {**recipe, "conformal": intervals.Conformal.fit(residuals).to_dict()}


def available_levels(recipe, levels):
    """The interval levels this model can give among `levels`: all of them for a
    distribution model or a calibrated point model, those whose symmetric quantile pair
    a quantile model has, none for an uncalibrated point model."""
    loss = recipe.get("loss", "mse")
    if loss == "gaussian":
        return tuple(levels)
    if loss == "quantile":
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
    if loss == "quantile":
        quantiles = np.stack([original(parts["quantiles"][:, j]) for j in range(len(levels_q))], axis=1)
        point = quantiles[:, _median(levels_q)]
        for level in available_levels(recipe, levels):
            bounds[level] = intervals.quantile_bounds(np.moveaxis(quantiles, 1, 0), levels_q, level)
    else:
        point = original(parts["mean"])
        if loss == "gaussian":
            scale = parts["scale"].reshape(N, H, O) * std
            for level in levels:
                bounds[level] = intervals.gaussian_bounds(point, scale, level)
        elif recipe.get("conformal"):
            conformal = intervals.Conformal.from_dict(recipe["conformal"])
            for level in levels:
                half = conformal.half_width(level).reshape(H, O) * std
                bounds[level] = (point - half, point + half)
    return Forecasts(point, bounds, quantiles, levels_q)


def _median(levels_q):
    """The index of the level nearest 0.5 (the median when the model has it)."""
    return int(np.argmin(np.abs(np.asarray(levels_q) - 0.5)))

