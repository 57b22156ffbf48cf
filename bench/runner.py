"""The benchmark run: throughput of the training step per configuration and
implementation, the engine's phases, peak memory, full-BPTT memory growth and the
engine's compile time. `run_bench` returns JSON-able records; `format_table` prints them.

Timing: a warm-up step (compilation excluded) calibrates how many steps make a round of
about `round_s` seconds; then the implementations' rounds are alternated, so drift on a
shared machine affects them alike, and each reports the median seconds per step. Each
round starts after a pause of SETTLE_S: the BLAS and OpenMP pools of the implementation
timed before keep their threads spinning for up to ~0.1 s after their last call, which
on two cores would steal a core from the next one.
Memory is measured in a fresh process per measurement (bench.memory, bench.compile)."""
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench.configs import CONFIGS, DTYPE, get_config
from bench.resets import CONFIG as RESETS_CONFIG
from bench.resets import RESET_PERIOD, ResetsWorkload
from bench.workloads import available, make_data, make_workload
from engine.blas import backend, blas_core
from engine.files import atomic_write
from engine.machine_load import OtherLoad
from engine.model import Model
from engine.workspace import Workspace

FULL = dict(rounds=7, round_s=0.5, growth_steps=(1_000, 10_000, 100_000), compile_time=True, busy_config="medium")
QUICK = dict(rounds=3, round_s=0.1, growth_steps=(1_000,), compile_time=False, busy_config="rnn-small")
QUICK_CONFIGS = ("tiny", "gru-small", "rnn-small")
GROWTH_CONFIG = "single"  # full BPTT over one long series
LOSS_TOLERANCE = 1e-4     # relative, first-step losses of the implementations (float32)
MEMORY_MARGIN = 8         # skip a growth length whose minimum activations x this exceeds free memory
SUBPROCESS_TIMEOUT_S = 900
SETTLE_S = 0.25


class BenchmarkError(RuntimeError):
    """The implementations disagree, or a measurement failed."""


def run_bench(configs=None, peers=False, quick=False, json_path=None, echo=print,
              rounds=None, profiles=True):
    """Benchmark `configs` (names of bench.configs.CONFIGS; default all, or a few with
    quick) on the engine and, with `peers`, on every peer installed. Returns the records:
    kind "train" one per (config, impl), "full_bptt" one per (impl, T), "resets" one (the
    cost of a reset mask), "panel" one (bench.panel: packing against one call per series),
    "busy_core" one per thread plan of one configuration (bench.plans: each plan quiet and
    beside a process burning a core) and "compile" one for the engine (these five only with
    `profiles`). quick: fewer and shorter rounds,
    full BPTT over 1k steps only, no compile time. rounds overrides the number of rounds.
    json_path: also write the records there as a JSON list."""
    settings = dict(QUICK if quick else FULL)
    if rounds is not None:
        settings["rounds"] = rounds
    names = configs or (QUICK_CONFIGS if quick else tuple(CONFIGS))
    selected = [get_config(name) for name in names]  # all names checked before any run
    impls = available() if peers else ["engine"]
    if peers:
        missing = sorted({"torch", "jax"} - set(impls))
        if missing:
            echo(f"skipping peers not installed: {', '.join(missing)}")
    records = []
    for config in selected:
        echo(f"{config.name}: {', '.join(impls)} ...")
        records += train_records(config, impls, settings["rounds"], settings["round_s"])
    if profiles:
        echo(f"full-BPTT memory ({GROWTH_CONFIG}) ...")
        records += growth_records(get_config(GROWTH_CONFIG), impls, settings["growth_steps"])
        echo(f"resets ({RESETS_CONFIG}, a reset every {RESET_PERIOD} steps per stream) ...")
        records.append(resets_record(settings["rounds"], settings["round_s"]))
        from bench.panel import FULL_PANEL, QUICK_PANEL, panel_record  # here: `python -m bench.panel` runs clean

        sizes = QUICK_PANEL if quick else FULL_PANEL
        echo(f"panel ({sizes['series']} series, packed against one call per series) ...")
        records.append(panel_record(**sizes))
        from bench.plans import busy_records  # here: `python -m bench.plans` runs clean

        echo(f"thread plans beside a busy core ({settings['busy_config']}) ...")
        records += busy_records(settings["busy_config"], settings["rounds"], settings["round_s"])
        if settings["compile_time"]:
            echo("compile time ...")
            records.append(compile_record())
    if json_path is not None:
        with atomic_write(json_path, "w") as out:  # a failed write leaves any old file whole
            json.dump(records, out, indent=1)
    return records


