"""The small-product measurements behind docs/performance.md's "BLAS backend" section
(bench.blas_backends --small, bench.small_steps) keep measuring the right things: the
hand-written kernel computes the product it is timed on, and the update's breakdown
measures every piece (not its timings)."""
import numpy as np
import pytest

from bench.blas_backends import small_rows_product, small_seconds
from bench.configs import Config
from bench.small_steps import breakdown, row


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("a_transposed", [False, True])
@pytest.mark.parametrize("b_transposed", [False, True])
def test_hand_written_kernel_is_the_product(dtype, a_transposed, b_transposed):
    """Against np.dot for 0-9 rows, K around its unroll of 8 (0, 1, 7, 8, 9, 17) and
    N = 0, 1, 33; the sums run in index order, so float64 inputs on a grid of
    small integers give np.dot's exact result."""
    rng = np.random.default_rng(0)
    for M in range(10):
        for K in (0, 1, 7, 8, 9, 17):
            for N in (0, 1, 33):
                a = rng.integers(-4, 5, (K, M) if a_transposed else (M, K)).astype(dtype)
                b = rng.integers(-4, 5, (N, K) if b_transposed else (K, N)).astype(dtype)
                a, b = (a.T if a_transposed else a), (b.T if b_transposed else b)
                out = np.full((M, N), np.nan, dtype)
                assert small_rows_product(a, b, out) is out
                np.testing.assert_array_equal(out, np.dot(a, b), err_msg=f"{M}x{K}x{N}")


def test_a_wrong_kernel_is_refused_before_it_is_timed(monkeypatch):
    import bench.blas_backends as module

    monkeypatch.setattr(module, "repeat_rows", lambda a, b, out, n: out.fill(0))
    with pytest.raises(RuntimeError, match=r"rows computed a wrong \(2, 4\) x \(4, 8\) product"):
        small_seconds("rows", 2, 4, 8, 0.001)
    assert small_seconds("gemm", 2, 4, 8, 0.001) > 0


def test_breakdown_of_a_tiny_update_measures_every_piece():
    config = Config("t", "lstm", 1, 4, 2, 5, 1)
    us = breakdown(config, rounds=1, round_s=0.001)
    assert us["M"] in (1, 2)
    pieces = ("update", "forward", "backward", "clip + optimize", "forward product", "forward cell",
              "backward product", "head dL/dh", "backward cell")
    assert all(np.isfinite(us[name]) and us[name] > 0 for name in pieces[:2] + pieces[3:]), us
    line = row("t", us)
    assert line.startswith(f"| t | {us['M']} | ") and line.count("|") == 15
