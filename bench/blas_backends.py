"""Entry point `python -m bench.blas_backends`: the kernels' GEMM shapes timed with each
BLAS backend (kernels/blas.py), float32, one thread, through the jitted gemm loop of
bench.gemm_rate (as the kernels call it, not through ctypes).

Each backend runs in its own process (a process binds one backend); the processes take
turns, ROUNDS rounds, so that drift in the machine's speed reaches both alike. Shapes:
the per-step recurrent GEMMs of an LSTM, forward (B, H) x (H, 4H) and backward
(B, 4H) x (4H, H), for B in BATCHES and H in HIDDEN; the whole-chunk GEMMs of T*B = 3200
rows (T = 100, B = 32): the input projection x (3200, H) x weight_ih.T (H, 4H) of a layer
above another and the weight gradient dgates.T (4H, 3200) x (3200, H).
Prints a Markdown table: per shape each backend's median GFLOP/s over the rounds, with
the spread (min-max), and the ratio of the medians; --json for the raw rounds."""
import argparse
import json
import os
import statistics
import subprocess
import sys

BATCHES = (1, 4, 16, 32, 64)
HIDDEN = (64, 128, 256, 512)
CHUNK_ROWS = 3200
ROUNDS = 5
ROUND_S = 0.02


def shapes():
    """(name, M, K, N, transposed) of every timed GEMM."""
    found = []
    for H in HIDDEN:
        for B in BATCHES:
            found += [(f"step forward B={B} H={H}", B, H, 4 * H, ""),
                      (f"step backward B={B} H={H}", B, 4 * H, H, "")]
        found += [(f"chunk input projection H={H}", CHUNK_ROWS, H, 4 * H, "b"),
                  (f"chunk weight gradient H={H}", 4 * H, CHUNK_ROWS, H, "a")]
    return found


def one_round(round_s):
    """GFLOP/s of every shape with this process's backend: {"backend", "gflops": {name: rate}}."""
    from bench.gemm_rate import gemm_seconds
    from kernels.gemm import BACKEND

    rates = {name: 2 * M * K * N / gemm_seconds(M, K, N, 3, round_s, transposed) / 1e9
             for name, M, K, N, transposed in shapes()}
    return {"backend": BACKEND.describe(), "gflops": rates}


def measure(backends, rounds, round_s):
    """Alternated rounds, one process per backend and round: {backend: [round, ...]}."""
    runs = {backend: [] for backend in backends}
    for _ in range(rounds):
        for backend in backends:
            environment = {**os.environ, "BPTT_BLAS": backend}
            done = subprocess.run([sys.executable, "-m", "bench.blas_backends", "--one-round", str(round_s)],
                                  env=environment, capture_output=True, text=True, check=True)
            runs[backend].append(json.loads(done.stdout))
    return runs


def table(runs):
    """Markdown: median GFLOP/s (min-max) per backend and shape, and mkl / openblas."""
    backends = list(runs)
    lines = ["| GEMM | M x K x N | " + " | ".join(f"{b} GFLOP/s (min-max)" for b in backends)
             + (" | mkl / openblas |" if len(backends) == 2 else " |"),
             "|---|---|" + "---|" * (len(backends) + (len(backends) == 2))]
    for name, M, K, N, _ in shapes():
        cells, medians = [], {}
        for backend in backends:
            rates = [one["gflops"][name] for one in runs[backend]]
            medians[backend] = statistics.median(rates)
            cells.append(f"{medians[backend]:.1f} ({min(rates):.1f}-{max(rates):.1f})")
        ratio = [f"{medians['mkl'] / medians['openblas']:.2f}"] if set(backends) == {"mkl", "openblas"} else []
        lines.append(f"| {name} | {M}x{K}x{N} | " + " | ".join(cells + ratio) + " |")
    versions = "; ".join(f"{b}: {runs[b][0]['backend']['version']}" for b in backends)
    return "\n".join(lines) + f"\n\n{versions}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--backends", default="openblas,mkl", help="comma-separated (default: both)")
    parser.add_argument("--json", action="store_true", help="print the raw rounds as JSON")
    parser.add_argument("--one-round", type=float, metavar="ROUND_S", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_round is not None:  # a child: one round with the backend BPTT_BLAS names
        print(json.dumps(one_round(args.one_round)))
        return
    runs = measure(args.backends.split(","), args.rounds, ROUND_S)
    print(json.dumps(runs) if args.json else table(runs))


if __name__ == "__main__":
    main()
