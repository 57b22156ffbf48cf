"""The float32 rational activations stay within their documented error bound."""
import numba
import numpy as np
import pytest

from kernels.activations import sigmoid, tanh

BOUND = 1e-6  # documented in kernels/activations.py


@numba.njit
def _apply(x, tanh_out, sigmoid_out):
    for k in range(x.shape[0]):
        tanh_out[k] = tanh(x[k])
        sigmoid_out[k] = sigmoid(x[k])


def _evaluate(x):
    tanh_out, sigmoid_out = np.empty_like(x), np.empty_like(x)
    _apply(x, tanh_out, sigmoid_out)
    return tanh_out, sigmoid_out


def test_float32_error_bound_over_dense_grid():
    # Dense over the fitted range and well beyond it (the clamp region).
    x = np.concatenate([np.linspace(-20, 20, 400_001), [-1e30, -88.0, 88.0, 1e30]]).astype(np.float32)
    tanh_out, sigmoid_out = _evaluate(x)
    exact = x.astype(np.float64)
    assert np.max(np.abs(tanh_out - np.tanh(exact))) < BOUND
    with np.errstate(over="ignore"):  # exp(1e30) is inf, and 1 / inf the right 0
        assert np.max(np.abs(sigmoid_out - 1 / (1 + np.exp(-exact)))) < BOUND


def test_float32_keeps_dtype_and_symmetry():
    x = np.linspace(0, 12, 1001).astype(np.float32)
    tanh_pos, sigmoid_pos = _evaluate(x)
    tanh_neg, sigmoid_neg = _evaluate(-x)
    assert tanh_pos.dtype == np.float32
    np.testing.assert_array_equal(tanh_neg, -tanh_pos)  # odd function, exactly
    np.testing.assert_allclose(sigmoid_pos + sigmoid_neg, 1.0, atol=2 * BOUND)
    assert np.all(np.abs(tanh_pos) <= 1.0 + BOUND)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_float32_non_finite_inputs(value):
    tanh_out, sigmoid_out = _evaluate(np.array([value], np.float32))
    if np.isnan(value):  # NaN must propagate, so divergence is detected downstream
        assert np.isnan(tanh_out[0]) and np.isnan(sigmoid_out[0])
    else:
        assert abs(tanh_out[0] - np.sign(value)) < BOUND
        assert abs(sigmoid_out[0] - (value > 0)) < BOUND


def test_float64_is_exact():
    x = np.linspace(-30, 30, 10_001)
    tanh_out, sigmoid_out = _evaluate(x)
    np.testing.assert_allclose(tanh_out, np.tanh(x), rtol=1e-15, atol=0)  # libm, last ulp
    np.testing.assert_allclose(sigmoid_out, 1 / (1 + np.exp(-x)), rtol=1e-15, atol=0)