# ------------------------------------------------------------------- throughput

def train_records(config, impls, rounds, round_s):
    """One "train" record per implementation of `config`, plus the engine's phases,
    memory and ratios to each peer."""
    workloads = {impl: make_workload(impl, config) for impl in impls}
    first_losses = {impl: workload.step() for impl, workload in workloads.items()}
    check_losses(config, first_losses)
    engine = workloads["engine"]
    engine.phase_step()  # warm-up of the phase path
    steps = {impl: steps_per_round(workload.step, round_s) for impl, workload in workloads.items()}
    seconds = {impl: [] for impl in impls}
    phase_seconds = {phase: [] for phase in engine.phases}
    meter = OtherLoad()
    for r in range(rounds):
        for impl in impls[r % len(impls):] + impls[:r % len(impls)]:  # rotate the order
            seconds[impl].append(time_steps(workloads[impl].step, steps[impl]))
        for phase, value in time_phases(engine, steps["engine"]).items():
            phase_seconds[phase].append(value)
    other_load = meter.cores()
    records = []
    for impl in impls:
        per_step = statistics.median(seconds[impl])
        steps_per_s = config.steps_per_update / per_step
        record = {"kind": "train", "config": config.name, "impl": impl, **config.as_dict(),
                  "seconds_per_step": per_step, "steps_per_s": steps_per_s,
                  "gflops": config.flops_per_step() * steps_per_s / 1e9,
                  "rounds": rounds, "steps_per_round": steps[impl], "first_loss": first_losses[impl],
                  "other_load": other_load}
        record.update(measure_memory(config.name, impl))
        records.append(record)
    engine_record = records[0]
    engine_record["plan"] = engine.trainer.thread_plan  # what the Trainer chose (engine/thread_plan.py)
    engine_record.update(blas=backend(), blas_forced=os.environ.get("BPTT_BLAS"), blas_core=blas_core(),
                         openblas_coretype=os.environ.get("OPENBLAS_CORETYPE"))
    for phase in engine.phases:
        engine_record[f"{phase}_s"] = statistics.median(phase_seconds[phase])
    workspace = Workspace(engine.model, config.chunk, config.batch)
    workspace_bytes = workspace.activation_nbytes  # what grows with T; scratch and weight copy apart
    engine_record.update(workspace_bytes=workspace_bytes, workspace_total_bytes=workspace.nbytes,
                         min_activation_bytes=config.min_activation_bytes(),
                         workspace_ratio=workspace_bytes / config.min_activation_bytes())
    for record in records[1:]:
        engine_record[f"ratio_{record['impl']}"] = engine_record["steps_per_s"] / record["steps_per_s"]
    return records


def check_losses(config, losses):
    """Correctness first: every implementation's first loss (same weights, zero state,
    same data) equals the engine's."""
    reference = losses["engine"]
    if not math.isfinite(reference):
        raise BenchmarkError(f"{config.name}: the engine's loss is not finite ({reference})")
    for impl, loss in losses.items():
        if not abs(loss - reference) <= LOSS_TOLERANCE * max(1.0, abs(reference)):
            raise BenchmarkError(f"{config.name}: {impl}'s first loss {loss} differs from the "
                                 f"engine's {reference}; not timing a different computation")


def steps_per_round(step, round_s, settle_s=SETTLE_S):
    """Steps that take about round_s seconds, from one timed warm step (at least 1)."""
    return max(1, round(round_s / time_steps(step, 1, settle_s)))


def time_steps(step, n, settle_s=SETTLE_S):
    """Seconds per call of `step` over n calls, after a pause of settle_s for the other
    implementations' thread pools to settle (0 when only the engine runs: after a pause
    this machine runs the next updates of a small model up to 1.5x slower)."""
    time.sleep(settle_s)
    started = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - started) / n


