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

--train CONFIG ...: the training step instead (the Trainer's update, as `bptt bench`
times it), k steps/s per backend, each with the plan the Trainer chooses on it, or with
--plan SHARDS,SPLIT on both.

--small: the products of one to 16 rows (the per-step products of single, tiny and
small: (M, H) x (H, 4H) and (M, 4H) x (4H, H) for H = 32, 64, and the head's dL/dh
(M, 1) x (1, H)), microseconds per call, through the jitted gemm loop on each backend
against a hand-written jitted kernel (small_rows_product below: vectorised along N, the
sum over K in index order, no fastmath, so its bits are the same run to run), whose
rounds are those of both processes."""
import argparse
import json
import os
import statistics
import subprocess
import sys

import numba
import numpy as np

from bench.runner import steps_per_round, time_steps

BATCHES = (1, 4, 16, 32, 64)
HIDDEN = (64, 128, 256, 512)
CHUNK_ROWS = 3200
ROUNDS = 11
ROUND_S = 0.02
TRAIN_ROUND_S = 0.3
SMALL_ROWS = (1, 2, 4, 8, 16)
SMALL_HIDDEN = (32, 64)
SMALL_KERNELS = ("gemm", "rows")  # the kernels' entry point, small_rows_product


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


def small_shapes():
    """{name: (M, K, N)} of the --small table."""
    found = {}
    for H in SMALL_HIDDEN:
        for M in SMALL_ROWS:
            found[f"H={H} forward M={M}"] = (M, H, 4 * H)
            found[f"H={H} backward M={M}"] = (M, 4 * H, H)
            found[f"H={H} head dL/dh M={M}"] = (M, 1, H)
    return found


@numba.njit(nogil=True, error_model="numpy")
def small_rows_product(a, b, out):
    """out (M, N) = a (M, K) b (K, N), b C-contiguous: row by row, eight rows of b at a
    time added in index order (the same sums as one at a time), vectorised along N."""
    M, K = a.shape
    N = b.shape[1]
    whole = K - K % 8
    for m in range(M):
        row = out[m]
        for n in range(N):
            row[n] = 0
        for k in range(0, whole, 8):
            s0, s1, s2, s3, s4, s5, s6, s7 = (a[m, k], a[m, k + 1], a[m, k + 2], a[m, k + 3], a[m, k + 4],
                                              a[m, k + 5], a[m, k + 6], a[m, k + 7])
            w0, w1, w2, w3, w4, w5, w6, w7 = b[k], b[k + 1], b[k + 2], b[k + 3], b[k + 4], b[k + 5], b[k + 6], b[k + 7]
            for n in range(N):
                row[n] = (row[n] + s0 * w0[n] + s1 * w1[n] + s2 * w2[n] + s3 * w3[n] + s4 * w4[n] + s5 * w5[n]
                          + s6 * w6[n] + s7 * w7[n])
        for k in range(whole, K):
            scale, weights = a[m, k], b[k]
            for n in range(N):
                row[n] += scale * weights[n]
    return out


@numba.njit(nogil=True)
def repeat_rows(a, b, out, n):
    """n times out = a b by small_rows_product, as bench.gemm_rate.repeat_gemm calls gemm."""
    for _ in range(n):
        small_rows_product(a, b, out)


def small_seconds(kernel, M, K, N, round_s):
    """Seconds of one float32 (M, K) x (K, N) product by `kernel` (SMALL_KERNELS)."""
    from bench.gemm_rate import median_seconds, repeat_gemm

    repeat = repeat_gemm if kernel == "gemm" else repeat_rows
    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K), dtype=np.float32)
    b = rng.standard_normal((K, N), dtype=np.float32) / np.float32(np.sqrt(K))
    out = np.empty((M, N), np.float32)
    repeat(a, b, out, 1)
    if not np.allclose(out, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4):  # a wrong kernel is not timed
        raise RuntimeError(f"{kernel} computed a wrong ({M}, {K}) x ({K}, {N}) product")
    return median_seconds(lambda n: repeat(a, b, out, n), 1, round_s)


def serve(round_s, plan):
    """A child: first its backend as JSON; then for each line read from stdin, "gemm M K N
    transposed": the seconds of one round of that GEMM; "small KERNEL M K N": of that
    product by that kernel (small_seconds); "train CONFIG": the seconds per update of one
    round of that configuration's training step and its plan's label."""
    from bench.gemm_rate import gemm_seconds
    from kernels.gemm import BACKEND

    print(json.dumps(BACKEND.describe()), flush=True)
    trainers = {}
    for line in sys.stdin:
        kind, *what = line.split()
        if kind == "gemm":
            M, K, N, *transposed = what
            print(gemm_seconds(int(M), int(K), int(N), 1, round_s, "".join(transposed)), flush=True)
        elif kind == "small":
            kernel, M, K, N = what
            print(small_seconds(kernel, int(M), int(K), int(N), round_s), flush=True)
        else:
            if what[0] not in trainers:
                trainers[what[0]] = _training_step(what[0], plan)
            step, steps, label = trainers[what[0]]
            print(time_steps(step, steps, 0), label, flush=True)


def _training_step(name, plan):
    """(step, steps per round of TRAIN_ROUND_S, plan label) of configuration `name`: the
    Trainer's update as `bptt bench` times it, with `plan` = (shards, split) or the
    Trainer's own choice (None)."""
    from bench.configs import DTYPE, get_config
    from bench.report import plan_label
    from bench.workloads import CLIP_NORM, LR, SEED, make_data
    from engine.model import Model
    from engine.trainer import Trainer

    config = get_config(name)
    x, y = make_data(config)
    shards, split = plan or (None, None)
    trainer = Trainer(Model(*config.model_args(), dtype=DTYPE, seed=SEED), optimizer="adam", lr=LR,
                      k1=config.chunk, clip_norm=CLIP_NORM, schedule="constant", shards=shards, split=split)

    def step():
        trainer.partial_fit(x, y)

    step()
    return step, steps_per_round(step, TRAIN_ROUND_S, 0), plan_label(trainer.thread_plan)


