"""Writes tests/data/rate0_reference.npz: the parameters of tiny models after a few Trainer
updates, recorded with the engine as it was before dropout, recurrent dropout and zoneout
were added (commit 1c9ae27). tests/test_rate0_recordings.py checks that with every rate 0
the engine still produces them bit for bit.

    cd <repo> && PYTHONPATH=$PWD python tests/make_rate0_reference.py

Each configuration (its key names it) trains from a seeded model on seeded data with
resets, k2 > k1 (a carried overhang), for two epochs: every cell, 1 and 2 layers, and the
plans: serial, two batch shards, two hidden blocks (split), recomputation (memory="sqrt").
BLAS may round differently on another machine: regenerate there from the old commit if
the test fails on a machine the file was not made on.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import engine  # noqa: E402

T, B, I, H, O = 24, 4, 3, 4, 2
PLANS = {"serial": dict(shards=1), "shards": dict(shards=2), "split": dict(split=2),
         "recompute": dict(shards=1, memory="sqrt")}
VARIANTS = (("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh"), ("rnn", "relu"))


def configurations():
    """(key, model settings, trainer settings) of every recorded run."""
    for cell, nonlinearity in VARIANTS:
        for layers in (1, 2):
            for plan, options in PLANS.items():
                for dtype in ("float64", "float32"):
                    key = f"{cell}-{nonlinearity}-L{layers}-{plan}-{dtype}"
                    model = dict(cell=cell, input_size=I, hidden_size=H, output_size=O, num_layers=layers,
                                 nonlinearity=nonlinearity, dtype=dtype, seed=3)
                    yield key, model, dict(k1=6, k2=9, lr=0.01, seed=5, **options)


def data(dtype, steps=T):
    """Seeded (x, y, resets) of `steps` steps of B streams."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((steps, B, I)).astype(dtype)
    y = rng.standard_normal((steps, B, O)).astype(dtype)
    resets = rng.random((steps, B)) < 0.1
    return x, y, resets


def trained(model_settings, trainer_settings, steps=T, epochs=2):
    """The flat parameters after `epochs` epochs of fit on data(dtype, steps)."""
    model = engine.Model(**model_settings)
    trainer = engine.Trainer(model, **trainer_settings)
    x, y, resets = data(model_settings["dtype"], steps)
    trainer.fit(x, y, epochs=epochs, resets=resets)
    return model.params.copy()


if __name__ == "__main__":
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "rate0_reference.npz")
    arrays = {key: trained(model, trainer) for key, model, trainer in configurations()}
    np.savez(path, **arrays)
    print(f"wrote {len(arrays)} configurations to {path}")
