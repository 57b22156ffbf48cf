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

from bench.runner import steps_per_round, time_steps

BATCHES = (1, 4, 16, 32, 64)
HIDDEN = (64, 128, 256, 512)
CHUNK_ROWS = 3200
ROUNDS = 11
ROUND_S = 0.02
TRAIN_ROUND_S = 0.3


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


def serve(round_s, plan):
    """A child: first its backend as JSON; then for each line read from stdin, "gemm M K N
    transposed": the seconds of one round of that GEMM; "train CONFIG": the seconds per
    update of one round of that configuration's training step and its plan's label."""
    from bench.gemm_rate import gemm_seconds
    from kernels.gemm import BACKEND

    print(json.dumps(BACKEND.describe()), flush=True)
    trainers = {}
    for line in sys.stdin:
        kind, *what = line.split()
        if kind == "gemm":
            M, K, N, *transposed = what
            print(gemm_seconds(int(M), int(K), int(N), 1, round_s, "".join(transposed)), flush=True)
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
    runs = measure(["openblas", "mkl"], gemm_requests(rate_shapes() if args.rates else kernel_shapes()), args.rounds)
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
