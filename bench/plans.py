"""Entry point `python -m bench.plans [--cores 2 16 64]`: the thread plan (engine/thread_plan.py)
of every DESIGN.md section 10 configuration on these core counts, as a Markdown table:
shards x streams per shard, and the modelled speed-up over one shard. From the model
only; nothing is timed."""
import argparse

from bench.configs import CONFIGS, OUTPUT_SIZE
from engine.thread_plan import choose_plan

CORES = (2, 16, 64)


def plan_table(cores=CORES):
    header = ["config", "cell", "H", "B"] + [f"{count} cores" for count in cores]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for config in CONFIGS.values():
        cells = [config.name, config.cell, str(config.hidden_size), str(config.batch)]
        for count in cores:
            plan = choose_plan(config.cell, config.input_size, config.hidden_size, config.batch,
                               config.num_layers, count, config.chunk, OUTPUT_SIZE)
            cells.append(f"{plan['shards']} x {plan['rows_per_shard']} ({plan['modelled_speedup']:.1f}x)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, nargs="+", default=list(CORES))
    print(plan_table(parser.parse_args().cores))


if __name__ == "__main__":
    main()
