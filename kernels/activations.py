"""Scalar activations shared by the cell kernels, chosen by dtype at compile time.

float64 uses the exact np.tanh / np.exp (gradient checks run in float64). float32 uses a
rational approximation, because pip's llvmlite has no vector math library: np.tanh and
np.exp are scalar calls that stop the element-wise loops from vectorising (about 46 ns
against 3 ns per LSTM cell element measured here). Error bound, tested in
tests/test_activations.py: |tanh_approx - tanh| < 1e-6 and |sigmoid_approx - sigmoid|
< 1e-6 everywhere, about ten float32 ulps near 1: far below float32 training noise.
"""
import numpy as np
from numba import types
from numba.extending import overload

from kernels.config import inline_jit

# tanh(x) ~ x P(x^2) / Q(x^2) on [-9, 9], clamped outside (tanh(9) rounds to 1 in
# float32). Coefficients fitted here by iteratively reweighted least squares on [0, 9].
_P0, _P1, _P2, _P3 = (np.float32(v) for v in (0.9999983906745911, 0.12820135056972504,
                                              0.002840474946424365, 1.0296485925209709e-05))
_Q1, _Q2, _Q3, _Q4 = (np.float32(v) for v in (0.46152904629707336, 0.023355873301625252,
                                              0.00022340993746183813, 2.11001690786361e-07))
_CLAMP = np.float32(9.0)
_ONE = np.float32(1.0)
_HALF = np.float32(0.5)


@inline_jit
def tanh_float32(x):
    x = min(max(x, -_CLAMP), _CLAMP)
    s = x * x
    return x * (_P0 + s * (_P1 + s * (_P2 + s * _P3))) / (_ONE + s * (_Q1 + s * (_Q2 + s * (_Q3 + s * _Q4))))


@inline_jit
def sigmoid_float32(x):
    return _HALF + _HALF * tanh_float32(_HALF * x)  # sigmoid(x) = (1 + tanh(x / 2)) / 2


def tanh(x):
    """Hyperbolic tangent of a scalar, in the scalar's dtype (jitted callers only)."""


def sigmoid(x):
    """Logistic sigmoid of a scalar, in the scalar's dtype (jitted callers only)."""


@overload(tanh, inline="always")
def _tanh(x):
    if x == types.float32:
        return lambda x: tanh_float32(x)
    return lambda x: np.tanh(x)


@overload(sigmoid, inline="always")
def _sigmoid(x):
    if x == types.float32:
        return lambda x: sigmoid_float32(x)
    # exp(-x) overflows to inf for x << 0, giving exactly 0: no NaN.
    return lambda x: 1.0 / (1.0 + np.exp(-x))
