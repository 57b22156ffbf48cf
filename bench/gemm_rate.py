"""Entry point `python -m bench.gemm_rate`: the single-threaded costs that the thread plan
(engine/thread_plan.py) models, measured here, and the model's constants fitted to them.

Measured, float32, with the kernels' BLAS (the process's backend, kernels/blas.py, one
thread) called from a jitted gemm loop as the kernels call it:
- gemm: the per-step recurrent GEMMs of one shard of M rows, forward (M, H) x (H, G*H)
  and backward (M, G*H) x (G*H, H), for H in 32..512, G in 1, 3, 4, M in 1..128;
- chunk: a whole-chunk weight-gradient GEMM dgates.T (G*H, T*M) x (T*M, H), its rate in FLOP/s;
- passes: seconds per step of one shard's forward + backward over a chunk (the engine's
  StoredPass, as each shard runs it), per cell, H and M; what the GEMMs above do not explain
  is the element-wise pass, fitted as fixed + rows * H * per_unit per cell;
- two threads on one chunk, against the single-thread model: two shards of M streams
  side by side (engine/shards.py) over the model's two shards, shards_ratio; the pass
  of M streams with its hidden units split between two threads (engine/split.py) over
  the model's one thread, split_ratio; the three passes of each shape are timed in
  alternated rounds of PASS_ROUND_S (the machine's speed drifts by 15% over minutes: timed
  one after another, the ratios were off by up to 12%);
- per update: the Python of a shard's pass (a pass too small to compute anything; it
  holds the GIL, so the shards' run one after another), a thread-pool round trip, and
  the gradient combination per parameter (kernels.common.combine_scaled) on buffers
  larger than the caches.

Prints one JSON object: the raw figures and "fit", the constants to paste into
engine/thread_plan.py, and "check", the model against each measured pass.
--quick: fewer sizes and rounds (a smoke run, not for fitting)."""
import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from engine import thread_plan
from engine.blas import backend, blas_threads
from engine.model import Model
from engine.bptt import SERIAL
from engine.passes import StoredPass  # importing the engine sets one BLAS thread
from engine.shards import ShardedChunk
from engine.split import SplitLayers
from kernels.common import combine_scaled
from kernels.gemm import gemm

HIDDEN = (32, 64, 128, 256, 512)
GATES = (1, 3, 4)
ROWS = (1, 2, 4, 8, 16, 32, 64, 128)
PASS_ROWS = (1, 4, 16, 64)
PASS_STEPS = 50   # T of the measured passes
PASS_INPUT = 8    # I of the measured passes
CELL_GATES = {"rnn": 1, "gru": 3, "lstm": 4}
ROUNDS = 5
ROUND_S = 0.02
PASS_ROUND_S = 0.2  # a pass takes up to 0.15 s: shorter rounds time single calls


@numba.njit(nogil=True)
def repeat_gemm(a, b, out, n):
    """n times out = a b, as the kernels' time loops call gemm."""
    for _ in range(n):
        gemm(a, b, out)


def median_seconds(call, rounds, round_s):
    """Median over `rounds` of the seconds per call, each round about round_s long."""
    return alternated_medians({"call": call}, rounds, round_s)["call"]


def alternated_medians(calls, rounds, round_s, statistic=statistics.median):
    """Median seconds per call of each of `calls` (name -> call(n), n calls), over `rounds`
    rounds of about round_s each, the calls' rounds taking turns: drift in the machine's
    speed (15% over minutes here) then reaches all of them alike. statistic: of the
    rounds, instead of the median (min: the least disturbed round on a shared machine)."""
    counts = {}
    for name, call in calls.items():
        call(1)  # warm-up (compilation, caches)
        started = time.perf_counter()
        call(3)
        counts[name] = max(1, round(round_s / ((time.perf_counter() - started) / 3)))
    samples = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter()
            call(counts[name])
            samples[name].append((time.perf_counter() - started) / counts[name])
    return {name: statistic(values) for name, values in samples.items()}


