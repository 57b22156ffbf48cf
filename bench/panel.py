"""Entry point `python -m bench.panel`: a panel of many short series (1,000 series of
100 to 5,000 steps by default, the `tiny` model: LSTM, I=1, H=32, k1=100) trained for one
epoch two ways: packed end to end into B streams with resets (engine.panel.pack_layout),
against one Trainer.fit call per series (B=1). Prints steps/s of each and their ratio.
The packed run needs resets in Trainer.fit (DESIGN.md section 11)."""
import argparse
import inspect
import sys
import time

import numpy as np

ROUNDS = 3


def make_panel(count, shortest, longest, seed=0):
    """count series (T_i, 1) of random lengths in [shortest, longest]: noisy sines."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(shortest, longest + 1, count)
    return [(np.sin(np.arange(length) / rng.uniform(3, 30)) + 0.1 * rng.standard_normal(length))[:, None]
            for length in lengths]


def trained_steps_per_second(fit, steps):
    """Best of ROUNDS after a warm-up round (compilation, buffers)."""
    fit()
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
    if "resets" not in inspect.signature(engine.Trainer.fit).parameters:
        sys.exit("Error: the packed run needs Trainer.fit(..., resets=...) (issue 12 item 1)")
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

    def separate():
        for x_i, y_i in zip(inputs, targets):
            separate_trainer.fit(x_i[:, None], y_i[:, None])

    packed_rate = trained_steps_per_second(packed, steps)
    separate_rate = trained_steps_per_second(separate, steps)
    print(f"{args.series} series of {args.shortest}..{args.longest} steps ({steps} in all), "
          f"lstm H={args.hidden}, k1={args.k1}; one epoch, best of {ROUNDS}")
    print(f"packed into {args.streams} streams ({layout.steps} steps each, "
          f"{1 - steps / (layout.steps * args.streams):.1%} padding): {packed_rate / 1e3:10.1f} k steps/s")
    print(f"one fit call per series (B=1):          {separate_rate / 1e3:10.1f} k steps/s")
    print(f"ratio packed / per series: {packed_rate / separate_rate:.1f}x")


if __name__ == "__main__":
    main()
