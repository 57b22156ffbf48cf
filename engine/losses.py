"""The losses in NumPy: their names, the model outputs each needs per target, reading
those outputs, and loss values for evaluation (training uses the fused kernels in
kernels/head.py).

Layout: with K target columns, a model trained with a loss of P parameters per target has
P*K outputs in P blocks of K columns: "mse" the point (P = 1), "gaussian" the mean then
the raw scale r, sigma = softplus(r) + MIN_SCALE (P = 2), "quantile" one block per level,
in increasing order of level (P = Q).
"""
import numpy as np

from kernels.head import MIN_SCALE

LOSSES = ("mse", "cross_entropy", "gaussian", "quantile")


def parameter_count(loss, quantiles=None):
    """P: model outputs per target for `loss` (the number of levels for "quantile")."""
    if loss == "gaussian":
        return 2
    if loss == "quantile":
        return len(quantiles)
    return 1


def gaussian_scale(raw):
    """sigma = softplus(raw) + MIN_SCALE, elementwise, without overflow for large |raw|."""
    return np.logaddexp(0, raw) + MIN_SCALE


def split_parameters(y_hat, loss, quantiles=None):
    """The forecast parameters in y_hat (..., P*K) of a model trained with `loss`:
    {"mean"} for mse, {"mean", "scale"} (sigma) for gaussian, {"quantiles": (..., Q, K)}
    sorted along Q (rearranged: they never cross) for quantile; each (..., K) otherwise."""
    y_hat = np.asarray(y_hat)
    P = parameter_count(loss, quantiles)
    if y_hat.shape[-1] % P:
        raise ValueError(f"loss {loss!r} needs {P} outputs per target; got {y_hat.shape[-1]} outputs")
    K = y_hat.shape[-1] // P
    if loss == "gaussian":
        return {"mean": y_hat[..., :K], "scale": gaussian_scale(y_hat[..., K:])}
    if loss == "quantile":
        return {"quantiles": np.sort(y_hat.reshape(y_hat.shape[:-1] + (P, K)), axis=-2)}
    return {"mean": y_hat}


def counted(loss, y):
    """Booleans shaped like y: the targets `loss` counts (a class >= 0 for cross_entropy,
    a finite value for the others; NaN marks a missing one)."""
    return y >= 0 if loss == "cross_entropy" else np.isfinite(y)


def mean_loss(loss, y_hat, y, quantiles=None):
    """Mean `loss` of y_hat (T, B, P*K) against y (T, B, K) ((T, B) classes for
    cross_entropy) over the counted targets, as training computes it (quantile: over
    targets and levels, from the outputs as they are); nan when nothing is counted."""
    mask = counted(loss, y)
    if not mask.any():
        return float("nan")
    if loss == "cross_entropy":
        return _cross_entropy(y_hat, y, mask)
    y_hat = y_hat.astype(np.float64)
    if loss == "mse":
        return float(np.mean((y_hat[mask] - y[mask]) ** 2))
    K = y.shape[-1]
    target = y[mask].astype(np.float64)  # (n,) counted entries
    if loss == "gaussian":
        mean, sigma = y_hat[..., :K][mask], gaussian_scale(y_hat[..., K:][mask])
        return float(np.mean(np.log(sigma) + 0.5 * ((target - mean) / sigma) ** 2))
    levels = np.asarray(quantiles, dtype=np.float64)
    forecasts = np.moveaxis(y_hat.reshape(y.shape[:-1] + (len(levels), K)), -2, -1)[mask]  # (n, Q)
    error = target[:, None] - forecasts
    return float(np.mean(np.maximum(levels * error, (levels - 1) * error)))


def _cross_entropy(logits, targets, mask):
    logits = logits.reshape(-1, logits.shape[-1]).astype(np.float64)[mask.reshape(-1)]
    targets = targets.reshape(-1)[mask.reshape(-1)]
    largest = logits.max(axis=1, keepdims=True)
    log_sum_exp = largest[:, 0] + np.log(np.exp(logits - largest).sum(axis=1))
    return float(np.mean(log_sum_exp - logits[np.arange(len(targets)), targets]))