def gemm_seconds(M, K, N, rounds, round_s, transposed=""):
    """Seconds of one (M, K) x (K, N) float32 GEMM through the jitted loop; transposed
    names the operands ("a", "b", "ab") passed as transposed views, as the kernels'
    whole-chunk GEMMs pass x.T or dgates.T."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((K, M) if "a" in transposed else (M, K), dtype=np.float32)
    b = rng.standard_normal((N, K) if "b" in transposed else (K, N), dtype=np.float32) / np.float32(np.sqrt(K))
    a, b = (a.T if "a" in transposed else a), (b.T if "b" in transposed else b)
    out = np.empty((M, N), np.float32)
    return median_seconds(lambda n: repeat_gemm(a, b, out, n), rounds, round_s)


def _pass_problem(cell, H, streams):
    """The measured passes' model and data: (model, x (PASS_STEPS, streams, PASS_INPUT),
    y (PASS_STEPS, streams, 1), initial state), float32."""
    model = Model(cell, PASS_INPUT, H, 1, dtype="float32")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((PASS_STEPS, streams, PASS_INPUT), dtype=np.float32)
    y = rng.standard_normal((PASS_STEPS, streams, 1), dtype=np.float32)
    return model, x, y, model.init_state(streams)


def pass_runner(cell, H, M, split=1):
    """run(n): n forward + backward passes of one shard of M streams over PASS_STEPS steps,
    its hidden units split among `split` threads when > 1."""
    model, x, y, state = _pass_problem(cell, H, M)
    layers = SplitLayers(model, split, M) if split > 1 else SERIAL
    shard_pass = StoredPass(model, PASS_STEPS, M, np.zeros_like(model.params), layers)

    def run(n):
        for _ in range(n):
            shard_pass.run(x, y, "mse", state, 0)

    return run


def two_shards_runner(cell, H, M):
    """run(n): n passes of two shards of M streams each side by side (engine/shards.py),
    forward + backward over PASS_STEPS steps, gradients combined."""
    model, x, y, state = _pass_problem(cell, H, 2 * M)
    chunk = ShardedChunk(model, PASS_STEPS, 2 * M, 2, np.zeros_like(model.params))

    def run(n):
        for _ in range(n):
            chunk.forward_backward(x, y, "mse", state, 0)

    return run


def pass_seconds_per_step(cell, H, M, rounds, round_s):
    """Seconds per step of one thread's pass of M streams ("one"), of the same pass with
    its hidden units split between two threads ("split", where blocks of MIN_BLOCK units
    fit) and of two shards of M streams side by side ("pair"), their rounds alternated."""
    runners = {"one": pass_runner(cell, H, M), "pair": two_shards_runner(cell, H, M)}
    if H // 2 >= thread_plan.MIN_BLOCK:
        runners["split"] = pass_runner(cell, H, M, split=2)
    return {name: seconds / PASS_STEPS for name, seconds in alternated_medians(runners, rounds, round_s).items()}


def pass_python_seconds(rounds, round_s):
    """The Python of one shard's pass per update and layer: a pass too small to compute
    anything (T = 1, one stream, H = 4), in this thread."""
    model = Model("rnn", 1, 4, 1, dtype="float32")
    x, y = np.zeros((1, 1, 1), np.float32), np.zeros((1, 1, 1), np.float32)
    shard_pass, state = StoredPass(model, 1, 1, np.zeros_like(model.params)), model.init_state(1)
    return median_seconds(lambda n: [shard_pass.run(x, y, "mse", state, 0) for _ in range(n)],
                          rounds, round_s)


def handoff_seconds(rounds, round_s):
    """A thread-pool round trip (submit, run nothing, wait), as each extra shard makes."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return median_seconds(lambda n: [pool.submit(int).result() for _ in range(n)], rounds, round_s)


def combine_seconds_per_param(rounds, round_s):
    """Gradient combination per parameter, on buffers larger than the caches: with many
    shards the gradients together outgrow them (conservative for small models)."""
    size = 1 << 24
    out, other = np.ones(size, np.float32), np.ones(size, np.float32)
    return median_seconds(lambda n: [combine_scaled(out, 0.5, other, 0.5) for _ in range(n)],
                          rounds, round_s) / size


def measure_gemms(hidden, gates, rows, rounds, round_s):
    """The per-step GEMMs ("gemm") and the whole-chunk GEMM rates ("chunk")."""
    gemm = []
    for H in hidden:
        for G in gates:
            for M in rows:
                gemm.append({"H": H, "G": G, "M": M,
                             "forward_s": gemm_seconds(M, H, G * H, rounds, round_s),
                             "backward_s": gemm_seconds(M, G * H, H, rounds, round_s)})
    chunk_rows = PASS_STEPS * 16
    chunk = [{"H": H, "G": G, "flops_per_s": 2 * G * H * chunk_rows * H
              / gemm_seconds(G * H, chunk_rows, H, rounds, round_s, transposed="a")} for H in hidden for G in gates]
    return {"gemm": gemm, "chunk": chunk}


