"""Entry point `python -m bench.recompute [T ...]`: memory-bounded BPTT against storing
every step, full BPTT over one long series of the `single` configuration (LSTM, I=1,
H=64, B=1), T = 1k, 10k and 100k by default. Each (T, memory) runs in a fresh process
(`python -m bench.recompute --one T MEMORY`); prints a table of the median time per
update, the engine's own account of its buffers and the peak RSS."""
import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

ROUNDS = 3


def measure(T, memory):
    """One process: warm up, then time ROUNDS full-BPTT updates over T steps."""
    import engine
    from bench.configs import get_config

    config = get_config("single")
    model = engine.Model(config.cell, config.input_size, config.hidden_size, 1, config.num_layers)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, 1, config.input_size)).astype(np.float32)
    y = rng.standard_normal((T, 1, 1)).astype(np.float32)
    trainer = engine.Trainer(model, k1=None, memory=memory, shards=1)
    trainer.fit(x, y)  # compile or load from cache, allocate
    seconds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        trainer.fit(x, y)
        seconds.append(time.perf_counter() - started)
    return {"T": T, "memory": memory, "seconds": float(np.median(seconds)),
            "buffer_bytes": trainer._chunks[T, 1].nbytes,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lengths", nargs="*", type=int, default=[1_000, 10_000, 100_000])
    parser.add_argument("--one", nargs=2, metavar=("T", "MEMORY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        T, memory = int(args.one[0]), None if args.one[1] == "none" else args.one[1]
        print(json.dumps(measure(T, memory)))
        return
    print("full BPTT, single config; ms per update (median), engine buffers and peak RSS in MiB")
    print(f"{'T':>7}  {'stored ms':>9}  {'buffers':>8}  {'RSS':>5}  {'sqrt ms':>8}  {'buffers':>8}  {'RSS':>5}"
          f"  {'saved':>6}  {'extra time':>10}")
    for T in args.lengths:
        runs = [json.loads(subprocess.run([sys.executable, "-m", "bench.recompute", "--one", str(T), memory],
                                          capture_output=True, text=True, check=True).stdout)
                for memory in ("none", "sqrt")]
        stored, bounded = runs
        print(f"{T:>7}  {stored['seconds'] * 1e3:>9.1f}  {stored['buffer_bytes'] / 2**20:>8.2f}  "
              f"{stored['peak_mb']:>5.0f}  {bounded['seconds'] * 1e3:>8.1f}  "
              f"{bounded['buffer_bytes'] / 2**20:>8.2f}  {bounded['peak_mb']:>5.0f}  "
              f"{1 - bounded['buffer_bytes'] / stored['buffer_bytes']:>6.1%}  "
              f"{bounded['seconds'] / stored['seconds'] - 1:>+10.0%}")


if __name__ == "__main__":
    main()
