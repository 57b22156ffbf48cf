"""Entry point `python -m bench.compile`: start the engine and make one training update
with every kernel signature training can use (both dtypes, every cell, both losses,
every optimizer, norm and value clipping, batch shards and hidden blocks); prints
{"seconds": ...} as JSON.
--dtypes float32: only those dtypes' kernels (what a float32-only user compiles; Numba
compiles a dtype's specialisations on their first call only).
--no-split: leave out the hidden-block kernels (engine/split.py), which only a plan that
splits hidden units compiles.

Run it in a fresh process with NUMBA_CACHE_DIR set to an empty directory for the cold
compile time, and again with the same directory for the cached start."""
import argparse
import json
import time

import numpy as np

DTYPES = ("float32", "float64")
CELLS = ("lstm", "gru", "rnn")
LOSSES = ("mse", "cross_entropy")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")


def start_all(dtypes=DTYPES, split=True):
    """Import the engine and train every combination once on a tiny two-layer model (and
    each cell once with its 3 hidden units split into 3 blocks)."""
    import engine
    from engine.trainer import Trainer

    T, B, I, H, O = 3, 2, 2, 3, 2
    x = np.ones((T, B, I))
    targets = {"mse": np.zeros((T, B, O)), "cross_entropy": np.zeros((T, B), np.int64)}
    for dtype in dtypes:
        for cell in CELLS:
            for loss in LOSSES:
                for optimizer in OPTIMIZERS:
                    model = engine.Model(cell, I, H, O, num_layers=2, dtype=dtype)
                    trainer = Trainer(model, loss=loss, optimizer=optimizer, k1=T, clip_norm=1.0,
                                      clip_value=1.0, schedule="constant")
                    trainer.partial_fit(x, targets[loss])
            if split:
                model = engine.Model(cell, I, H, O, num_layers=2, dtype=dtype)
                Trainer(model, k1=T, split=3, schedule="constant").partial_fit(x, targets["mse"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument("--no-split", dest="split", action="store_false")
    args = parser.parse_args()
    started = time.perf_counter()
    start_all(args.dtypes, args.split)
    print(json.dumps({"seconds": time.perf_counter() - started}))