def measure(hidden, gates, rows, pass_rows, rounds, round_s, pass_round_s):
    gemms = measure_gemms(hidden, gates, rows, rounds, round_s)
    timed = {(cell, H, M): pass_seconds_per_step(cell, H, M, rounds, pass_round_s)
             for cell in CELL_GATES for H in hidden for M in pass_rows}
    passes, split_passes, shard_pairs = ([{"cell": cell, "H": H, "M": M, "seconds_per_step": seconds[name]}
                                          for (cell, H, M), seconds in timed.items() if name in seconds]
                                         for name in ("one", "split", "pair"))
    return {**gemms, "passes": passes, "split_passes": split_passes,
            "shard_pairs": shard_pairs,
            "pass_python_s": pass_python_seconds(rounds, round_s),
            "handoff_s": handoff_seconds(rounds, round_s),
            "combine_s_per_param": combine_seconds_per_param(rounds, round_s)}


def fit_gemms(measured):
    """The cost model's GEMM figures: gemm_rows, gemm and chunk_flops_per_s."""
    keys = sorted({(r["H"], r["G"]) for r in measured["gemm"]})
    rows = sorted({r["M"] for r in measured["gemm"]})
    gemm = {}
    for H, G in keys:
        timed = sorted((r for r in measured["gemm"] if (r["H"], r["G"]) == (H, G)), key=lambda r: r["M"])
        # More rows never cost less: a running maximum irons out timing noise.
        gemm[f"{H},{G}"] = [np.maximum.accumulate([r[f"{kind}_s"] for r in timed]).tolist()
                            for kind in ("forward", "backward")]
    return dict(gemm_rows=rows, gemm=gemm,
                chunk_flops_per_s={f"{r['H']},{r['G']}": r["flops_per_s"] for r in measured["chunk"]})


def fit(measured):
    """The thread plan's constants from the measurements (see engine/thread_plan.py)."""
    constants = dict(**fit_gemms(measured), pass_python_s=measured["pass_python_s"], handoff_s=measured["handoff_s"],
                     combine_s_per_param=measured["combine_s_per_param"])
    without_elementwise = thread_plan.CostModel(elementwise={}, concurrent_rows=[], shards_ratio={},
                                                split_ratio={}, **constants)
    elementwise = {}
    for cell in CELL_GATES:
        passes = [r for r in measured["passes"] if r["cell"] == cell]
        seconds = np.array([r["seconds_per_step"] for r in passes])
        # What the GEMMs and the per-update overhead leave is the element-wise pass:
        # fixed + M * H * per_unit, fitted to minimise the relative error of the whole.
        residual = seconds - [without_elementwise.shard_step_seconds(
            cell, PASS_INPUT, r["H"], r["M"], 1, PASS_STEPS, elementwise=False) for r in passes]
        design = np.array([[1.0, r["M"] * r["H"]] for r in passes]) / seconds[:, None]
        (fixed, per_unit), *_ = np.linalg.lstsq(design, residual / seconds, rcond=None)
        elementwise[cell] = (max(float(fixed), 0.0), max(float(per_unit), 0.0))
    one_thread = thread_plan.CostModel(elementwise=elementwise, concurrent_rows=[], shards_ratio={},
                                       split_ratio={}, **constants)
    concurrent_rows = sorted({r["M"] for r in measured["split_passes"]})

    def ratios(records, modelled):
        table = {}
        for r in sorted(records, key=lambda r: (r["cell"], r["H"], r["M"])):
            table.setdefault(f"{r['cell']},{r['H']}", []).append(r["seconds_per_step"] / modelled(r))
        return table

    shards_ratio = ratios(measured["shard_pairs"], lambda r: one_thread.step_seconds(
        r["cell"], PASS_INPUT, r["H"], 2 * r["M"], 1, PASS_STEPS, 2))
    split_ratio = ratios(measured["split_passes"], lambda r: one_thread.shard_step_seconds(
        r["cell"], PASS_INPUT, r["H"], r["M"], 1, PASS_STEPS))
    return {**constants, "elementwise": elementwise, "concurrent_rows": concurrent_rows,
            "shards_ratio": shards_ratio, "split_ratio": split_ratio}


def check(measured, constants):
    """The fitted model against each measured pass: modelled / measured."""
    model = thread_plan.CostModel(**constants)
    return [{**r, "model_ratio": model.shard_step_seconds(r["cell"], PASS_INPUT, r["H"], r["M"], 1,
                                                          PASS_STEPS) / r["seconds_per_step"]}
            for r in measured["passes"]]  # (split_ratio is the split passes themselves: no check)


def _cpu_name():
    with open("/proc/cpuinfo") as cpuinfo:
        names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    return names[0] if names else "unknown CPU"


def _numbers(values):
    return "[" + ", ".join(f"{value:.3g}" for value in values) + "]"


