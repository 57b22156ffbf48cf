"""Entry point `python -m bench.blas_backends`: the kernels' GEMM shapes timed with each
BLAS backend (kernels/blas.py), float32, one thread, through the jitted gemm loop of
bench.gemm_rate (as the kernels call it, not through ctypes).

Each backend runs in its own process (a process binds one backend); the processes take
turns shape by shape, ROUNDS rounds, the order of the two alternating, so that drift in
the machine's speed and other processes' load reach both alike.

Default: a Markdown table, per shape each backend's median GFLOP/s over the rounds, the
spread (min-max) and the ratio of the medians. Shapes: the per-step recurrent GEMMs of
an LSTM, forward (B, H) x (H, 4H) and backward (B, 4H) x (4H, H), for B in BATCHES and H
in HIDDEN; the whole-chunk GEMMs of T*B = 3200 rows (T = 100, B = 32): the input
projection x (3200, H) x weight_ih.T (H, 4H) of a layer above another and the weight
gradient dgates.T (4H, 3200) x (3200, H). --json: the raw rounds.

--rates: the thread plan's GEMM figures for MKL (one entry of engine/thread_plan.py's
GEMM_RATES): the OpenBLAS figures of its MEASURED, each times the median over the rounds
of MKL's time / OpenBLAS's on that shape here (bench.gemm_rate's grid). Ratios taken
call by call hold on a busy machine where absolute times do not, and the rest of the
cost model (element-wise pass, per-update costs) stays on the scale it was fitted at."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

BATCHES = (1, 4, 16, 32, 64)
HIDDEN = (64, 128, 256, 512)
CHUNK_ROWS = 3200
ROUNDS = 11
ROUND_S = 0.02


def kernel_shapes():
    """{name: (M, K, N, transposed)} of the table's GEMMs."""
    found = {}
    for H in HIDDEN:
        for B in BATCHES:
            found[f"step forward B={B} H={H}"] = (B, H, 4 * H, "")
            found[f"step backward B={B} H={H}"] = (B, 4 * H, H, "")
        found[f"chunk input projection H={H}"] = (CHUNK_ROWS, H, 4 * H, "b")
        found[f"chunk weight gradient H={H}"] = (4 * H, CHUNK_ROWS, H, "a")
    return found


def rate_shapes():
    """{name: (M, K, N, transposed)} of the cost model's GEMMs, as bench.gemm_rate times them."""
    from bench.gemm_rate import GATES, HIDDEN as RATE_HIDDEN, PASS_STEPS, ROWS

    found = {}
    for H in RATE_HIDDEN:
        for G in GATES:
            for M in ROWS:
                found[f"{H},{G},{M},forward"] = (M, H, G * H, "")
                found[f"{H},{G},{M},backward"] = (M, G * H, H, "")
            found[f"{H},{G},chunk"] = (G * H, PASS_STEPS * 16, H, "a")
    return found


def serve(round_s):
    """A child: first its backend as JSON; then for each line "M K N transposed" read from
    stdin, the seconds of one round of that GEMM with this process's backend."""
    from bench.gemm_rate import gemm_seconds
    from kernels.gemm import BACKEND

    print(json.dumps(BACKEND.describe()), flush=True)
    for line in sys.stdin:
        M, K, N, *transposed = line.split()
        print(gemm_seconds(int(M), int(K), int(N), 1, round_s, "".join(transposed)), flush=True)


def measure(backends, shapes, rounds, round_s):
    """{backend: {"backend": described, "seconds": {shape name: [seconds per round]}}}:
    one child process per backend, asked in turns, shape by shape, round by round."""
    children = {backend: subprocess.Popen([sys.executable, "-m", "bench.blas_backends", "--serve", str(round_s)],
                                          env={**os.environ, "BPTT_BLAS": backend}, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True)
                for backend in backends}
    runs = {backend: {"backend": json.loads(child.stdout.readline()), "seconds": {}}
            for backend, child in children.items()}
    for number in range(rounds):
        for name, (M, K, N, transposed) in shapes.items():
            for backend in backends[number % 2:] + backends[:number % 2]:
                children[backend].stdin.write(f"{M} {K} {N} {transposed}\n")
                children[backend].stdin.flush()
                runs[backend]["seconds"].setdefault(name, []).append(float(children[backend].stdout.readline()))
    for child in children.values():
        child.stdin.close()
        child.wait()
    return runs


