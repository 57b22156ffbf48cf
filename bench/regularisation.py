"""Entry point `python -m bench.regularisation [--config NAME] [--layers L] [--rounds N]`: the
overhead per update of each training-only mask (docs/training.md, "Regularisation") against
none, on the same model, data and update (Trainer.partial_fit of one chunk, LSTM of a
benchmark configuration with L layers, so that dropout between layers acts).

Rounds alternate the variants (none, then each option, in turn within a round) so that
drift of a shared machine falls on all alike; prints the median seconds per update of
each and its ratio to none's median."""
import argparse
import time

import numpy as np

from bench.configs import DTYPE, get_config
from bench.workloads import LR, SEED, make_data
from engine.model import Model
from engine.trainer import Trainer

RATE = 0.2
VARIANTS = {"none": {}, "dropout": dict(dropout=RATE), "recurrent_dropout": dict(recurrent_dropout=RATE),
            "zoneout": dict(zoneout=RATE), "all": dict(dropout=RATE, recurrent_dropout=RATE, zoneout=RATE)}


def trainers(config, layers):
    """One trainer per variant, each a model of the same initial weights; the chunk (x, y)."""
    x, y = make_data(config)
    made = {}
    for name, rates in VARIANTS.items():
        model = Model(config.cell, config.input_size, config.hidden_size, y.shape[2], layers, dtype=DTYPE, seed=SEED,
                      **rates)
        made[name] = Trainer(model, lr=LR, k1=config.chunk, seed=SEED)
    return made, x, y


def measure(config, layers, rounds, updates):
    """{variant: [seconds per update of each round]}: each round runs `updates` updates of
    every variant, one variant after another."""
    made, x, y = trainers(config, layers)
    for trainer in made.values():  # compile (or load the cache) and allocate
        trainer.partial_fit(x, y)
    seconds = {name: [] for name in made}
    for _ in range(rounds):
        for name, trainer in made.items():
            started = time.perf_counter()
            for _ in range(updates):
                trainer.partial_fit(x, y)
            seconds[name].append((time.perf_counter() - started) / updates)
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small", help="a benchmark configuration (docs/performance.md)")
    parser.add_argument("--layers", type=int, default=2, help="stacked layers (dropout acts between them)")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--updates", type=int, default=5, help="updates per variant and round")
    args = parser.parse_args(argv)
    if args.layers < 1 or args.rounds < 1 or args.updates < 1:
        parser.error("--layers, --rounds and --updates must be >= 1")
    config = get_config(args.config)
    seconds = measure(config, args.layers, args.rounds, args.updates)
    base = float(np.median(seconds["none"]))
    print(f"{config.name} ({config.cell}, {args.layers} layers x {config.hidden_size}, B={config.batch}, "
          f"T={config.chunk}), rate {RATE}; median ms per update over {args.rounds} alternated rounds")
    for name, values in seconds.items():
        median = float(np.median(values))
        print(f"{name:>18}  {median * 1e3:9.2f} ms  x{median / base:.3f}")


if __name__ == "__main__":
    main()
