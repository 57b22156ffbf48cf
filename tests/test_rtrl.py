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


def flat(model, grads):
    return np.concatenate([np.asarray(grads[name]).ravel() for name in model.layout.shapes])


def kernel_chunks(model, x, y, loss, resets, k1):
    """engine.online.Rtrl over x in chunks of k1 steps from a zero state, the parameters
    fixed: the count-weighted sum of the chunks' gradients (the whole sequence's mean)."""
    from engine.online import Rtrl
    B = x.shape[1]
    grad = np.zeros_like(model.params)
    rtrl = Rtrl(model, B, grad)
    total, values, counts, state = np.zeros(model.params.shape), [], [], model.init_state(B)
    for start in range(0, len(x), k1):
        end = min(start + k1, len(x))
        value, count = rtrl.run(x[start:end], y[start:end], loss, state, resets[start:end])
        state = rtrl.state_after(end - start)
        total += count * grad.astype(np.float64)
        values.append(value)
        counts.append(count)
    return float(np.dot(values, counts) / sum(counts)), total / sum(counts)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_rtrl_kernel_equals_naive(variant, num_layers, loss):
    """kernels/rtrl.py over one chunk of the whole sequence equals the NumPy RTRL."""
    model, x, y, resets = make_problem(*variant, num_layers, loss)
    value, grad = kernel_chunks(model, x, y, loss, resets, len(x))
    expected_value, expected = naive.rtrl_gradient(model.state_dict(), x, y, variant[0], loss, variant[1], resets)
    assert_close(value, expected_value, REL, "loss")
    assert_close(grad, flat(model, expected), REL, "gradient")


@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_rtrl_influence_carried_across_chunks(variant, num_layers):
    """Chunks of 4 steps (the last one short), the influence and state carried between
    them and the parameters fixed: the chunks' gradients add up to full BPTT's (a chunk
    of no counted target included)."""
    model, x, y, resets = make_problem(*variant, num_layers, T=10)
    y[4:8] = np.nan  # the second chunk counts nothing: the influence still moves on
    value, grad = kernel_chunks(model, x, y, "mse", resets, 4)
    expected_value, expected = engine.loss_and_grad(model, x, y, resets=resets)
    assert_close(value, expected_value, REL, "loss")
    assert_close(grad, flat(model, expected), REL, "gradient")


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_rtrl_float32_close_to_float64(variant):
    """float32 kernels (their own tanh and sigmoid) agree with float64 to float32 noise."""
    model, x, y, resets = make_problem(*variant, 2)
    single = engine.Model(**{**model.config, "dtype": "float32"})
    single.load_state_dict(model.state_dict())
    _, expected = kernel_chunks(model, x, y, "mse", resets, 4)
    _, grad = kernel_chunks(single, x.astype(np.float32), y.astype(np.float32), "mse", resets, 4)
    assert_close(grad, expected, 1e-4, "float32 gradient")
