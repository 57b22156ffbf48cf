"""Entry point `python -m bench.plans [--cores 2 16 64]`: the thread plan (engine/thread_plan.py)
of every standard configuration (bench/configs.py) on these core counts, as a Markdown table:
shards x streams per shard (or streams/hN: N threads sharing each step by hidden
blocks), and the modelled speed-up over one thread (from the model, nothing timed).

--measure [CONFIG ...]: check the model on this machine instead: the training step
(Trainer.partial_fit, as bptt bench times it but without its pauses between rounds) with
every plan up to this machine's cores, measured (median of alternated rounds) beside the
model's prediction."""
import argparse
import statistics

from bench.configs import CONFIGS, DTYPE, OUTPUT_SIZE, get_config
from bench.report import plan_label
from bench.runner import steps_per_round, time_steps
from bench.workloads import CLIP_NORM, LR, SEED, make_data
from engine.model import Model
from engine.thread_plan import COST_MODEL, available_cores, choose_plan, shard_rows, split_counts
from engine.trainer import Trainer

CORES = (2, 16, 64)


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
    """Seconds per step with each plan on this machine, measured and modelled."""
    cores = available_cores()
    lines = ["| config | plan | measured ms/step | modelled ms/step | measured speed-up | modelled |",
             "|---|---|---|---|---|---|"]
    for config in map(get_config, names):
        x, y = make_data(config)
        plans = [(shards, 1) for shards in range(1, min(config.batch, cores) + 1)]
        plans += [(1, n) for n in split_counts(config.hidden_size, cores)]
        steps = {}
        for shards, split in plans:
            trainer = Trainer(Model(*config.model_args(), dtype=DTYPE, seed=SEED), optimizer="adam", lr=LR,
                              k1=config.chunk, clip_norm=CLIP_NORM, schedule="constant", shards=shards,
                              split=split)
            steps[shards, split] = lambda trainer=trainer: trainer.partial_fit(x, y)
        calls = {plan: steps_per_round(step, round_s, settle_s=0) for plan, step in steps.items()}
        seconds = {plan: [] for plan in plans}
        for r in range(rounds):
            for plan in plans[r % len(plans):] + plans[:r % len(plans)]:  # rotate the order
                seconds[plan].append(time_steps(steps[plan], calls[plan], settle_s=0) / config.chunk)
        measured = {plan: statistics.median(values) for plan, values in seconds.items()}
        modelled = {(shards, split): COST_MODEL.step_seconds(config.cell, config.input_size, config.hidden_size,
                                                             config.batch, config.num_layers, config.chunk, shards)
                    if split == 1 else
                    COST_MODEL.split_step_seconds(config.cell, config.input_size, config.hidden_size,
                                                  config.batch, config.num_layers, config.chunk, split)
                    for shards, split in plans}
        for shards, split in plans:
            label = plan_label({"shards": shards, "split": split,
                                "rows_per_shard": max(shard_rows(config.batch, shards))})
            lines.append(f"| {config.name} | {label} | {measured[shards, split] * 1e3:.3f} | "
                         f"{modelled[shards, split] * 1e3:.3f} | {measured[1, 1] / measured[shards, split]:.2f}x | "
                         f"{modelled[1, 1] / modelled[shards, split]:.2f}x |")
    return "\n".join(lines)


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