def _gemm_lines(constants, indent):
    """The gemm_rows, gemm and chunk_flops_per_s entries of a dict(...), as source lines."""
    pad = " " * indent
    lines = [f"{pad}gemm_rows={constants['gemm_rows']},",
             f"{pad}gemm={{  # \"H,G\": [forward, backward] seconds of one per-step GEMM at gemm_rows"]
    lines += [f"{pad}    \"{key}\": [{_numbers(forward)},\n{' ' * (indent + 8 + len(key))}{_numbers(backward)}],"
              for key, (forward, backward) in constants["gemm"].items()]
    lines += [f"{pad}}},", f"{pad}chunk_flops_per_s={{"]
    lines += [f"{pad}    \"{key}\": {rate:.3g}," for key, rate in constants["chunk_flops_per_s"].items()]
    return lines + [f"{pad}}},"]


def _constant_lines(constants, indent):
    """Every constant of a cost model as the keyword lines of a dict(...), as Python source."""
    pad = " " * indent
    lines = _gemm_lines(constants, indent)
    lines += [f"{pad}elementwise={{  # cell: (fixed, per_unit) seconds per step"]
    lines += [f"{pad}    \"{cell}\": ({fixed:.3g}, {per_unit:.3g})," for cell, (fixed, per_unit)
              in constants["elementwise"].items()]
    lines += [f"{pad}}},", f"{pad}pass_python_s={constants['pass_python_s']:.3g},",
              f"{pad}handoff_s={constants['handoff_s']:.3g},",
              f"{pad}combine_s_per_param={constants['combine_s_per_param']:.3g},",
              f"{pad}concurrent_rows={constants['concurrent_rows']},"]
    for name, what in (("shards_ratio", "two shards of M side by side / the model's two"),
                       ("split_ratio", "M streams split on two threads / the model's one thread")):
        lines += [f"{pad}{name}={{  # \"cell,H\": {what}, at concurrent_rows"]
        lines += [f"{pad}    \"{key}\": {_numbers(ratios)}," for key, ratios in constants[name].items()]
        lines += [f"{pad}}},"]
    return lines


def module_text(constants, measured_on, key):
    """The cost model named `key` (engine.thread_plan.model_key) as engine/thread_plan.py's
    source: MEASURED_ON and MEASURED for "openblas", else its entry of BACKEND_MEASURED."""
    if key == "openblas":
        return "\n".join([f"MEASURED_ON = {measured_on!r}", "MEASURED = dict(", *_constant_lines(constants, 4), ")"])
    return "\n".join([f"    {key!r}: dict(", f"        measured_on={measured_on!r},",
                      *_constant_lines(constants, 8), "    ),"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few sizes and rounds: a smoke run")
    parser.add_argument("--refit", metavar="JSON", help="fit the measurements of an earlier run's output")
    parser.add_argument("--module", action="store_true",
                        help="print the constants as engine/thread_plan.py's source instead of JSON: MEASURED "
                             "for OpenBLAS off Intel CPUs, else the entry of BACKEND_MEASURED for this "
                             "backend (BPTT_BLAS) and CPU")
    args = parser.parse_args()
    if args.refit:
        with open(args.refit) as earlier:
            report = json.load(earlier)
        report.update(fit=fit(report), check=check(report, fit(report)))
    else:
        report = run(args.quick)
    if args.module:
        blas = report["blas"]
        print(module_text(report["fit"], f"{report['date']}, {report['machine']}, load average "
                                         f"{report['load_average'][0]}, {blas['name']} {blas['version']}, "
                                         f"python -m bench.gemm_rate", report.get("cost_model", blas["name"])))
    else:
        print(json.dumps(report))


def _circumstances():
    """Date, machine, load and BLAS of a run."""
    with open("/proc/loadavg") as loadavg:
        load = loadavg.read().split()[:3]
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{_cpu_name()}, {os.cpu_count()} cores", "load_average": load,
            "blas": backend(), "blas_threads": blas_threads(), "cost_model": thread_plan.MODEL_KEY}


def run(quick):
    """Measure and fit: the report main prints."""
    if quick:
        settings = dict(hidden=(32, 64), gates=GATES, rows=(1, 4, 16), pass_rows=(1, 4), rounds=1,
                        round_s=0.002, pass_round_s=0.002)
    else:
        settings = dict(hidden=HIDDEN, gates=GATES, rows=ROWS, pass_rows=PASS_ROWS, rounds=ROUNDS,
                        round_s=ROUND_S, pass_round_s=PASS_ROUND_S)
    measured = measure(**settings)
    constants = fit(measured)
    return {**_circumstances(), **measured, "fit": constants, "check": check(measured, constants)}


if __name__ == "__main__":
    main()
