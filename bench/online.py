"""Entry point `python -m bench.online`: forward-mode gradients (Trainer(gradient="rtrl" |
"uoro"), docs/training.md) against truncated BPTT.

speed: seconds per step of Trainer.partial_fit for an LSTM of H = 16 and 32 units, 32
  streams, float32, k1 = 10 (TBPTT with k2 = 10), every method on one thread, and RTRL
  and UORO again on the threads their plan chooses (engine.online.online_plan), each
  method's rounds alternated with the others' and with a 512^3 SGEMM's and the influence
  product's own GEMM's (the machine is shared: medians, and the spread of the rounds);
  the memory each method's buffers take (engine/footprint.py, engine/online.py
  estimates); and RTRL's rates on one thread: the FLOP of the GEMMs its kernel runs,
  (S, H) x (H, P) per stream and step (S = 2H state rows: c and h; kernels/rtrl.py),
  over its measured time per step, against the 512^3 SGEMM and that GEMM for one block
  of W columns, (S, H) x (H, W), timed alone; and the same time against the FLOP of the
  (S, S) x (S, P) state-Jacobian product RTRL is defined by (twice the GEMMs', since
  the Jacobian's c columns are diagonal: the kernel does not multiply their zeros); by
  the wall clock and (by_cpu_time, with the one-thread steps/s) by the thread's CPU
  time, which a busy machine's other work disturbs less.
task: a stream whose target at t is the input DELAY steps earlier (random signs), longer
  than the window of TBPTT(k1, k2): mean squared error per update of TBPTT, RTRL and UORO
  on the same model and data (the error of predicting zero is 1), the updates each takes
  to reach TARGET_ERROR (its mean over the last WINDOW updates), and the learning curves
  as a PNG (--plot).
Prints one JSON object. --quick: tiny sizes and few rounds (a smoke run, not a measurement).
"""
import argparse
import json
import statistics
import time

import numpy as np

import engine
from bench.gemm_rate import _cpu_name, repeat_gemm
from engine.footprint import (chunk_bytes, influence_blocks, influence_column_bytes, rtrl_bytes, uoro_bytes,
                              workspace_bytes)
from engine.online import recurrent_size

STREAMS = 32
K1 = 10
DELAY, TASK_K1, TASK_K2 = 6, 2, 4  # the task's dependency and TBPTT's window (shorter)
# (updates, learning rate) per method: RTRL's updates cost ~100x the others' (LSTM, H = 16)
TASK_RUNS = {"bptt": (60_000, 1e-2), "rtrl": (4_000, 1e-2), "uoro": (60_000, 3e-3)}
TARGET_ERROR = 0.1  # mean squared error (predicting zero scores 1)
WINDOW = 50  # updates in the running mean of the learning curves


GEMM_ROUND_S = 0.05  # a GEMM's round: about this long


def make_trainer(model, gradient, k1, k2=None, lr=3e-3, seed=0, shards=1):
    """shards: 1 (one thread, the default), or None for the thread plan's choice."""
    options = dict(optimizer="adam", lr=lr, k1=k1, clip_norm=1.0, gradient=gradient, seed=seed, history_updates=None,
                   shards=shards)
    if gradient == "bptt":
        options.update(k2=k2 or k1)
    return engine.Trainer(model, **options)


def timed_rounds(calls, rounds):
    """Seconds per unit of each call (call() does the work, returns how many units: steps
    or GEMMs) in rounds taking turns: {name: [per round]} by the wall clock, and the same
    by the calling thread's CPU time (time.thread_time: what a busy machine's other work
    took from the thread is left out; a threaded call's other threads are not counted)."""
    wall = {name: [] for name in calls}
    cpu = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            started, started_cpu = time.perf_counter(), time.thread_time()
            units = call()
            wall[name].append((time.perf_counter() - started) / units)
            cpu[name].append((time.thread_time() - started_cpu) / units)
    return wall, cpu


