"""Entry point `python -m bench.grad_flow_cost [ROUNDS]`: what diagnostics=True (the
gradient-flow summary, engine/grad_flow.py) costs on the `small` configuration (LSTM,
I=8, H=64, B=32, k1=100): Trainer.fit time per epoch of 100 updates with and without
diagnostics, rounds alternated, medians. Two truncations: k2 = k1 (the probe source: an
extra pass every PROBE_EVERY updates) and k2 = 150 (the overhang source: no extra pass)."""
import sys
import time

import numpy as np

import engine
from bench.configs import get_config

UPDATES = 100  # per epoch


def epoch_seconds(k2, diagnostics, x, y):
    """(wall, CPU) seconds of one epoch of Trainer.fit on a warmed-up trainer (compiled,
    buffers allocated); CPU time, over all threads, is less disturbed by other processes."""
    config = get_config("small")
    model = engine.Model(config.cell, config.input_size, config.hidden_size, 1, config.num_layers)
    trainer = engine.Trainer(model, k1=config.chunk, k2=k2, diagnostics=diagnostics)
    trainer.fit(x[:2 * k2], y[:2 * k2])  # compile or load from cache, allocate both shapes
    started, cpu = time.perf_counter(), time.process_time()
    trainer.fit(x, y)
    return time.perf_counter() - started, time.process_time() - cpu


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    config = get_config("small")
    rng = np.random.default_rng(0)
    T = UPDATES * config.chunk
    x = rng.standard_normal((T, config.batch, config.input_size)).astype(np.float32)
    y = rng.standard_normal((T, config.batch, 1)).astype(np.float32)
    print(f"small: lstm I={config.input_size} H={config.hidden_size} B={config.batch} k1={config.chunk}, "
          f"{UPDATES} updates per epoch, {rounds} rounds alternated, median seconds per epoch (wall and CPU)")
    for k2 in (config.chunk, 150):
        times = {False: [], True: []}
        for _ in range(rounds):
            for diagnostics in (False, True):
                times[diagnostics].append(epoch_seconds(k2, diagnostics, x, y))
        source = "probe" if k2 == config.chunk else "overhang"
        for column, clock in enumerate(("wall", "CPU")):
            off, on = (float(np.median([pair[column] for pair in times[flag]])) for flag in (False, True))
            print(f"k2={k2} ({source}), {clock}: without {off:.4f}s  with {on:.4f}s  "
                  f"cost {100 * (on / off - 1):+.1f}%")


if __name__ == "__main__":
    main()
