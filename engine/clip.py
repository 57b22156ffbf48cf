"""Gradient clipping over the flat gradient buffer, matching torch.nn.utils.

Each clip is a stateless transformation of the gradient, applied in place before the
optimizer step ("clip, then optimize"). Over the flat buffer the global norm is one pass
and the scaling, when needed, a second.
"""
import math

import numpy as np

from engine.validation import check_float
from kernels.optim import clip_by_value, scale, sum_of_squares

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
NORM_EPSILON = 1e-6  # torch's guard in max_norm / (norm + 1e-6)


def clip_grad_norm(grads, max_norm):
    """Scale `grads` (any shape, usually the flat (P,) buffer) in place by
    max_norm / (norm + 1e-6) when that factor is below 1, like clip_grad_norm_.

    norm is the global L2 norm over every entry, accumulated in float64. Returns
    (norm before clipping as a float, whether grads were scaled). A non-finite norm is
    returned as is and nothing is scaled (the caller decides what divergence means).
    max_norm=None only measures the norm."""
    flat = _flat_gradient(grads)
    if max_norm is not None:
        max_norm = _check_limit("max_norm", max_norm)
    norm = math.sqrt(sum_of_squares(flat))
    if max_norm is None or not math.isfinite(norm):
        return norm, False
    factor = max_norm / (norm + NORM_EPSILON)
    if factor >= 1.0:
        return norm, False
    scale(flat, flat.dtype.type(factor))
    return norm, True


def clip_grad_value(grads, clip_value):
    """Clamp every entry of `grads` into [-clip_value, clip_value] in place, like
    clip_grad_value_ (NaN entries stay NaN). Returns whether any entry changed."""
    flat = _flat_gradient(grads)
    clip_value = _check_limit("clip_value", clip_value)
    cast = flat.dtype.type
    return bool(clip_by_value(flat, cast(-clip_value), cast(clip_value)))


def _check_limit(name, value):
    """A finite number > 0 (a fast path for plain floats: the trainer clips every update)."""
    if type(value) is float and 0.0 < value < math.inf:
        return value
    return check_float(name, value, minimum=0.0, strictly_greater=True)


def _flat_gradient(grads):
    """A 1-D view of `grads` (writeable, C-contiguous, float32 or float64)."""
    if not isinstance(grads, np.ndarray):
        raise TypeError(f"grads must be a numpy array; got {type(grads).__name__}")
    if grads.dtype not in FLOAT_DTYPES:
        raise TypeError(f"grads must be float32 or float64; got {grads.dtype}")
    if not grads.flags.c_contiguous or not grads.flags.writeable:
        raise ValueError("grads must be a writeable C-contiguous array (it is clipped in place)")
    return grads.reshape(-1)