def gemm_runner(M, K, N):
    """run(): (M, K) x (K, N) float32 GEMMs for about GEMM_ROUND_S, through the jitted
    np.dot loop the kernels use; returns how many."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K), dtype=np.float32)
    b = rng.standard_normal((K, N), dtype=np.float32) / np.float32(np.sqrt(K))
    out = np.empty((M, N), np.float32)
    repeat_gemm(a, b, out, 1)  # compile, warm the caches
    started = time.perf_counter()
    repeat_gemm(a, b, out, 3)
    count = max(1, round(GEMM_ROUND_S / ((time.perf_counter() - started) / 3)))

    def run():
        repeat_gemm(a, b, out, count)
        return count
    return run


def speed(hidden_sizes, steps, rounds):
    rows = []
    for H in hidden_sizes:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((steps, STREAMS, 1)).astype(np.float32)
        y = rng.standard_normal((steps, STREAMS, 1)).astype(np.float32)
        trainers = {}
        for name, gradient, shards in (("bptt", "bptt", 1), ("rtrl", "rtrl", 1), ("uoro", "uoro", 1),
                                       ("rtrl_plan", "rtrl", None), ("uoro_plan", "uoro", None)):
            model = engine.Model("lstm", 1, H, 1, dtype="float32", seed=0)
            trainers[name] = make_trainer(model, gradient, K1, lr=1e-6, shards=shards)
            trainers[name].partial_fit(x[:K1], y[:K1])  # compile, allocate

        def runner(trainer):
            def run():
                trainer.partial_fit(x, y)
                return steps
            return run

        P = recurrent_size(trainers["rtrl"].model)
        width = influence_blocks(P, influence_column_bytes("lstm", H, 1, 4))[1]  # the kernel's block of columns
        calls = {name: runner(trainer) for name, trainer in trainers.items()}
        calls.update(sgemm_512=gemm_runner(512, 512, 512), block_gemm=gemm_runner(2 * H, H, width))
        samples, cpu = timed_rounds(calls, rounds)
        workspace = workspace_bytes("lstm", H, 1, 1, K1, STREAMS, 4)
        memory = {"bptt": chunk_bytes("lstm", 1, H, 1, 1, K1, STREAMS, 1, 4, trainers["bptt"].model.params.nbytes),
                  "rtrl": rtrl_bytes("lstm", 1, H, 1, 1, STREAMS, K1, 4) + workspace,
                  "uoro": uoro_bytes("lstm", 1, H, 1, 1, STREAMS, K1, 4) + workspace}
        medians = {name: statistics.median(values) for name, values in samples.items()}
        cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}

        state_rows = 2 * H  # LSTM: c and h
        state_product = STREAMS * 2 * state_rows * state_rows * P  # per step: (S, S) x (S, P) per stream
        gemm_flop = STREAMS * 2 * state_rows * H * P  # per step: the kernel's GEMMs, (S, H) x (H, P) per stream

        def rates(times):  # GFLOP/s: RTRL's GEMMs, its state product, the SGEMM, the block's GEMM alone
            return {"rtrl_gemm_gflops": gemm_flop / times["rtrl"] / 1e9,
                    "rtrl_state_product_gflops": state_product / times["rtrl"] / 1e9,
                    "sgemm_512_gflops": 2 * 512 ** 3 / times["sgemm_512"] / 1e9,
                    "block_gemm_alone_gflops": 2 * state_rows * H * width / times["block_gemm"] / 1e9}

        def shares(rate):  # the kernel's GEMM rate against the SGEMM's and the block GEMM's alone
            return {"rtrl_gemm_share_of_sgemm_512": rate["rtrl_gemm_gflops"] / rate["sgemm_512_gflops"],
                    "rtrl_gemm_share_of_block_gemm": rate["rtrl_gemm_gflops"] / rate["block_gemm_alone_gflops"],
                    "rtrl_state_product_share_of_sgemm_512": rate["rtrl_state_product_gflops"]
                    / rate["sgemm_512_gflops"]}

        wall_rates, cpu_rates = rates(medians), rates(cpu_medians)
        methods = ("bptt", "rtrl", "uoro")
        rows.append({
            "cell": "lstm", "H": H, "P": P, "streams": STREAMS, "k1": K1, "block_columns": width,
            "steps_per_s": {name: 1 / medians[name] for name in methods},
            "round_spread": {name: max(values) / min(values) - 1 for name, values in samples.items()},
            "time_vs_tbptt": {name: medians[name] / medians["bptt"] for name in ("rtrl", "uoro")},
            "memory_bytes": memory,
            **wall_rates, **shares(wall_rates),
            "by_cpu_time": {"steps_per_s": {name: 1 / cpu_medians[name] for name in methods},
                            "time_vs_tbptt": {name: cpu_medians[name] / cpu_medians["bptt"]
                                              for name in ("rtrl", "uoro")},
                            **cpu_rates, **shares(cpu_rates),
                            "round_spread": {name: max(values) / min(values) - 1 for name, values in cpu.items()}},
            "plan": {name: {"shards": trainers[f"{name}_plan"].thread_plan["shards"],
                            "steps_per_s": 1 / medians[f"{name}_plan"],
                            "speedup": medians[name] / medians[f"{name}_plan"]} for name in ("rtrl", "uoro")},
        })
    return rows


def delayed_signs(steps, streams, delay, seed):
    """x (steps, streams, 1) random signs; y the input `delay` steps earlier (NaN before)."""
    rng = np.random.default_rng(seed)
    x = rng.choice(np.float32([-1, 1]), size=(steps, streams, 1))
    y = np.full_like(x, np.nan)
    y[delay:] = x[:-delay]
    return x, y


def task(runs, hidden, streams, seed=0):
    """Learning curves (per update, mean squared error) of the delayed-signs stream, one
    pass over it of runs[gradient] = (updates, lr) per method, the same data and model."""
    steps = max(updates for updates, _ in runs.values()) * TASK_K1
    x, y = delayed_signs(steps, streams, DELAY, seed)
    curves, seconds, rates = {}, {}, {}
    for gradient, label in (("bptt", f"TBPTT(k1={TASK_K1}, k2={TASK_K2})"), ("rtrl", "RTRL"), ("uoro", "UORO")):
        updates, lr = runs[gradient]
        model = engine.Model("lstm", 1, hidden, 1, dtype="float32", seed=seed)
        trainer = make_trainer(model, gradient, TASK_K1, TASK_K2, lr=lr, seed=seed)
        rates[label] = lr
        started = time.perf_counter()
        trainer.partial_fit(x[:updates * TASK_K1], y[:updates * TASK_K1])
        seconds[label] = time.perf_counter() - started
        curves[label] = [record["loss"] for record in trainer.history.updates]
    reached = {}
    for label, losses in curves.items():
        running = np.convolve(losses, np.ones(WINDOW) / WINDOW, mode="valid")
        below = np.nonzero(running <= TARGET_ERROR)[0]
        reached[label] = int(below[0]) + WINDOW if len(below) else None
    return {"delay": DELAY, "k1": TASK_K1, "k2": TASK_K2, "hidden": hidden, "streams": streams, "lr": rates,
            "updates": {label: len(losses) for label, losses in curves.items()}, "target_error": TARGET_ERROR,
            "updates_to_target": reached, "seconds": seconds,
            "final_error": {label: float(np.mean(losses[-WINDOW:])) for label, losses in curves.items()},
            "curves": curves}


def plot(result, path):
    """The learning curves (running means of WINDOW updates) as a small PNG, written atomically."""
    from engine.files import atomic_write
    from engine.plots import require_matplotlib
    plt = require_matplotlib()
    figure, axes = plt.subplots(figsize=(6, 3.2), dpi=80)
    for label, losses in result["curves"].items():
        running = np.convolve(losses, np.ones(WINDOW) / WINDOW, mode="valid")
        axes.plot(np.arange(WINDOW, len(losses) + 1), running, label=label)
    axes.axhline(result["target_error"], color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("update")
    axes.set_xscale("log")
    axes.set_ylabel(f"MSE (mean of {WINDOW} updates)")
    axes.set_title(f"target = input {result['delay']} steps earlier; LSTM {result['hidden']} units")
    axes.set_yscale("log")
    axes.legend()
    figure.tight_layout()
    with atomic_write(path) as file:
        figure.savefig(file, format="png")
    plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few rounds: a smoke run")
    parser.add_argument("--plot", help="write the task's learning curves to this PNG")
    args = parser.parse_args()
    if args.plot:
        engine.files.check_output(args.plot, what="plot")
    print(json.dumps(run(args.quick, args.plot), indent=1))


def run(quick, plot_path=None):
    if quick:
        result = {"speed": speed((4,), 20, 2), "task": task({name: (60, lr) for name, (_, lr) in TASK_RUNS.items()},
                                                            4, 4)}
    else:
        result = {"speed": speed((16, 32), 100, 11), "task": task(TASK_RUNS, 16, STREAMS)}
    result["machine"] = _cpu_name()
    result["date"] = time.strftime("%Y-%m-%d")
    if plot_path:
        plot(result["task"], plot_path)
    result["task"] = {key: value for key, value in result["task"].items() if key != "curves"}
    return result


if __name__ == "__main__":
    main()
