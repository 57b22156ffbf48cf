"""Writes tests/data/bidirectional_rate0_reference.npz: the parameters of tiny bidirectional
models after a few Trainer updates, recorded with the engine as it was before dropout,
recurrent dropout and zoneout reached bidirectional layers (commit 6b8f618, main before
the masks were merged). tests/test_rate0_recordings.py checks that with every
rate 0 the engine still produces them bit for bit.

    git archive 6b8f618 | tar -x -C /tmp/old && cp tests/make_*rate0_reference.py /tmp/old/tests/
    cd /tmp/old && PYTHONPATH=$PWD python tests/make_bidirectional_rate0_reference.py OUTPUT.npz

Each configuration (its key names it) trains a seeded model on whole sequences (k1=None)
with resets for three epochs: every cell, 1 and 2 layers, one shard and two batch shards,
both dtypes. BLAS may round differently on another machine: regenerate there from the
old commit if the test fails on a machine the file was not made on.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import make_rate0_reference  # noqa: E402  (beside this file: copy both into an old tree)

T, B, I, H, O = 10, 4, 3, 4, 2
VARIANTS = (("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh"), ("rnn", "relu"))


def configurations():
    """(key, model settings, trainer settings) of every recorded run."""
    for cell, nonlinearity in VARIANTS:
        for layers in (1, 2):
            for shards in (1, 2):
                for dtype in ("float64", "float32"):
                    key = f"{cell}-{nonlinearity}-L{layers}-shards{shards}-{dtype}"
                    model = dict(cell=cell, input_size=I, hidden_size=H, output_size=O, num_layers=layers,
                                 nonlinearity=nonlinearity, dtype=dtype, seed=3, bidirectional=True)
                    yield key, model, dict(k1=None, lr=0.05, seed=5, shards=shards)


def trained(model_settings, trainer_settings):
    """The flat parameters after three epochs of fit on T steps (make_rate0_reference's data)."""
    return make_rate0_reference.trained(model_settings, trainer_settings, steps=T, epochs=3)


if __name__ == "__main__":
    default = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "bidirectional_rate0_reference.npz")
    path = sys.argv[1] if len(sys.argv) > 1 else default
    arrays = {key: trained(model, trainer) for key, model, trainer in configurations()}
    np.savez(path, **arrays)
    print(f"wrote {len(arrays)} configurations to {path}")