def table(runs):
    """Markdown: median GFLOP/s (min-max) per backend and shape, and mkl / openblas."""
    backends, shapes = list(runs), kernel_shapes()
    both = set(backends) == {"mkl", "openblas"}
    lines = ["| GEMM | M x K x N | " + " | ".join(f"{b} GFLOP/s (min-max)" for b in backends)
             + (" | mkl / openblas |" if both else " |"),
             "|---|---|" + "---|" * (len(backends) + both)]
    for name, (M, K, N, _) in shapes.items():
        cells, medians = [], {}
        for backend in backends:
            rates = [2 * M * K * N / seconds / 1e9 for seconds in runs[backend]["seconds"][name]]
            medians[backend] = statistics.median(rates)
            cells.append(f"{medians[backend]:.1f} ({min(rates):.1f}-{max(rates):.1f})")
        ratio = [f"{medians['mkl'] / medians['openblas']:.2f}"] if both else []
        lines.append(f"| {name} | {M}x{K}x{N} | " + " | ".join(cells + ratio) + " |")
    versions = "; ".join(f"{b} {runs[b]['backend']['version']}" for b in backends)
    return "\n".join(lines) + f"\n\n{versions}"


def mkl_rates(runs):
    """The GEMM_RATES entry of MKL: MEASURED's OpenBLAS figures times the median ratio of
    MKL's time to OpenBLAS's on each shape (see the module docstring)."""
    from engine.thread_plan import MEASURED

    def ratio(name):
        return statistics.median(np.divide(runs["mkl"]["seconds"][name], runs["openblas"]["seconds"][name]))

    gemm = {}
    for key, (forward, backward) in MEASURED["gemm"].items():
        scaled = [[seconds * ratio(f"{key},{M},{kind}") for seconds, M in zip(times, MEASURED["gemm_rows"])]
                  for times, kind in ((forward, "forward"), (backward, "backward"))]
        gemm[key] = [np.maximum.accumulate(times).tolist() for times in scaled]  # more rows never cost less
    chunk = {key: rate / ratio(f"{key},chunk") for key, rate in MEASURED["chunk_flops_per_s"].items()}
    return dict(gemm_rows=MEASURED["gemm_rows"], gemm=gemm, chunk_flops_per_s=chunk)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--json", action="store_true", help="print the raw rounds as JSON")
    parser.add_argument("--rates", action="store_true",
                        help="print MKL's entry of engine/thread_plan.py's GEMM_RATES (see above)")
    parser.add_argument("--serve", type=float, metavar="ROUND_S", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:  # a child, on the backend BPTT_BLAS names
        serve(args.serve)
        return
    runs = measure(["openblas", "mkl"], rate_shapes() if args.rates else kernel_shapes(), args.rounds, ROUND_S)
    if args.json:
        print(json.dumps(runs))
    elif args.rates:
        from bench.gemm_rate import _cpu_name, gemm_module_text

        with open("/proc/loadavg") as loadavg:
            load = loadavg.read().split()[0]
        when = (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {_cpu_name()}, {os.cpu_count()} cores, "
                f"load average {load}, mkl {runs['mkl']['backend']['version']} / openblas "
                f"{runs['openblas']['backend']['version']}, median of {args.rounds} alternated rounds, "
                "python -m bench.blas_backends --rates")
        print(gemm_module_text(mkl_rates(runs), "mkl", when))
    else:
        print(table(runs))


if __name__ == "__main__":
    main()
