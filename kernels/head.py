"""Linear head y = h W^T + b over a whole chunk (plus, for a model with the linear path,
x V^T), and the losses on its output.

N = T*B rows, time-major, so the rows of step t are t*B .. t*B + B - 1.
"""
import numpy as np

from kernels.activations import sigmoid
from kernels.common import add_into, column_sums, zero_fill
from kernels.config import inline_jit, jit
from kernels.gemm import gemm

MIN_SCALE = 1e-3  # the gaussian head's floor on sigma, in model units (engine.losses.MIN_SCALE)


@jit
def head_forward(y_hat, h_top, weight, bias):
    """y_hat: (N, O) out. h_top: (N, H) top-layer hidden states. weight: (O, H). bias: (O,)."""
    gemm(h_top, weight.T, y_hat)  # (N, H) x (H, O)
    for row in range(y_hat.shape[0]):
        for k in range(y_hat.shape[1]):
            y_hat[row, k] += bias[k]


@jit
def head_backward(dweight, dbias, dy, h_top):
    """Overwrites dweight: (O, H), dbias: (O,). dy: (N, O) = dL/dy_hat. (dL/dh_top is formed
    per step by the top layer's backward kernel, from dy and the head weight.)"""
    gemm(dy.T, h_top, dweight)  # (O, N) x (N, H)
    column_sums(dbias, dy)


@jit
def skip_forward(y_hat, linear, x, weight):
    """The linear path added to the head's output: y_hat (N, O) += x weight^T.
    linear: (N, O) out, x weight^T alone. x: (N, I) the chunk's inputs. weight: (O, I)."""
    gemm(x, weight.T, linear)  # (N, I) x (I, O)
    for row in range(y_hat.shape[0]):
        add_into(y_hat[row], linear[row])


@jit
def skip_backward(dweight, dy, x):
    """Overwrites dweight: (O, I) = dy^T x. dy: (N, O) = dL/dy_hat. x: (N, I). (The path
    adds nothing to dL/dh: its gradient is immediate, like the head's.)"""
    gemm(dy.T, x, dweight)  # (O, N) x (N, I)


@inline_jit
def softplus(r):
    """log(1 + exp(r)) of a float64 scalar without overflow for large |r|."""
    return max(r, 0.0) + np.log1p(np.exp(-abs(r)))


@jit
def count_finite(y, first_row):
    """Finite entries of y (N, K) in rows >= first_row: the targets counted (NaN = missing)."""
    count = 0
    for row in range(first_row, y.shape[0]):
        for k in range(y.shape[1]):
            if np.isfinite(y[row, k]):
                count += 1
    return count


@jit
def start_loss(dy, y, first_row, divisor):
    """Zero dy and count the finite targets of rows >= first_row: (count, the divisor to
    use: `divisor`, or the count when it is <= 0)."""
    count = count_finite(y, first_row)
    zero_fill(dy.reshape(-1))
    return count, (count if divisor <= 0 else divisor)


@jit
def mse_gradient(dy, y_hat, y, first_row, divisor):
    """Squared error over the finite targets of rows >= first_row (NaN = missing), divided
    by `divisor` (<= 0: by the count of those targets, the mean).

    dy: (N, O) out, dL/dy_hat (zero where not counted). y_hat, y: (N, O).
    Returns (loss, count); with count 0 the loss is 0 and dy is all zero."""
    N, O = y.shape
    count, divisor = start_loss(dy, y, first_row, divisor)
    if count == 0:
        return 0.0, 0
    scale = dy.dtype.type(2.0 / divisor)
    total = 0.0  # float64 accumulator
    for row in range(first_row, N):
        for k in range(O):
            if np.isfinite(y[row, k]):
                error = y_hat[row, k] - y[row, k]
                total += error * error
                dy[row, k] = scale * error
    return total / divisor, count