def time_phases(engine, n):
    """Seconds per step of each engine phase over n steps taken phase by phase."""
    totals = dict.fromkeys(engine.phases, 0.0)
    time.sleep(SETTLE_S)
    for _ in range(n):
        for phase in engine.phases:
            started = time.perf_counter()
            getattr(engine, phase)()
            totals[phase] += time.perf_counter() - started
    return {phase: total / n for phase, total in totals.items()}


def resets_record(rounds, round_s):
    """The engine's step on RESETS_CONFIG with a reset every RESET_PERIOD steps per stream
    against the same step without resets, rounds alternated: medians and their ratio, in
    wall time and in this process's CPU time (steadier when other processes compete)."""
    config = get_config(RESETS_CONFIG)
    steps = {"plain": make_workload("engine", config).step,
             "resets": ResetsWorkload(config, *make_data(config)).step}
    for step in steps.values():
        step()  # warm-up
    n = steps_per_round(steps["plain"], round_s)
    wall, cpu = ({name: [] for name in steps} for _ in range(2))
    meter = OtherLoad()
    for r in range(rounds):
        for name in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
            started = time.process_time()
            wall[name].append(time_steps(steps[name], n))
            cpu[name].append((time.process_time() - started) / n)
    plain, resets = (statistics.median(wall[name]) for name in steps)
    cpu_plain, cpu_resets = (statistics.median(cpu[name]) for name in steps)
    return {"kind": "resets", "config": config.name, "impl": "engine", "period": RESET_PERIOD,
            "seconds_per_step": plain, "seconds_per_step_resets": resets, "cost": resets / plain - 1,
            "cpu_cost": cpu_resets / cpu_plain - 1, "rounds": rounds, "steps_per_round": n,
            "other_load": meter.cores()}


# ------------------------------------------------------------------- memory and compile

def measure_memory(config_name, impl, T=None):
    """bench.memory in a fresh process: {baseline_mb, peak_mb, first_step_s}."""
    args = [config_name, impl] + ([] if T is None else ["--steps", str(T)])
    return _run_json("bench.memory", args)


def growth_records(config, impls, lengths):
    """Full BPTT over T steps (one update) for each T in `lengths` that fits in memory:
    peak memory per implementation, and the engine's workspace against the minimum."""
    records = []
    for T in lengths:
        minimum = config.min_activation_bytes(T)
        if minimum * MEMORY_MARGIN > _available_bytes():
            records.append({"kind": "full_bptt", "config": config.name, "impl": "all", "T": T,
                            "skipped": "does not fit in memory"})
            continue
        for impl in impls:
            record = {"kind": "full_bptt", "config": config.name, "impl": impl, "T": T,
                      "min_activation_bytes": minimum, **measure_memory(config.name, impl, T)}
            if impl == "engine":
                model = Model(*config.model_args(), dtype=DTYPE)
                record["workspace_bytes"] = Workspace(model, T, config.batch).activation_nbytes
            records.append(record)
    _add_growth_slopes(records)
    return records


def _add_growth_slopes(records):
    """growth_bytes_per_step: the peak's increase per step over the shortest T measured."""
    shortest = {}
    for record in records:
        if "peak_mb" not in record:
            continue
        first = shortest.setdefault(record["impl"], record)
        if record is not first:
            record["growth_bytes_per_step"] = ((record["peak_mb"] - first["peak_mb"]) * 2**20
                                               / (record["T"] - first["T"]))


def compile_record():
    """Cold compile (empty NUMBA_CACHE_DIR) and cached start of every engine kernel."""
    with tempfile.TemporaryDirectory() as cache:
        env = {"NUMBA_CACHE_DIR": cache}
        cold = _run_json("bench.compile", [], env)["seconds"]
        cached = _run_json("bench.compile", [], env)["seconds"]
    return {"kind": "compile", "config": "all", "impl": "engine", "cold_s": cold, "cached_s": cached}


def _run_json(module, args, env=None):
    """Run `python -m module args` and parse the JSON it prints last."""
    result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, timeout=SUBPROCESS_TIMEOUT_S)
    if result.returncode != 0:
        raise BenchmarkError(f"python -m {module} {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _available_bytes():
    with open("/proc/meminfo") as meminfo:
        fields = dict(line.split(":", 1) for line in meminfo)
    return int(fields["MemAvailable"].split()[0]) * 1024
