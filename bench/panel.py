"""Entry point `python -m bench.panel`: a panel of many short series (1,000 series of
100 to 5,000 steps by default, LSTM, I=1, H=32, k1=100) trained for one epoch two ways:
packed end to end into B streams with resets (engine.panel.pack_layout), against one
Trainer.fit call per series (B=1). Prints steps/s of each and their ratio, and the load
of the machine (other processes' CPU skews both). `bptt bench` reports the same record
(panel_record) on a smaller panel with --quick."""
import argparse
import os
import time

import numpy as np

ROUNDS = 2
FULL_PANEL = dict(series=1_000, shortest=100, longest=5_000)
QUICK_PANEL = dict(series=100, shortest=100, longest=1_000)


def make_panel(count, shortest, longest, seed=0):
    """count series (T_i, 1) of random lengths in [shortest, longest]: noisy sines."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(shortest, longest + 1, count)
    return [(np.sin(np.arange(length) / rng.uniform(3, 30)) + 0.1 * rng.standard_normal(length))[:, None]
            for length in lengths]


def trained_steps_per_second(fit, steps, warm_up, rounds):
    """Best of `rounds` of `fit` (an epoch of `steps` steps) after `warm_up()` (compilation)."""
    warm_up()
    best = min(_timed(fit) for _ in range(rounds))
    return steps / best


def _timed(function):
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def panel_record(series=1_000, shortest=100, longest=5_000, streams=32, hidden=32, k1=100, rounds=ROUNDS):
    """One epoch packed into `streams` streams with resets against one fit call per series:
    {"kind": "panel", steps/s of each, their ratio, the panel's size and padding, and the
    load average before and after}."""
    import engine
    from engine.panel import pack_layout

    panel = make_panel(series, shortest, longest)
    inputs = [values[:-1].astype(np.float32) for values in panel]    # next-step framing
    targets = [values[1:].astype(np.float32) for values in panel]
    steps = sum(len(x) for x in inputs)
    layout = pack_layout([len(x) for x in inputs], streams)
    x, y, resets = layout.pack(inputs, 0.0, np.float32), layout.pack(targets, np.nan, np.float32), layout.resets

    def trainer():
        model = engine.Model("lstm", 1, hidden, 1, dtype="float32", seed=0)
        return engine.Trainer(model, k1=k1, clip_norm=1.0)

    packed_trainer, separate_trainer = trainer(), trainer()

    def packed():
        packed_trainer.fit(x, y, resets=resets)

    def separate(count=None):
        for x_i, y_i in list(zip(inputs, targets))[:count]:
            separate_trainer.fit(x_i[:, None], y_i[:, None])

    load = os.getloadavg()[0]
    packed_rate = trained_steps_per_second(packed, steps, packed, rounds)
    separate_rate = trained_steps_per_second(separate, steps, lambda: separate(10), rounds)
    return {"kind": "panel", "impl": "engine", "series": series, "shortest": shortest, "longest": longest,
            "steps": steps, "streams": streams, "hidden": hidden, "k1": k1, "rounds": rounds,
            "padding": 1 - steps / (layout.steps * streams), "packed_steps_per_s": packed_rate,
            "separate_steps_per_s": separate_rate, "ratio": packed_rate / separate_rate,
            "load_before": load, "load_after": os.getloadavg()[0]}


def describe(r):
    """The record as lines of text."""
    return (f"Panel: {r['series']} series of {r['shortest']}..{r['longest']} steps ({r['steps']} in all), "
            f"lstm H={r['hidden']}, k1={r['k1']}, one epoch, best of {r['rounds']}: packed into "
            f"{r['streams']} streams with resets ({r['padding']:.1%} padding) "
            f"{r['packed_steps_per_s'] / 1e3:.1f} k steps/s, one fit call per series "
            f"{r['separate_steps_per_s'] / 1e3:.1f} k steps/s: {r['ratio']:.1f}x "
            f"(load average {r['load_before']:.2f} before, {r['load_after']:.2f} after, "
            f"{os.cpu_count()} cores)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=FULL_PANEL["series"])
    parser.add_argument("--shortest", type=int, default=FULL_PANEL["shortest"])
    parser.add_argument("--longest", type=int, default=FULL_PANEL["longest"])
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--k1", type=int, default=100)
    args = parser.parse_args()
    print(describe(panel_record(**vars(args))))


if __name__ == "__main__":
    main()
