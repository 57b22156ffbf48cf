"""Scalar activations shared by the cell kernels.

Each takes `one`, the constant 1 in the kernel's dtype (`array.dtype.type(1)`), because a
bare literal would silently promote float32 arithmetic to float64.
"""
import numpy as np

from kernels.config import inline_jit


@inline_jit
def sigmoid(value, one):
    # exp(-value) overflows to inf for value << 0, giving exactly 0: no NaN.
    return one / (one + np.exp(-value))

