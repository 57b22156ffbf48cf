"""Every regularisation rate 0 reproduces the engine of before the options bit for bit:
the parameters trained now equal those recorded with the engine before them
(tests/make_rate0_reference.py: before the masks; tests/make_bidirectional_rate0_reference.py:
before the masks reached bidirectional layers; their docstrings say how). The training is
redone in a process on SciPy's OpenBLAS, the backend the recordings were made with."""
import os

import numpy as np
import pytest

import make_bidirectional_rate0_reference
import make_rate0_reference
from conftest import trained_on_openblas

REFERENCES = (make_rate0_reference, make_bidirectional_rate0_reference)
CASES = [(reference, key) for reference in REFERENCES for key, _, _ in reference.configurations()]


def recording_path(reference):
    """tests/data/<name without make_>.npz, the file `reference` writes."""
    name = reference.__name__.removeprefix("make_")
    return os.path.join(os.path.dirname(os.path.abspath(reference.__file__)), "data", f"{name}.npz")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """runs(reference) -> (recorded, retrained), each {key: flat parameters}; trained once
    per reference module."""
    done = {}

    def run(reference):
        if reference not in done:
            with np.load(recording_path(reference)) as archive:
                recorded = dict(archive)
            done[reference] = recorded, trained_on_openblas(reference, tmp_path_factory.mktemp(reference.__name__))
        return done[reference]

    return run


@pytest.mark.parametrize("reference, key", CASES, ids=[f"{r.__name__.removeprefix('make_')}-{key}" for r, key in CASES])
def test_rates_zero_reproduce_the_engine_before_them(runs, reference, key):
    recorded, retrained = runs(reference)
    assert retrained[key].dtype == recorded[key].dtype
    assert np.array_equal(retrained[key], recorded[key]), key
