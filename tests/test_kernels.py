"""The compiled engine against the plain NumPy reference (tests/naive.py).

Model.forward and engine.loss_and_grad over hypothesis-drawn shapes T, B, I, H, O (from
1 up), every cell, 1 and 2 layers, both losses, with and without missing targets:
float64 equals the reference to 1e-10 (relative to each tensor's largest entry),
float32 stays within 1e-4 of it (relative, or absolute below 1: see scale_floors).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine
import naive

VARIANTS = [("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh"), ("rnn", "relu")]
FLOAT64_REL = 1e-10
FLOAT32_REL = 1e-4




def scale_floors(expected_grads, dtype):
    """(floor for outputs, states and loss; floor for gradients): the scale below which a
    tensor is judged against the floor rather than its own largest entry.

    float64: none, every tensor against itself. float32: 1, and for gradients the
    model's largest gradient if that is larger: rtol = atol = 1e-4 at tensor level. The
    float32 tanh/sigmoid are rational approximations accurate to 1e-6 absolute, not
    relative (kernels/activations.py), so a quantity small by cancellation (a y_hat near
    0, a loss near its minimum, head.bias under cross-entropy) carries an absolute error
    of that order times the terms summed into it; every quantity here is O(1) by
    construction (standard normal data, default init). The worst seen over thousands of
    random small cases is below 2e-5."""
    if dtype == "float64":
        return 0.0, 0.0
    return 1.0, max([1.0] + [np.abs(g).max() for g in expected_grads.values()])


# Every cell and depth in every run (parametrized); hypothesis draws the rest.
cell_and_depth = pytest.mark.parametrize("cell_variant, layers",
                                         [(v, n) for v in VARIANTS for n in (1, 2)],
                                         ids=[f"{c}-{a}-L{n}" for c, a in VARIANTS for n in (1, 2)])

cases = st.fixed_dictionaries(dict(
    loss=st.sampled_from(["mse", "cross_entropy"]),
    masked=st.booleans(),
    random_state=st.booleans(),
    T=st.integers(1, 6), B=st.integers(1, 4), I=st.integers(1, 4), H=st.integers(1, 5),
    O=st.integers(1, 3),
    seed=st.integers(0, 2**16),
))

fast = settings(deadline=None, max_examples=25)


def build(make_case, case, dtype):
    cell, nonlinearity = case["variant"]
    options = {key: value for key, value in case.items() if key != "variant"}
    return make_case(cell=cell, nonlinearity=nonlinearity, dtype=dtype, **options)


def assert_state_close(assert_close, actual, expected, cell, rel, floor):
    if cell == "lstm":
        assert_close(actual[0], expected[0], rel, "final h", floor)
        assert_close(actual[1], expected[1], rel, "final c", floor)
    else:
        assert_close(actual, expected, rel, "final h", floor)


def check_forward(make_case, assert_close, case, dtype, rel):
    c = build(make_case, case, dtype)
    y_hat, state = c["model"].forward(c["x"], c["state"])
    assert y_hat.dtype == np.dtype(dtype)
    expected_y_hat, expected_state = naive.forward(c["params"], c["x"], c["cell"], c["state"],
                                                   c["nonlinearity"])
    assert y_hat.shape == expected_y_hat.shape
    floor, _ = scale_floors({}, dtype)
    assert_close(y_hat, expected_y_hat, rel, "y_hat", floor)
    assert_state_close(assert_close, state, expected_state, c["cell"], rel, floor)


def check_loss_and_grad(make_case, assert_close, case, dtype, rel):
    c = build(make_case, case, dtype)
    value, grads = engine.loss_and_grad(c["model"], c["x"], c["y"], c["loss"], c["state"])
    expected_value, expected_grads = naive.loss_and_grad(c["params"], c["x"], c["y"], c["cell"],
                                                         c["loss"], c["state"], c["nonlinearity"])
    floor, gradient_floor = scale_floors(expected_grads, dtype)
    assert isinstance(value, float)
    assert_close(value, expected_value, rel, "loss", floor)
    assert set(grads) == set(expected_grads)
    for name, expected in expected_grads.items():
        assert grads[name].dtype == np.dtype(dtype), name
        assert_close(grads[name], expected, rel, name, gradient_floor)


@cell_and_depth
@fast
@given(case=cases)
def test_forward_float64_equals_reference(make_case, assert_close, cell_variant, layers, case):
    case = dict(case, variant=cell_variant, num_layers=layers)
    check_forward(make_case, assert_close, case, "float64", FLOAT64_REL)


@cell_and_depth
@fast
@given(case=cases)
def test_loss_and_grad_float64_equal_reference(make_case, assert_close, cell_variant, layers, case):
    case = dict(case, variant=cell_variant, num_layers=layers)
    check_loss_and_grad(make_case, assert_close, case, "float64", FLOAT64_REL)


@cell_and_depth
@fast
@given(case=cases)
def test_forward_float32_close_to_reference(make_case, assert_close, cell_variant, layers, case):
    case = dict(case, variant=cell_variant, num_layers=layers)
    check_forward(make_case, assert_close, case, "float32", FLOAT32_REL)


@cell_and_depth
@fast
@given(case=cases)
def test_loss_and_grad_float32_close_to_reference(make_case, assert_close, cell_variant, layers, case):
    case = dict(case, variant=cell_variant, num_layers=layers)
    check_loss_and_grad(make_case, assert_close, case, "float32", FLOAT32_REL)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_loss_and_grad_is_bit_reproducible(make_case, variant, dtype):
    # Same inputs, same bits: no uninitialised buffer or race leaks into the result.
    c = make_case(cell=variant[0], nonlinearity=variant[1], num_layers=2, T=7, B=3, H=4,
                  masked=True, dtype=dtype)
    first_value, first = engine.loss_and_grad(c["model"], c["x"], c["y"], "mse", c["state"])
    engine.loss_and_grad(c["model"], 2 * c["x"], c["y"], "mse")  # disturb any shared buffer
    second_value, second = engine.loss_and_grad(c["model"], c["x"], c["y"], "mse", c["state"])
    assert first_value == second_value
    for name in first:
        assert not np.shares_memory(first[name], second[name]), name  # a real comparison
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_state_none_means_zeros(make_case, variant):
    c = make_case(cell=variant[0], nonlinearity=variant[1], num_layers=2, random_state=False)
    zeros = c["model"].init_state(c["x"].shape[1])
    value_none, grads_none = engine.loss_and_grad(c["model"], c["x"], c["y"], "mse", None)
    value_zeros, grads_zeros = engine.loss_and_grad(c["model"], c["x"], c["y"], "mse", zeros)
    assert value_none == value_zeros
    for name in grads_none:
        np.testing.assert_array_equal(grads_none[name], grads_zeros[name], err_msg=name)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_saturated_gates_stay_finite_and_exact(make_case, assert_close, variant, dtype):
    # Huge pre-activations: sigmoid's exp overflows, tanh saturates; no NaN may appear.
    c = make_case(cell=variant[0], nonlinearity=variant[1], num_layers=2, T=5, dtype=dtype)
    model = c["model"]
    params = {name: value * (1.0 if name.startswith("head") else 300.0)
              for name, value in c["params"].items()}
    model.load_state_dict(params)
    params = model.state_dict()
    x = 10 * c["x"]
    value, grads = engine.loss_and_grad(model, x, c["y"], "mse", c["state"])
    with np.errstate(over="ignore"):
        expected_value, expected_grads = naive.loss_and_grad(params, x, c["y"], c["cell"], "mse",
                                                             c["state"], c["nonlinearity"])
    assert np.isfinite(value)
    rel = FLOAT64_REL if dtype == "float64" else FLOAT32_REL
    assert_close(value, expected_value, rel, "loss", scale_floors({}, dtype)[0])
    # Saturation makes gradients ill-conditioned: 1 - tanh(a)^2 keeps only eps / (1 - h^2)
    # of its digits, so a tensor fed only by saturated units (gradient ~1e-11) differs
    # from the reference in its leading digits. Its error is still ~eps times the model's
    # largest gradient, which float64 is held to; in float32 only finiteness is asserted.
    largest = max(np.abs(g).max() for g in expected_grads.values())
    for name, expected in expected_grads.items():
        assert np.all(np.isfinite(grads[name])), name
        if dtype == "float64":
            assert_close(grads[name], expected, rel, name, floor=largest)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_with_huge_logits_is_stable(make_case, assert_close, dtype):
    # Logits of order 1e4: a naive softmax overflows; log-sum-exp must not.
    c = make_case(cell="gru", loss="cross_entropy", O=4, T=5, B=3, dtype=dtype)
    model = c["model"]
    params = c["params"]
    params["head.weight"] = params["head.weight"] * 3e4
    model.load_state_dict(params)
    params = model.state_dict()
    value, grads = engine.loss_and_grad(model, c["x"], c["y"], "cross_entropy", c["state"])
    expected_value, expected_grads = naive.loss_and_grad(params, c["x"], c["y"], "gru",
                                                         "cross_entropy", c["state"])
    assert np.isfinite(value) and value > 1.0  # confidently wrong predictions cost a lot
    rel = FLOAT64_REL if dtype == "float64" else FLOAT32_REL
    floor, gradient_floor = scale_floors(expected_grads, dtype)
    assert_close(value, expected_value, rel, "loss", floor)
    for name, expected in expected_grads.items():
        assert np.all(np.isfinite(grads[name])), name
        assert_close(grads[name], expected, rel, name, gradient_floor)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_class_cross_entropy(make_case, dtype):
    # A softmax over one class is constant 1: loss 0, nothing to learn.
    c = make_case(cell="lstm", loss="cross_entropy", O=1, T=3, B=3, dtype=dtype)
    value, grads = engine.loss_and_grad(c["model"], c["x"], c["y"], "cross_entropy", c["state"])
    assert value == 0.0
    bound = 0.0 if dtype == "float64" else 1e-6  # float32 rounding of (p - 1) / count
    for name, grad in grads.items():
        assert np.abs(grad).max() <= bound, name
