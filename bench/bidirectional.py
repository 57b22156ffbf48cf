"""Entry point `python -m bench.bidirectional [--config NAME ...] [--rounds N]`: the time per
update of a bidirectional model against the same model one-directional (docs/training.md,
"Bidirectional layers"; the target: about 2x, the two directions' passes, not more).

An update is one full-BPTT epoch of Trainer.fit over a standard configuration's chunk
(bench/configs.py: T = chunk steps of B = batch streams, mse on every step), in one
thread (shards=1, the same plan for both: the hidden-block plan is one-directional). The
two models' rounds alternate; the table gives the medians and their ratio, and the load
other processes put on the machine meanwhile."""
import argparse
import json
import statistics

import engine
from bench.configs import get_config
from bench.runner import OtherLoad, steps_per_round, time_steps
from bench.workloads import DTYPE, SEED, make_data

CONFIGS = ("small", "gru-small", "rnn-small", "deep")
ROUNDS = 11
ROUND_S = 1.0
TARGET = 2.0  # bidirectional / one-directional time per update


def update(config, bidirectional):
    """A function taking one full-BPTT update of `config`'s model on make_data's chunk."""
    x, y = make_data(config)
    model = engine.Model(*config.model_args(), dtype=DTYPE, seed=SEED, bidirectional=bidirectional)
    trainer = engine.Trainer(model, k1=None, shards=1)

    def step():
        trainer.fit(x, y, epochs=1)
    return step


def measure(config, rounds=ROUNDS, round_s=ROUND_S):
    """The median seconds per update of each model over `rounds` alternated rounds of about
    round_s seconds each, and their ratio."""
    steps = {"one": update(config, False), "bidirectional": update(config, True)}
    for step in steps.values():
        step()  # compile (or load the cache) and allocate
    n = steps_per_round(steps["one"], round_s)
    seconds = {name: [] for name in steps}
    meter = OtherLoad()
    for r in range(rounds):
        for name in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
            seconds[name].append(time_steps(steps[name], n))
    one, both = (statistics.median(seconds[name]) for name in steps)
    return {"config": config.name, "seconds_per_update": one, "seconds_per_update_bidirectional": both,
            "ratio": both / one, "rounds": rounds, "updates_per_round": n, "other_load": meter.cores()}


def main(arguments=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", dest="configs", action="append", metavar="NAME",
                        help=f"A configuration of bench/configs.py (repeatable) [default: {', '.join(CONFIGS)}].")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"Alternated rounds [default: {ROUNDS}].")
    parser.add_argument("--round-seconds", type=float, default=ROUND_S, help="Seconds per round [default: 1].")
    parser.add_argument("--json", action="store_true", help="One JSON record per configuration instead of the table.")
    args = parser.parse_args(arguments)
    configs = [get_config(name) for name in args.configs or CONFIGS]  # unknown names fail before any work
    if not args.json:
        print(f"ms per update (median of {args.rounds} alternated rounds), one thread; target: about {TARGET:g}x")
        print(f"{'config':>10}  {'one-dir ms':>10}  {'bidir ms':>9}  {'ratio':>6}  {'other load':>10}")
    for config in configs:
        record = measure(config, args.rounds, args.round_seconds)
        if args.json:
            print(json.dumps(record))
            continue
        print(f"{config.name:>10}  {record['seconds_per_update'] * 1e3:>10.2f}  "
              f"{record['seconds_per_update_bidirectional'] * 1e3:>9.2f}  {record['ratio']:>5.2f}x  "
              f"{record['other_load']:>6.1f} cores")


if __name__ == "__main__":
    main()
