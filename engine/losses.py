"""Loss values in NumPy for evaluation (training uses the fused kernels in kernels/head.py)."""
import numpy as np


def mean_loss(loss, y_hat, y):
    """Mean `loss` ("mse" or "cross_entropy") of y_hat (T, B, O) against y over the counted
    targets (NaN / -1 skipped); nan when nothing is counted."""
    if loss == "mse":
        mask = np.isfinite(y)
        if not mask.any():
            return float("nan")
        return float(np.mean((y_hat[mask].astype(np.float64) - y[mask]) ** 2))
    logits = y_hat.reshape(-1, y_hat.shape[-1]).astype(np.float64)
    targets = y.reshape(-1)
    counted = targets >= 0
    if not counted.any():
        return float("nan")
    logits, targets = logits[counted], targets[counted]
    largest = logits.max(axis=1, keepdims=True)
    log_sum_exp = largest[:, 0] + np.log(np.exp(logits - largest).sum(axis=1))
    return float(np.mean(log_sum_exp - logits[np.arange(len(targets)), targets]))
