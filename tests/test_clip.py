"""Gradient clipping: properties (after optax's tests), edge cases, and torch.nn.utils."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engine.clip import NORM_EPSILON, clip_grad_norm, clip_grad_value

DTYPE_EPS = {np.float32: 1e-6, np.float64: 1e-14}  # relative rounding slack per dtype


@st.composite
def gradients(draw, min_size=1):
    """(grads (N,) of float32 or float64, dtype)."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    elements = st.floats(-1e3, 1e3, allow_nan=False, width=32 if dtype is np.float32 else 64)
    return draw(arrays(dtype, st.integers(min_size, 300), elements=elements)), dtype


max_norms = st.floats(0.1, 100.0)
property_settings = settings(max_examples=60, deadline=None)


def norm64(x):
    return float(np.sqrt(np.sum(x.astype(np.float64) ** 2)))


@property_settings
@given(gradients(), max_norms)
def test_norm_clipping_scales_to_max_norm(drawn, max_norm):
    grads, dtype = drawn
    original = grads.copy()
    norm, clipped = clip_grad_norm(grads, max_norm)
    assert norm == pytest.approx(norm64(original), rel=1e-12, abs=1e-300)
    factor = max_norm / (norm + NORM_EPSILON)
    assert clipped == (factor < 1)
    assert grads.dtype == dtype
    if clipped:
        np.testing.assert_array_equal(grads, original * dtype(factor))
        # torch's guard leaves the norm a hair below max_norm: max_norm * norm / (norm + 1e-6)
        assert norm64(grads) == pytest.approx(max_norm * norm / (norm + NORM_EPSILON),
                                              rel=4 * DTYPE_EPS[dtype])
        assert norm64(grads) == pytest.approx(max_norm, rel=NORM_EPSILON / max_norm + 4 * DTYPE_EPS[dtype])
    else:
        np.testing.assert_array_equal(grads, original)


@property_settings
@given(gradients(), max_norms)
def test_norm_clipping_twice_changes_nothing_more(drawn, max_norm):
    grads, dtype = drawn
    clip_grad_norm(grads, max_norm)
    once = grads.copy()
    clip_grad_norm(grads, max_norm)
    # A second scale factor max_norm / (norm + 1e-6) is within 1e-6 / max_norm of 1.
    np.testing.assert_allclose(grads, once, rtol=NORM_EPSILON / max_norm + 2 * DTYPE_EPS[dtype])


@property_settings
@given(gradients(), max_norms, st.floats(0.0, 0.999))
def test_norm_below_the_limit_changes_nothing(drawn, max_norm, fraction):
    grads, dtype = drawn
    norm = norm64(grads)
    if norm > 0:  # rescaled in float64, so tiny norms do not overflow the factor
        grads = (grads.astype(np.float64) * (fraction * (max_norm - NORM_EPSILON) / norm)).astype(dtype)
    original = grads.copy()
    returned, clipped = clip_grad_norm(grads, max_norm)
    assert not clipped and returned <= max_norm
    np.testing.assert_array_equal(grads, original)


@property_settings
@given(gradients(), st.floats(1e-3, 1e3))
def test_value_clipping_bounds_entries(drawn, clip_value):
    grads, dtype = drawn
    original = grads.copy()
    limit = dtype(clip_value)
    clipped = clip_grad_value(grads, clip_value)
    np.testing.assert_array_equal(grads, np.clip(original, -limit, limit))
    assert np.all(np.abs(grads) <= limit)
    assert clipped == bool(np.any(np.abs(original) > limit))
    assert grads.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_norm_is_returned_and_nothing_is_scaled(dtype, bad):
    grads = np.arange(10, dtype=dtype)
    grads[3] = bad
    original = grads.copy()
    norm, clipped = clip_grad_norm(grads, 1.0)
    assert not np.isfinite(norm) and not clipped
    np.testing.assert_array_equal(grads, original)


def test_float32_norm_does_not_overflow():
    grads = np.full(100, 1e30, np.float32)  # sum of squares overflows float32, not float64
    norm, clipped = clip_grad_norm(grads, 1.0)
    assert norm == pytest.approx(1e31, rel=1e-6) and clipped
    assert norm64(grads) == pytest.approx(1.0, rel=1e-5)


def test_norm_only_without_max_norm():
    grads = np.full(4, 3.0, np.float32)
    assert clip_grad_norm(grads, None) == (6.0, False)
    np.testing.assert_array_equal(grads, 3.0)


def test_edge_cases():
    zeros = np.zeros(5)
    assert clip_grad_norm(zeros, 1.0) == (0.0, False)
    assert clip_grad_norm(np.zeros(0, np.float32), 1.0) == (0.0, False)
    with_nan = np.array([np.nan, 5.0, -5.0, 0.5])
    assert clip_grad_value(with_nan, 1.0)
    np.testing.assert_array_equal(with_nan, [np.nan, 1.0, -1.0, 0.5])  # NaN stays NaN, like torch
    matrix = np.full((3, 4), 2.0, np.float32)  # any C-contiguous shape is clipped as one vector
    norm, clipped = clip_grad_norm(matrix, 1.0)
    assert norm == pytest.approx(np.sqrt(48)) and clipped and matrix.shape == (3, 4)


@pytest.mark.parametrize("call, error, match", [
    (lambda g: clip_grad_norm(g, 0.0), ValueError, "max_norm"),
    (lambda g: clip_grad_norm(g, -1.0), ValueError, "max_norm"),
    (lambda g: clip_grad_norm(g, float("nan")), ValueError, "max_norm"),
    (lambda g: clip_grad_norm(g, "1"), TypeError, "max_norm"),
    (lambda g: clip_grad_value(g, 0.0), ValueError, "clip_value"),
    (lambda g: clip_grad_value(g, float("inf")), ValueError, "clip_value"),
    (lambda g: clip_grad_norm(list(g), 1.0), TypeError, "grads"),
    (lambda g: clip_grad_norm(g.astype(np.int64), 1.0), TypeError, "grads"),
    (lambda g: clip_grad_value(g[::2], 1.0), ValueError, "grads"),
    (lambda g: clip_grad_norm(np.broadcast_to(g, g.shape), 1.0), ValueError, "grads"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call(np.ones(6))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_matches_torch(dtype, max_norm):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    flat = rng.standard_normal(101).astype(dtype)
    pieces = np.split(np.arange(101), [30, 31, 80])  # several parameter tensors of one buffer
    tensors = []
    for index in pieces:
        tensor = torch.nn.Parameter(torch.zeros(len(index), dtype=getattr(torch, np.dtype(dtype).name)))
        tensor.grad = torch.from_numpy(flat[index].copy())
        tensors.append(tensor)
    tolerance = 1e-12 if dtype is np.float64 else 1e-6
    norm, clipped = clip_grad_norm(flat, max_norm)
    torch_norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    assert norm == pytest.approx(torch_norm.item(), rel=tolerance)
    assert clipped == (max_norm < norm)
    np.testing.assert_allclose(flat, torch.cat([t.grad for t in tensors]).numpy(), rtol=tolerance)
    flat = torch.cat([t.grad for t in tensors]).numpy()  # value clipping from equal inputs
    clipped = clip_grad_value(flat, 0.05)
    torch.nn.utils.clip_grad_value_(tensors, 0.05)
    assert clipped
    np.testing.assert_array_equal(flat, torch.cat([t.grad for t in tensors]).numpy())
