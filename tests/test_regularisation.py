"""Dropout between layers, variational recurrent dropout and zoneout (docs/training.md,
"Regularisation"): every rate 0 reproduces the engine of before them bit for bit; the
kernels' masks against the NumPy reference and float64 central differences; inter-layer
dropout against PyTorch; the drawn masks' rates; the options' checks, checkpoints and
exports."""
from types import SimpleNamespace

import numpy as np
import pytest

import engine
import make_rate0_reference as reference
import naive
from conftest import VARIANTS
from conftest import assert_close_impl as assert_close
from conftest import make_case_impl
from engine.bptt import SERIAL, initial_state_grad
from engine.masks import draw_masks
from engine.passes import RecomputePass, StoredPass
from engine.split import SplitLayers
from test_gradcheck import assert_matches_central_differences


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


# ---------------------------------------------------------------- kernels with fixed masks

RATE = 0.4
OPTIONS = {"dropout": dict(dropout=RATE), "recurrent": dict(recurrent_dropout=RATE), "zoneout": dict(zoneout=RATE),
           "all": dict(dropout=RATE, recurrent_dropout=RATE, zoneout=RATE)}


def _option_cases(variants):
    """(variant, option name) pairs: zoneout does not apply to the RNN ("all" without it)."""
    for variant in variants:
        for name in OPTIONS:
            if variant[0] != "rnn" or name != "zoneout":
                yield variant, name


def _rates(variant, option):
    rates = dict(OPTIONS[option])
    if variant[0] == "rnn":
        rates.pop("zoneout", None)
    return rates


def _masked_case(variant, num_layers, option, seed=0, T=5, B=3, H=4):
    """A float64 model with the option's rates, data with resets, and masks drawn for it."""
    cell, nonlinearity = variant
    case = make_case_impl(cell=cell, nonlinearity=nonlinearity, num_layers=num_layers, loss="mse", masked=True,
                          T=T, B=B, I=3, H=H, O=2, seed=seed)
    model = engine.Model(cell=cell, input_size=3, hidden_size=H, output_size=2, num_layers=num_layers,
                         nonlinearity=nonlinearity, dtype="float64", **_rates(variant, option))
    model.load_state_dict(case["params"])
    rng = np.random.default_rng(seed + 7)
    case.update(model=model, resets=rng.random((T, B)) < 0.2, masks=draw_masks(model, T, B, rng))
    return case


def _naive_masks(masks):
    return {name: None if mask is None else mask.astype(np.float64) for name, mask in masks._asdict().items()}


@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("variant, option", list(_option_cases(VARIANTS)),
                         ids=[f"{v[0]}-{v[1]}-{o}" for v, o in _option_cases(VARIANTS)])
def test_kernels_with_masks_equal_the_naive_reference(variant, option, num_layers):
    case = _masked_case(variant, num_layers, option)
    model, masks = case["model"], case["masks"]
    acting = any(mask is not None and mask.size and (mask == 0).any() for mask in masks)
    assert acting or (option == "dropout" and num_layers == 1)  # one layer: no output below another
    loss, grads = engine.loss_and_grad(model, case["x"], case["y"], "mse", case["state"], case["resets"],
                                       masks=masks)
    expected_loss, expected = naive.loss_and_grad(case["params"], case["x"], case["y"], variant[0], "mse",
                                                  case["state"], variant[1], case["resets"],
                                                  masks=SimpleNamespace(**_naive_masks(masks)))
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    for name, value in expected.items():
        assert_close(grads[name], value, 1e-10, name)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_zoneout_at_inference_is_its_expectation(cell):
    """Without masks (Model.forward, evaluate, loss_and_grad without masks) zoneout's units
    keep their previous value with weight p: the naive reference with m = p everywhere."""
    case = _masked_case((cell, "tanh"), 2, "zoneout")
    model, T, B, H = case["model"], 5, 3, 4
    expectation = SimpleNamespace(zone_h=np.full((2, T, B, H), RATE), zone_c=np.full((2, T, B, H), RATE))
    y_hat, state = model.forward(case["x"], case["state"], case["resets"])
    expected, expected_state = naive.forward(case["params"], case["x"], cell, case["state"], resets=case["resets"],
                                             masks=expectation)
    assert_close(y_hat, expected, 1e-12, "y_hat")
    for part, expected_part in zip(_parts(state), _parts(expected_state)):
        assert_close(part, expected_part, 1e-12, "state")
    loss, grads = engine.loss_and_grad(model, case["x"], case["y"], "mse", case["state"], case["resets"])
    expected_loss, expected_grads = naive.loss_and_grad(case["params"], case["x"], case["y"], cell, "mse",
                                                        case["state"], resets=case["resets"], masks=expectation)
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    for name, value in expected_grads.items():
        assert_close(grads[name], value, 1e-10, name)
    plain = engine.Model(cell=cell, input_size=3, hidden_size=H, output_size=2, num_layers=2, dtype="float64")
    plain.load_state_dict(case["params"])
    assert not np.allclose(plain.forward(case["x"], case["state"], case["resets"])[0], y_hat)  # zoneout acts


def _parts(state):
    return state if isinstance(state, tuple) else (state,)


TANH_VARIANTS = [("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh")]  # relu's kinks would need a margin


def _plan_pass(plan, model, T, B, grad):
    if plan == "serial":
        return StoredPass(model, T, B, grad)
    if plan == "split":
        return StoredPass(model, T, B, grad, SplitLayers(model, 2, B))
    return RecomputePass(model, T, B, grad, 2, SplitLayers(model, 2, B) if plan == "split-recompute" else SERIAL)


@pytest.mark.parametrize("plan", ["serial", "split", "recompute", "split-recompute"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("variant, option", list(_option_cases(TANH_VARIANTS)),
                         ids=[f"{v[0]}-{o}" for v, o in _option_cases(TANH_VARIANTS)])
def test_masked_gradients_match_central_differences(variant, option, num_layers, plan):
    """float64 central differences of the loss with the masks fixed, through each plan's
    kernels: every parameter and initial-state entry (tests/test_gradcheck.py's criterion)."""
    case = _masked_case(variant, num_layers, option)
    model, x, y, state, resets, masks = (case[key] for key in ("model", "x", "y", "state", "resets", "masks"))
    T, B, _ = x.shape
    grad = np.zeros_like(model.params)
    shard_pass = _plan_pass(plan, model, T, B, grad)

    def loss_of():
        return shard_pass.run(x, y, "mse", state, 0, resets, masks=masks)[0]

    loss_of()
    analytic = {name: view.copy() for name, view in model.layout.views(grad).items()}
    dstate = initial_state_grad(model, shard_pass.workspace)  # recomputing: segment 0's, the last run
    if model.cell == "lstm":
        analytic["h_0"], analytic["c_0"] = dstate
    else:
        analytic["h_0"] = dstate
    assert_matches_central_differences(model, state, loss_of, analytic, min_scale=1e-4)