@jit
def gaussian_gradient(dy, y_hat, y, first_row, divisor):
    """Gaussian negative log-likelihood 0.5 * (log(sigma^2) + (y - mu)^2 / sigma^2) over the
    finite targets of rows >= first_row, with mu = y_hat[:, k] and sigma = softplus(r) +
    MIN_SCALE, r = y_hat[:, K + k]; divided by `divisor` (<= 0: by the count, the mean).

    dy: (N, 2K) out, dL/dy_hat (zero where not counted). y_hat: (N, 2K). y: (N, K).
    Returns (loss, count); with count 0 the loss is 0 and dy is all zero."""
    N, K = y.shape
    count, divisor = start_loss(dy, y, first_row, divisor)
    if count == 0:
        return 0.0, 0
    inverse = 1.0 / divisor
    total = 0.0  # float64 accumulator; each entry computed in float64 too
    for row in range(first_row, N):
        for k in range(K):
            if np.isfinite(y[row, k]):
                raw = np.float64(y_hat[row, K + k])
                sigma = softplus(raw) + MIN_SCALE
                z = (np.float64(y[row, k]) - np.float64(y_hat[row, k])) / sigma  # standardised error
                total += np.log(sigma) + 0.5 * z * z
                dy[row, k] = -z / sigma * inverse                                   # dL/dmu
                dy[row, K + k] = (1.0 - z * z) / sigma * sigmoid(raw) * inverse    # dL/dsigma dsigma/dr
    return total / divisor, count


@jit
def pinball_gradient(dy, y_hat, y, first_row, divisor, levels):
    """Pinball loss max(q (y - f), (q - 1) (y - f)) of each level q = levels[j] with its
    forecast f = y_hat[:, j*K + k], over the finite targets of rows >= first_row, divided by
    Q * `divisor` (<= 0: by Q times the count, the mean over entries and levels). At
    y == f the subgradient is that of q - 1{y < f}: dL/df = -q.

    dy: (N, Q*K) out (zero where not counted). y_hat: (N, Q*K). y: (N, K). levels: (Q,)
    float64. Returns (loss, count of targets); with count 0 the loss is 0, dy all zero."""
    N, K = y.shape
    Q = levels.shape[0]
    count, divisor = start_loss(dy, y, first_row, divisor)
    if count == 0:
        return 0.0, 0
    inverse = 1.0 / (Q * divisor)
    total = 0.0
    for row in range(first_row, N):
        for k in range(K):
            if not np.isfinite(y[row, k]):
                continue
            target = np.float64(y[row, k])
            for j in range(Q):
                q = levels[j]
                error = target - np.float64(y_hat[row, j * K + k])
                below = 1.0 if error < 0.0 else 0.0  # 1{y < f}
                total += (q - below) * error           # = max(q e, (q - 1) e)
                dy[row, j * K + k] = (below - q) * inverse
    return total / (Q * divisor), count


@jit
def cross_entropy_gradient(dlogits, logits, targets, first_row, divisor):
    """Softmax cross-entropy summed over rows >= first_row whose target is not -1, divided
    by `divisor` (<= 0: by the count of those rows, the mean).

    dlogits: (N, O) out. logits: (N, O). targets: (N,) integer classes in [0, O) or -1.
    Returns (loss, count); with count 0 the loss is 0 and dlogits is all zero."""
    N, O = logits.shape
    count = 0
    for row in range(first_row, N):
        if targets[row] >= 0:
            count += 1
    zero_fill(dlogits.reshape(-1))
    if count == 0:
        return 0.0, 0
    if divisor <= 0:
        divisor = count
    inverse_count = 1.0 / divisor
    total = 0.0
    for row in range(first_row, N):
        target = targets[row]
        if target < 0:
            continue
        largest = logits[row, 0]
        for k in range(1, O):
            largest = max(largest, logits[row, k])
        sum_exp = 0.0
        for k in range(O):
            sum_exp += np.exp(np.float64(logits[row, k] - largest))
        log_sum_exp = largest + np.log(sum_exp)
        total += log_sum_exp - logits[row, target]
        for k in range(O):
            probability = np.exp(logits[row, k] - log_sum_exp)
            dlogits[row, k] = probability * inverse_count
        dlogits[row, target] -= inverse_count
    return total / divisor, count
