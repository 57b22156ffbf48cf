"""Forward-mode gradients (docs/training.md, Learning without a window): exact RTRL against
full BPTT, the kernels against the plain NumPy RTRL of tests/naive.py."""
import numpy as np
import pytest

import engine
import naive
from conftest import VARIANTS, make_case_impl
from conftest import assert_close_impl as assert_close

REL = 1e-10  # float64 on both sides, relative to each tensor's largest entry


def variant_id(variant):
    return f"{variant[0]}-{variant[1]}" if variant[0] == "rnn" else variant[0]


def make_problem(cell, nonlinearity, num_layers, loss="mse", T=9, B=3, seed=0):
    """A float64 model, x, y with about a third of the targets missing, and resets at two
    steps of some streams (the second stream twice)."""
    case = make_case_impl(cell=cell, nonlinearity=nonlinearity, num_layers=num_layers, loss=loss,
                          masked=True, T=T, B=B, I=2, H=3, O=2, dtype="float64", seed=seed,
                          random_state=False)
    resets = np.zeros((T, B), dtype=bool)
    resets[3, 1] = resets[6, 1] = resets[5, 2] = True
    return case["model"], case["x"], case["y"], resets


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_naive_rtrl_equals_full_bptt(variant, num_layers, loss):
    """The NumPy RTRL's gradient (one update at the end of the sequence) equals
    engine.loss_and_grad's full-BPTT gradient, with resets and missing targets."""
    model, x, y, resets = make_problem(*variant, num_layers, loss)
    value, grads = naive.rtrl_gradient(model.state_dict(), x, y, variant[0], loss, variant[1], resets)
    expected_value, expected = engine.loss_and_grad(model, x, y, loss, resets=resets)
    assert_close(value, expected_value, REL, "loss")
    for name in model.views:
        assert_close(grads[name], expected[name], REL, name)
