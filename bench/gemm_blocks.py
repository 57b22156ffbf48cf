"""Entry point `python -m bench.gemm_blocks`: would the per-step recurrent GEMM run faster
as several smaller GEMMs? Measured for the 2-core shards of the DESIGN.md section 10
configurations (M = B / 2 rows), float32, through a jitted np.dot loop as the kernels
call it (SciPy's OpenBLAS, one thread).

For each shape (M, K) x (K, N), forward (M, H) x (H, G*H) and backward (M, G*H) x (G*H, H),
it times the single call the kernels make today and every blocking into row blocks of
m rows and column blocks of n columns (the weights stored block by block, each block
contiguous, as Numba's np.dot needs), and prints the best. Prints a Markdown table
(GFLOP/s of one call, of the best blocking, and that blocking)."""
import statistics
import time

import numba
import numpy as np

from bench.configs import CONFIGS
from engine.parameters import GATES
from engine.passes import StoredPass  # noqa: F401  importing the engine sets one BLAS thread

ROUNDS = 5
ROUND_S = 0.05


@numba.njit(nogil=True)
def blocked_dot(a, blocks, out, rows, n):
    """n times out = a w, w given as column blocks (N / n_b, K, n_b), in row blocks of
    `rows` rows: out (N / n_b, M, n_b), block c holding columns c*n_b.. of the product."""
    M = a.shape[0]
    for _ in range(n):
        for column in range(blocks.shape[0]):
            for start in range(0, M, rows):
                np.dot(a[start:start + rows], blocks[column], out[column, start:start + rows])


def seconds(M, K, N, rows, columns):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K), dtype=np.float32)
    weight = rng.standard_normal((K, N), dtype=np.float32)
    blocks = np.ascontiguousarray(weight.reshape(K, N // columns, columns).transpose(1, 0, 2))
    out = np.empty((N // columns, M, columns), np.float32)
    blocked_dot(a, blocks, out, rows, 1)
    expected = a @ weight
    error = np.abs(out.transpose(1, 0, 2).reshape(M, N) - expected).max()
    assert error <= 1e-4 * np.abs(expected).max(), "the blocked product differs"
    started = time.perf_counter()
    blocked_dot(a, blocks, out, rows, 3)
    n = max(1, round(ROUND_S / ((time.perf_counter() - started) / 3)))
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        blocked_dot(a, blocks, out, rows, n)
        samples.append((time.perf_counter() - started) / n)
    return statistics.median(samples)


def best_blocking(M, K, N):
    """(seconds of one call, (seconds, rows, columns) of the fastest blocking)."""
    single = seconds(M, K, N, M, N)
    candidates = []
    rows = M
    while rows >= 1:
        columns = N
        while columns >= 32 and N % columns == 0:
            candidates.append((seconds(M, K, N, rows, columns), rows, columns))
            columns //= 2
        rows //= 2
    return single, min(candidates)


def main():
    print("| config | GEMM | M x K x N | one call GFLOP/s | best blocked GFLOP/s | row x column block |")
    print("|---|---|---|---|---|---|")
    for config in CONFIGS.values():
        if config.batch < 2:
            continue
        M, H, G = config.batch // 2, config.hidden_size, GATES[config.cell]
        for kind, (K, N) in (("forward", (H, G * H)), ("backward", (G * H, H))):
            flops = 2 * M * K * N
            single, (blocked, rows, columns) = best_blocking(M, K, N)
            print(f"| {config.name} | {kind} | {M} x {K} x {N} | {flops / single / 1e9:.0f} | "
                  f"{flops / blocked / 1e9:.0f} | {rows} x {columns} |", flush=True)


if __name__ == "__main__":
    main()
