"""Entry point `python -m bench.gemm_blocks`: the per-step recurrent GEMMs of the two thread
plans (engine/thread_plan.py) with two threads side by side, for the standard (bench/configs.py)
configurations, float32, through gemm in a jitted parallel loop as the kernels call it
(the process's BLAS backend, engine/blas.py, one thread each).

Batch shards: each thread multiplies its B / 2 streams by the whole weight, forward
(B/2, H) x (H, GH), backward (B/2, GH) x (GH, H). Hidden blocks (engine/split.py): each
thread multiplies all B streams by its half of the weight, forward (B, H) x (H, GH/2),
backward (B, GH/2) x (GH/2, H). Same FLOPs; one parallel region per product, as one step.
Prints a Markdown table of the total GFLOP/s of the two threads (median of ROUNDS)."""
import statistics
import time

import numba
import numpy as np

from bench.configs import CONFIGS
from engine.parameters import GATES
from kernels.gemm import gemm

ROUNDS = 7
ROUND_S = 0.1


@numba.njit(nogil=True, parallel=True)
def side_by_side(a, weight, out, n):
    """n steps: thread k computes out[k] = a[k] weight[k] (two threads, one region a step)."""
    for _ in range(n):
        for k in numba.prange(2):
            gemm(a[k], weight[k], out[k])


def gflops(M, K, N):
    """Total GFLOP/s of two threads each multiplying (M, K) x (K, N)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, M, K), dtype=np.float32)
    weight = rng.standard_normal((2, K, N), dtype=np.float32) / np.float32(np.sqrt(K))
    out = np.empty((2, M, N), np.float32)
    side_by_side(a, weight, out, 2)
    started = time.perf_counter()
    side_by_side(a, weight, out, 3)
    n = max(1, round(ROUND_S / ((time.perf_counter() - started) / 3)))
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        side_by_side(a, weight, out, n)
        samples.append((time.perf_counter() - started) / n)
    return 2 * 2 * M * K * N / statistics.median(samples) / 1e9


def main():
    numba.set_num_threads(2)
    print("| config | forward: shards | forward: hidden blocks | backward: shards | backward: hidden blocks |")
    print("|---|---|---|---|---|")
    for config in CONFIGS.values():
        if config.batch < 2:
            continue
        B, H = config.batch, config.hidden_size
        GH = GATES[config.cell] * H
        rates = [gflops(B // 2, H, GH), gflops(B, H, GH // 2), gflops(B // 2, GH, H), gflops(B, GH // 2, H)]
        print(f"| {config.name} | " + " | ".join(f"{rate:.0f}" for rate in rates) + " |", flush=True)


if __name__ == "__main__":
    main()
