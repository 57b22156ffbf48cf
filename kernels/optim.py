"""Optimizer updates and gradient clipping over flat buffers.

Every buffer is a 1-D view (P,) of the flat parameter layout: params, grads and the
optimizer moments share it, so each update is one fused pass over P elements. Update
kernels overwrite params and moments in place and allocate nothing. Scalars arrive
already cast to the buffers' dtype, and derived constants (1 - beta, bias corrections)
are computed by the caller, so float32 code stays float32 (no literal promotes it).

An optional moment buffer (momentum, amsgrad maximum, centred mean) is passed as a
zero-length array when the option is off; its length is the flag.
"""
import numpy as np

from kernels.config import jit


@jit
def sgd_update(params, momentum_buffer, grads, lr, weight_decay, momentum,
               one_minus_dampening, nesterov, first_step):
    """torch.optim.SGD. params, grads: (P,); momentum_buffer: (P,), or (0,) when momentum
    is 0. On the first step the buffer takes the gradient itself (not dampened)."""
    use_momentum = momentum_buffer.shape[0] > 0
    for i in range(params.shape[0]):
        g = grads[i] + weight_decay * params[i]  # L2 penalty folded into the gradient
        if use_momentum:
            if first_step:
                b = g
            else:
                b = momentum * momentum_buffer[i] + one_minus_dampening * g
            momentum_buffer[i] = b
            if nesterov:
                g = g + momentum * b
            else:
                g = b
        params[i] -= lr * g


@jit
def adam_update(params, exp_avg, exp_avg_sq, max_exp_avg_sq, grads, step_size, beta1,
                one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps,
                weight_decay, decay_factor):
    """torch.optim.Adam / AdamW. params, grads, exp_avg, exp_avg_sq: (P,);
    max_exp_avg_sq: (P,) with amsgrad, else (0,).

    step_size = lr / (1 - beta1**t); bias_correction2_sqrt = sqrt(1 - beta2**t).
    Adam: weight_decay = L2 coefficient added to the gradient, decay_factor = 1.
    AdamW: weight_decay = 0, decay_factor = 1 - lr * wd (decoupled decay of params)."""
    amsgrad = max_exp_avg_sq.shape[0] > 0
    for i in range(params.shape[0]):
        p = params[i] * decay_factor
        g = grads[i] + weight_decay * p
        m = beta1 * exp_avg[i] + one_minus_beta1 * g
        v = beta2 * exp_avg_sq[i] + one_minus_beta2 * (g * g)
        exp_avg[i] = m
        exp_avg_sq[i] = v
        if amsgrad:
            v = max(max_exp_avg_sq[i], v)
            max_exp_avg_sq[i] = v
        denom = np.sqrt(v) / bias_correction2_sqrt + eps
        params[i] = p - step_size * (m / denom)


@jit
def rmsprop_update(params, square_avg, grad_avg, momentum_buffer, grads, lr, alpha,
                   one_minus_alpha, eps, weight_decay, momentum):
    """torch.optim.RMSprop. params, grads, square_avg: (P,); grad_avg: (P,) when
    centered, else (0,); momentum_buffer: (P,) when momentum > 0, else (0,)."""
    centered = grad_avg.shape[0] > 0
    use_momentum = momentum_buffer.shape[0] > 0
    for i in range(params.shape[0]):
        g = grads[i] + weight_decay * params[i]
        s = alpha * square_avg[i] + one_minus_alpha * (g * g)
        square_avg[i] = s
        if centered:  # variance estimate: E[g^2] - E[g]^2
            a = alpha * grad_avg[i] + one_minus_alpha * g
            grad_avg[i] = a
            s = s - a * a
        avg = np.sqrt(s) + eps
        if use_momentum:
            b = momentum * momentum_buffer[i] + g / avg
            momentum_buffer[i] = b
            params[i] -= lr * b
        else:
            params[i] -= lr * (g / avg)


@jit
def sum_of_squares(x):
    """Sum of x[i]**2 over x (N,), accumulated in float64 whatever x's dtype.

    Four independent partial sums break the add latency chain (a fixed order, so the
    result is reproducible)."""
    n = x.shape[0]
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    head = n - n % 4
    for i in range(0, head, 4):
        v0 = np.float64(x[i])
        v1 = np.float64(x[i + 1])
        v2 = np.float64(x[i + 2])
        v3 = np.float64(x[i + 3])
        s0 += v0 * v0
        s1 += v1 * v1
        s2 += v2 * v2
        s3 += v3 * v3
    for i in range(head, n):
        v = np.float64(x[i])
        s0 += v * v
    return (s0 + s1) + (s2 + s3)


@jit
def scale(x, factor):
    """x (N,) *= factor, in place (factor of x's dtype)."""
    for i in range(x.shape[0]):
        x[i] *= factor


@jit
def clip_by_value(x, low, high):
    """Clamp x (N,) into [low, high] in place (NaN stays NaN); True if any entry changed.
    Branch-free select and an integer count, so the loop vectorises."""
    count = 0
    for i in range(x.shape[0]):
        v = x[i]
        above = v > high
        below = v < low
        count += above | below
        x[i] = high if above else (low if below else v)
    return count > 0
