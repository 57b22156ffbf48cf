"""Entry point `python -m bench.plans [--cores 2 16 64]`: the thread plan (engine/thread_plan.py)
of every standard configuration (bench/configs.py) on these core counts, as a Markdown table:
shards x streams per shard (or streams/hN: N threads sharing each step by hidden
blocks), and the modelled speed-up over one thread (from the model, nothing timed).

--measure [CONFIG ...]: check the model on this machine instead: the training step
(Trainer.partial_fit, as bptt bench times it but without its pauses between rounds) with
every plan up to this machine's cores, measured (median of alternated rounds) beside the
model's prediction, and again while a neighbour process burns one core (how much each
plan slows down on a busy machine)."""
import argparse
import statistics
import subprocess
import sys

from bench.configs import CONFIGS, DTYPE, OUTPUT_SIZE, get_config
from bench.report import plan_label
from bench.runner import steps_per_round, time_steps
from bench.workloads import CLIP_NORM, LR, SEED, make_data
from engine.machine_load import OtherLoad
from engine.model import Model
from engine.thread_plan import COST_MODEL, available_cores, choose_plan, shard_rows, split_counts
from engine.trainer import Trainer

CORES = (2, 16, 64)
NEIGHBOUR = "print('spinning', flush=True)\nwhile True: pass"  # a process burning one core


def plan_table(cores=CORES):
    header = ["config", "cell", "H", "B"] + [f"{count} cores" for count in cores]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for config in CONFIGS.values():
        cells = [config.name, config.cell, str(config.hidden_size), str(config.batch)]
        for count in cores:
            plan = choose_plan(config.cell, config.input_size, config.hidden_size, config.batch,
                               config.num_layers, count, config.chunk, OUTPUT_SIZE)
            cells.append(f"{plan_label(plan)} ({plan['modelled_speedup']:.1f}x)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def measured_table(names, rounds=5, round_s=0.2):
    """Seconds per step with each plan on this machine, measured quiet and beside a
    neighbour process burning a core (busy_records), and modelled."""
    lines = ["| config | plan | measured ms/step | modelled ms/step | measured speed-up | modelled "
             "| busy ms/step | busy / quiet |", "|---|---|---|---|---|---|---|---|"]
    loads = []
    for name in names:
        records = busy_records(name, rounds, round_s)
        single = records[0]  # the one-shard plan
        for r in records:
            lines.append(f"| {r['config']} | {r['plan']} | {r['quiet_s'] * 1e3:.3f} | {r['modelled_s'] * 1e3:.3f} | "
                         f"{single['quiet_s'] / r['quiet_s']:.2f}x | {single['modelled_s'] / r['modelled_s']:.2f}x | "
                         f"{r['busy_s'] * 1e3:.3f} | {r['ratio']:.2f} |")
            loads.append(r["other_load_quiet"])
    lines.append(f"\nother processes' cores in the quiet rounds: {min(loads):.2f}-{max(loads):.2f}")
    return "\n".join(lines)


def busy_records(name, rounds=5, round_s=0.2):
    """Kind "busy_core", one per plan of configuration `name` that this machine's cores
    allow: the Trainer's step (Trainer.partial_fit with that plan given) in seconds per step,
    median of `rounds` rounds, quiet and while a neighbour process burns one core (the
    rounds alternated, the neighbour started and stopped around each busy round), their
    ratio, the modelled seconds, and other processes' cores measured in each (the
    neighbour's included in the busy one)."""
    config = get_config(name)
    cores = available_cores()
    plans = [(shards, 1) for shards in range(1, min(config.batch, cores) + 1)]
    plans += [(1, n) for n in split_counts(config.hidden_size, cores)]
    steps = _plan_steps(config, plans)
    calls = {plan: steps_per_round(step, round_s, settle_s=0) for plan, step in steps.items()}
    seconds = {phase: {plan: [] for plan in plans} for phase in ("quiet", "busy")}
    load = {phase: [] for phase in seconds}
    for r in range(rounds):
        order = plans[r % len(plans):] + plans[:r % len(plans)]  # rotate the order
        for phase in ("quiet", "busy") if r % 2 == 0 else ("busy", "quiet"):
            with BusyNeighbour(phase == "busy"):
                meter = OtherLoad()
                for plan in order:
                    seconds[phase][plan].append(time_steps(steps[plan], calls[plan], settle_s=0) / config.chunk)
                load[phase].append(meter.cores())
    records = []
    for shards, split in plans:
        quiet, busy = (statistics.median(seconds[phase][shards, split]) for phase in ("quiet", "busy"))
        records.append({"kind": "busy_core", "config": config.name, "impl": "engine",
                        "plan": plan_label({"shards": shards, "split": split,
                                            "rows_per_shard": max(shard_rows(config.batch, shards))}),
                        "shards": shards, "split": split, "quiet_s": quiet, "busy_s": busy, "ratio": busy / quiet,
                        "modelled_s": _modelled(config, shards, split), "rounds": rounds,
                        "other_load_quiet": statistics.median(load["quiet"]),
                        "other_load_busy": statistics.median(load["busy"])})
    return records


class BusyNeighbour:
    """With active: a process burning one core (a Python busy loop) for the duration of
    the block, stopped by its own pid at the end; inactive: nothing."""

    def __init__(self, active=True):
        self.active, self.process = active, None

    def __enter__(self):
        if self.active:
            self.process = subprocess.Popen([sys.executable, "-c", NEIGHBOUR], stdout=subprocess.PIPE)
            self.process.stdout.readline()  # its interpreter started: spinning from now on
        return self

    def __exit__(self, *exc):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process.stdout.close()


def _plan_steps(config, plans):
    """{plan: the Trainer's step on `config` with that plan given}."""
    x, y = make_data(config)
    steps = {}
    for shards, split in plans:
        trainer = Trainer(Model(*config.model_args(), dtype=DTYPE, seed=SEED), optimizer="adam", lr=LR,
                          k1=config.chunk, clip_norm=CLIP_NORM, schedule="constant", shards=shards, split=split)
        steps[shards, split] = lambda trainer=trainer: trainer.partial_fit(x, y)
    return steps


def _modelled(config, shards, split):
    shape = (config.cell, config.input_size, config.hidden_size, config.batch, config.num_layers, config.chunk)
    if split == 1:
        return COST_MODEL.step_seconds(*shape, shards)
    return COST_MODEL.split_step_seconds(*shape, split)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, nargs="+", default=list(CORES))
    parser.add_argument("--measure", nargs="*", metavar="CONFIG",
                        help="time every shard count here for these configurations (default all)")
    args = parser.parse_args()
    if args.measure is None:
        print(plan_table(args.cores))
    else:
        print(measured_table(args.measure or list(CONFIGS)))


if __name__ == "__main__":
    main()
