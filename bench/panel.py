"""Entry point `python -m bench.panel`: a panel of many short series (1,000 series of
100 to 5,000 steps by default, the `tiny` model: LSTM, I=1, H=32, k1=100) trained for one
epoch two ways: packed end to end into B streams with resets (engine.panel.pack_layout),
against one Trainer.fit call per series (B=1). Prints steps/s of each and their ratio,
and the load of the machine (other processes' CPU skews both)."""
import argparse
import os
import time

import numpy as np

ROUNDS = 2


def make_panel(count, shortest, longest, seed=0):
    """count series (T_i, 1) of random lengths in [shortest, longest]: noisy sines."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(shortest, longest + 1, count)
    return [(np.sin(np.arange(length) / rng.uniform(3, 30)) + 0.1 * rng.standard_normal(length))[:, None]
            for length in lengths]


def trained_steps_per_second(fit, steps, warm_up):
    """Best of ROUNDS of `fit` (an epoch of `steps` steps) after `warm_up()` (compilation)."""
    warm_up()
    best = min(_timed(fit) for _ in range(ROUNDS))
    return steps / best


def _timed(function):
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main():
    import engine
    from engine.panel import pack_layout

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1_000)
    parser.add_argument("--shortest", type=int, default=100)
    parser.add_argument("--longest", type=int, default=5_000)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--k1", type=int, default=100)
    args = parser.parse_args()
    series = make_panel(args.series, args.shortest, args.longest)
    inputs = [values[:-1].astype(np.float32) for values in series]    # next-step framing
    targets = [values[1:].astype(np.float32) for values in series]
    steps = sum(len(x) for x in inputs)
    layout = pack_layout([len(x) for x in inputs], args.streams)
    x, y, resets = layout.pack(inputs, 0.0, np.float32), layout.pack(targets, np.nan, np.float32), layout.resets

    def trainer():
        model = engine.Model("lstm", 1, args.hidden, 1, dtype="float32", seed=0)
        return engine.Trainer(model, k1=args.k1, clip_norm=1.0)

    packed_trainer, separate_trainer = trainer(), trainer()

    def packed():
        packed_trainer.fit(x, y, resets=resets)

    def separate(count=None):
        for x_i, y_i in list(zip(inputs, targets))[:count]:
            separate_trainer.fit(x_i[:, None], y_i[:, None])

    load = os.getloadavg()[0]
    packed_rate = trained_steps_per_second(packed, steps, packed)
    separate_rate = trained_steps_per_second(separate, steps, lambda: separate(10))
    print(f"{args.series} series of {args.shortest}..{args.longest} steps ({steps} in all), "
          f"lstm H={args.hidden}, k1={args.k1}; one epoch, best of {ROUNDS}; "
          f"load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end ({os.cpu_count()} cores)")
    print(f"packed into {args.streams} streams ({layout.steps} steps each, "
          f"{1 - steps / (layout.steps * args.streams):.1%} padding): {packed_rate / 1e3:10.1f} k steps/s")
    print(f"one fit call per series (B=1):          {separate_rate / 1e3:10.1f} k steps/s")
    print(f"ratio packed / per series: {packed_rate / separate_rate:.1f}x")


if __name__ == "__main__":
    main()
