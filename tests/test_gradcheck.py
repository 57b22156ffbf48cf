"""Float64 central-difference checks of engine.loss_and_grad.

Every entry of every parameter tensor and of the initial state (h_0, and c_0 for the
LSTM) is perturbed by +-EPS, for every cell x {1, 2 layers} x {mse, cross_entropy} x
{all targets, some missing}, and with the linear path from the inputs to the outputs
(skip.weight). The loss is the engine's own, so this checks the shipped
kernels end to end without the NumPy reference.

Criterion, per tensor: max |numerical - analytic| / max(|numerical|_inf, |analytic|_inf)
<= REL. Relative to the tensor's largest entry, because entries that are ~0 by
cancellation have no meaningful per-entry relative error; the central difference's
round-off (~1e-16 * |loss| / EPS ~ 1e-10) and truncation (~EPS^2) errors are far below
REL times the smallest tensor scale we allow (MIN_SCALE).
"""
import numpy as np
import pytest

import engine
import naive

EPS = 1e-6
REL = 1e-6
MIN_SCALE = 1e-3  # a tensor whose whole gradient is smaller would make the check vacuous
RELU_MARGIN = 1e-4  # no ReLU pre-activation this close to its kink (EPS moves them ~1e-5)


def numerical_gradient(loss_of, array):
    """Central differences of loss_of() with respect to every entry of `array`, which is
    perturbed in place (and restored exactly)."""
    flat = array.reshape(-1)
    assert np.shares_memory(flat, array)
    grad = np.empty(flat.shape)
    for index in range(flat.size):
        saved = flat[index]
        flat[index] = saved + EPS
        up = loss_of()
        flat[index] = saved - EPS
        down = loss_of()
        flat[index] = saved
        grad[index] = (up - down) / ((saved + EPS) - (saved - EPS))  # the step actually taken
    return grad.reshape(array.shape)


def assert_matches_central_differences(model, state, loss_of, analytic, min_scale=0.0):
    """Every tensor of `analytic` (keyed like model.state_dict(), plus "h_0" and for LSTM
    "c_0", the initial state's) within REL relative error of central differences of
    loss_of(); each tensor's gradient at least min_scale (or the check would be vacuous)."""
    tensors = dict(model.views)  # views into the flat buffer: perturbing them moves the model
    if model.cell == "lstm":
        tensors["h_0"], tensors["c_0"] = state
    else:
        tensors["h_0"] = state
    assert set(tensors) == set(analytic)
    for name, tensor in tensors.items():
        numerical = numerical_gradient(loss_of, tensor)
        scale = max(np.abs(numerical).max(), np.abs(analytic[name]).max())
        assert scale > min_scale, f"{name}: the check would be vacuous"
        error = np.abs(numerical - analytic[name]).max() / scale
        assert error <= REL, f"{name}: relative error {error:.3g} (gradient scale {scale:.3g})"


def well_conditioned_case(make_case, cell, nonlinearity, num_layers, loss, masked, **options):
    """A case whose every gradient tensor is clearly non-zero and, for ReLU, whose
    pre-activations all stay RELU_MARGIN away from the kink; re-drawn until it is.
    options: make_case's others (skip, bidirectional)."""
    for seed in range(50):
        case = make_case(cell=cell, nonlinearity=nonlinearity, num_layers=num_layers, loss=loss,
                         masked=masked, T=4, B=2, I=2, H=3, O=3, seed=seed, **options)
        if nonlinearity == "relu":
            pre = naive.rnn_preactivations(case["params"], case["x"], case["state"], "relu")
            if np.abs(pre).min() < RELU_MARGIN:
                continue
        _, grads = engine.loss_and_grad(case["model"], case["x"], case["y"], loss, case["state"])
        if min(np.abs(g).max() for g in grads.values()) >= MIN_SCALE:
            return case
    pytest.fail("no well-conditioned case in 50 seeds")


@pytest.mark.parametrize("masked", [False, True], ids=["all-targets", "masked"])
def test_gradients_match_central_differences(make_case, variant, num_layers, loss_name, masked):
    cell, nonlinearity = variant
    case = well_conditioned_case(make_case, cell, nonlinearity, num_layers, loss_name, masked)
    model, x, y, state = case["model"], case["x"], case["y"], case["state"]
    if masked:  # the mask is really exercised: some targets are missing, not all
        missing = np.isnan(y) if loss_name == "mse" else y == -1
        assert missing.any() and not missing.all()

    def loss_of():
        value, _ = engine.loss_and_grad(model, x, y, loss_name, state)
        return value

    _, analytic = engine.loss_and_grad(model, x, y, loss_name, state)
    params_before = model.params.copy()
    assert_matches_central_differences(model, state, loss_of, analytic)
    np.testing.assert_array_equal(model.params, params_before)


def assert_linear_path_gradients(make_case, cell, nonlinearity, loss, bidirectional):
    """A two-layer model with the linear path (Model(skip=True), its weight drawn at random
    so that the path counts in every output) and missing targets: skip.weight's gradient
    and every other tensor's match central differences."""
    case = well_conditioned_case(make_case, cell, nonlinearity, 2, loss, True, skip=True,
                                 bidirectional=bidirectional)
    model, x, y, state = case["model"], case["x"], case["y"], case["state"]
    _, analytic = engine.loss_and_grad(model, x, y, loss, state)
    assert "skip.weight" in analytic and np.abs(model.views["skip.weight"]).min() > 0
    assert_matches_central_differences(model, state, lambda: engine.loss_and_grad(model, x, y, loss, state)[0],
                                       analytic)


def test_linear_path_gradients_match_central_differences(make_case, variant, loss_name):
    assert_linear_path_gradients(make_case, *variant, loss_name, bidirectional=False)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_bidirectional_linear_path_gradients_match_central_differences(make_case, cell, loss_name):
    assert_linear_path_gradients(make_case, cell, "tanh", loss_name, bidirectional=True)


def test_gradcheck_detects_a_wrong_gradient(make_case):
    # The check itself can fail: a gradient off by 1e-5 relative is caught.
    case = well_conditioned_case(make_case, "gru", "tanh", 1, "mse", False)
    model, x, y, state = case["model"], case["x"], case["y"], case["state"]
    _, analytic = engine.loss_and_grad(model, x, y, "mse", state)
    tensor = model.views["weight_hh_l0"]
    numerical = numerical_gradient(lambda: engine.loss_and_grad(model, x, y, "mse", state)[0],
                                   tensor)
    wrong = analytic["weight_hh_l0"].copy()
    wrong.flat[4] += 1e-5 * np.abs(wrong).max()
    scale = max(np.abs(numerical).max(), np.abs(wrong).max())
    assert np.abs(numerical - wrong).max() / scale > REL