def _children(backends, plan):
    """One serving child process per backend: {backend: (process, described backend)}."""
    arguments = ["--serve", str(ROUND_S)] + (["--plan", f"{plan[0]},{plan[1]}"] if plan else [])
    children = {backend: subprocess.Popen([sys.executable, "-m", "bench.blas_backends", *arguments],
                                          env={**os.environ, "BPTT_BLAS": backend}, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True)
                for backend in backends}
    return {backend: (child, json.loads(child.stdout.readline())) for backend, child in children.items()}


def _ask(child, request):
    child.stdin.write(request + "\n")
    child.stdin.flush()
    return child.stdout.readline().split()


def measure(backends, requests, rounds, plan=None):
    """{backend: {"backend": described, "seconds": {name: [per round]}, "plans": {name:
    label}}} for requests {name: request line}: one child process per backend, asked in
    turns, request by request, round by round, the order of the backends alternating."""
    children = _children(backends, plan)
    runs = {backend: {"backend": described, "seconds": {}, "plans": {}} for backend, (_, described) in children.items()}
    for number in range(rounds):
        for name, request in requests.items():
            for backend in backends[number % 2:] + backends[:number % 2]:
                seconds, *label = _ask(children[backend][0], request)
                runs[backend]["seconds"].setdefault(name, []).append(float(seconds))
                if label:
                    runs[backend]["plans"][name] = label[0]
    for child, _ in children.values():
        child.stdin.close()
        child.wait()
    return runs


def gemm_requests(shapes):
    return {name: f"gemm {M} {K} {N} {transposed}" for name, (M, K, N, transposed) in shapes.items()}


def train_table(runs):
    """Markdown: k steps/s per backend and configuration, median (min-max), the ratio."""
    from bench.configs import get_config

    lines = ["| config | plan openblas | plan mkl | openblas k steps/s (min-max) | mkl k steps/s (min-max) | "
             "mkl / openblas |", "|---|---|---|---|---|---|"]
    for name in runs["openblas"]["seconds"]:
        steps = get_config(name).steps_per_update
        rates = {backend: [steps / seconds / 1e3 for seconds in runs[backend]["seconds"][name]] for backend in runs}
        cells = [f"{statistics.median(r):.1f} ({min(r):.1f}-{max(r):.1f})" for r in rates.values()]
        ratio = statistics.median(rates["mkl"]) / statistics.median(rates["openblas"])
        lines.append(f"| {name} | {runs['openblas']['plans'][name]} | {runs['mkl']['plans'][name]} | "
                     + " | ".join(cells) + f" | {ratio:.2f} |")
    return "\n".join(lines)


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


def small_requests():
    return {f"{name} {kernel}": f"small {kernel} {M} {K} {N}"
            for name, (M, K, N) in small_shapes().items() for kernel in SMALL_KERNELS}


def small_table(runs):
    """Markdown: median microseconds per call (min-max) of gemm on each backend and of the
    hand-written kernel."""
    def us(backend, name, kernel):
        return [seconds * 1e6 for seconds in runs[backend]["seconds"][f"{name} {kernel}"]]

    def cell(values):
        return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"

    lines = ["| product | M x K x N | openblas | mkl | hand-written |", "|---|---|---|---|---|"]
    for name, (M, K, N) in small_shapes().items():
        hand = us("openblas", name, "rows") + us("mkl", name, "rows")
        cells = [us("openblas", name, "gemm"), us("mkl", name, "gemm"), hand]
        lines.append(f"| {name} | {M}x{K}x{N} | " + " | ".join(cell(values) for values in cells) + " |")
    versions = "; ".join(f"{b} {runs[b]['backend']['version']}" for b in runs)
    return "\n".join(lines) + f"\n\n{versions}; microseconds per call, median (min-max)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--json", action="store_true", help="print the raw rounds as JSON")
    parser.add_argument("--small", action="store_true",
                        help="the products of 1-16 rows: gemm on each backend and a hand-written kernel (see above)")
    parser.add_argument("--train", nargs="+", metavar="CONFIG",
                        help="instead, the training step of these configurations (bench/configs.py)")
    parser.add_argument("--plan", metavar="SHARDS,SPLIT", help="with --train: this plan on both backends "
                        "(default: the Trainer's choice for each)")
    parser.add_argument("--serve", type=float, metavar="ROUND_S", help=argparse.SUPPRESS)
    args = parser.parse_args()
    plan = tuple(int(part) for part in args.plan.split(",")) if args.plan else None
    if args.serve is not None:  # a child, on the backend BPTT_BLAS names
        serve(args.serve, plan)
        return
    if args.train:
        runs = measure(["openblas", "mkl"], {name: f"train {name}" for name in args.train}, args.rounds, plan)
        print(json.dumps(runs) if args.json else train_table(runs))
        return
    if args.small:
        runs = measure(["openblas", "mkl"], small_requests(), args.rounds)
        print(json.dumps(runs) if args.json else small_table(runs))
        return
    runs = measure(["openblas", "mkl"], gemm_requests(kernel_shapes()), args.rounds)
    print(json.dumps(runs) if args.json else table(runs))


if __name__ == "__main__":
    main()
