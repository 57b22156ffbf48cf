"""Shared fixtures: the cell variants, random test cases and a tensor-relative comparison."""
import shutil

import numpy as np
import pytest

import engine

# (cell, nonlinearity): every recurrence the engine implements.
VARIANTS = [("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh"), ("rnn", "relu")]
LOSSES = ["mse", "cross_entropy"]


def relative_error(actual, expected, floor=0.0):
    """max |actual - expected| over the tensor, relative to the tensor's largest entry
    (of either side), or to `floor` when that is larger. Per-entry relative errors are
    meaningless where an entry is ~0 by cancellation; scaling by the whole tensor is what
    a gradient check can promise."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    scale = max(np.abs(actual).max(initial=0.0), np.abs(expected).max(initial=0.0), floor, 1e-300)
    return np.abs(actual - expected).max(initial=0.0) / scale


def assert_close_impl(actual, expected, rel, what="", floor=0.0):
    error = relative_error(actual, expected, floor)
    assert error <= rel, f"{what}: relative error {error:.3g} > {rel:g}"


def assert_equals_stacked_torch(loss, grads, torch_loss, layers, head, parts, rel=1e-10):
    """Our loss and gradients against torch's after torch_loss.backward() through `layers`
    (single-layer torch modules stacked, layer k's parameters named *_l0), `head` (a Linear)
    and the initial state's tensors `parts` (h_0, and c_0 for the LSTM)."""
    assert abs(loss - torch_loss.item()) <= 1e-12 * abs(torch_loss.item())
    for k, layer in enumerate(layers):
        for name, parameter in layer.named_parameters():
            assert_close_impl(grads[name.replace("_l0", f"_l{k}")], parameter.grad.numpy(), rel, f"{name} of layer {k}")
    assert_close_impl(grads["head.weight"], head.weight.grad.numpy(), rel, "head.weight")
    for name, part in zip(("h_0", "c_0"), parts):
        assert_close_impl(grads[name], part.grad.numpy(), rel, name)


def make_case_impl(cell="lstm", nonlinearity="tanh", num_layers=1, loss="mse", masked=False,
                   T=4, B=2, I=2, H=3, O=2, dtype="float64", seed=0, random_state=True, bidirectional=False,
                   skip=False):
    """A model with seeded parameters plus random x (T, B, I), targets y and initial state
    (num_layers rows, twice as many for a bidirectional model).

    masked: about a third of the targets missing (NaN for mse, -1 for cross_entropy),
    never all of them. skip: the model has the linear path, its weight drawn at random
    (not the zeros it starts from, so that the path counts). Returns a dict: model, x, y,
    state, params (the state_dict)."""
    rng = np.random.default_rng(seed + 1000)
    model = engine.Model(cell=cell, input_size=I, hidden_size=H, output_size=O,
                         num_layers=num_layers, nonlinearity=nonlinearity, dtype=dtype, seed=seed,
                         bidirectional=bidirectional, skip=skip)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    if loss == "mse":
        y = rng.standard_normal((T, B, O)).astype(dtype)
        if masked:
            y[rng.random(y.shape) < 0.35] = np.nan
            y[T - 1, 0, 0] = 0.5  # at least one target counted
    else:
        y = rng.integers(0, O, size=(T, B))
        if masked:
            y[rng.random(y.shape) < 0.35] = -1
            y[T - 1, 0] = 0
    state = None
    if random_state:
        rows = num_layers * model.directions
        h = (0.5 * rng.standard_normal((rows, B, H))).astype(dtype)
        if cell == "lstm":
            state = (h, (0.5 * rng.standard_normal((rows, B, H))).astype(dtype))
        else:
            state = h
    if skip:  # drawn last: the other draws are those of the same case without the path
        model.views["skip.weight"][...] = 0.5 * rng.standard_normal((O, I))
    return dict(model=model, x=x, y=y, state=state, params=model.state_dict(),
                cell=cell, nonlinearity=nonlinearity, loss=loss)


@pytest.fixture(params=VARIANTS, ids=lambda v: f"{v[0]}-{v[1]}" if v[0] == "rnn" else v[0])
def variant(request):
    """(cell, nonlinearity)."""
    return request.param


@pytest.fixture(params=[1, 2], ids=lambda n: f"L{n}")
def num_layers(request):
    return request.param


@pytest.fixture(params=LOSSES)
def loss_name(request):
    return request.param


@pytest.fixture(scope="session")
def assert_close():
    """assert_close(actual, expected, rel, what): tensor-relative error <= rel."""
    return assert_close_impl


@pytest.fixture(scope="session")
def make_case():
    """make_case(cell, nonlinearity, num_layers, loss, masked, T, B, I, H, O, dtype, seed, random_state,
    bidirectional)."""
    return make_case_impl


@pytest.fixture
def workdir(originals, tmp_path, monkeypatch):
    """A fresh copy of the test module's `originals` folder (its fixture) as the current
    directory, for the bad-input tables that check nothing in it changes."""
    shutil.copytree(originals, tmp_path, dirs_exist_ok=True, copy_function=shutil.copy2)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def trained_on_openblas(reference, directory):
    """{key: flat parameters} of every configuration of `reference` (a tests/make_*_reference
    module: configurations(), trained()), trained in a fresh process on SciPy's OpenBLAS:
    the recorded files hold OpenBLAS's bits, and a process binds one BLAS backend."""
    import os
    import subprocess
    import sys

    output = directory / f"{reference.__name__}.npz"
    tests = os.path.dirname(os.path.abspath(reference.__file__))
    script = (f"import sys; sys.path.insert(0, {tests!r}); import numpy as np; import {reference.__name__} as r; "
              f"np.savez({str(output)!r}, **{{key: r.trained(m, t) for key, m, t in r.configurations()}})")
    environment = {**os.environ, "BPTT_BLAS": "openblas", "PYTHONPATH": os.path.dirname(tests)}
    subprocess.run([sys.executable, "-c", script], env=environment, check=True, timeout=1800)
    with np.load(output) as archive:
        return dict(archive)


# The regularisation tests' rates: each option alone and all together.
RATE = 0.4
OPTIONS = {"dropout": dict(dropout=RATE), "recurrent": dict(recurrent_dropout=RATE), "zoneout": dict(zoneout=RATE),
           "all": dict(dropout=RATE, recurrent_dropout=RATE, zoneout=RATE)}


def option_cases(variants):
    """(variant, option name) pairs: zoneout does not apply to the RNN ("all" without it)."""
    for variant in variants:
        for name in OPTIONS:
            if variant[0] != "rnn" or name != "zoneout":
                yield variant, name


def option_rates(variant, option):
    """The Model rates of OPTIONS[option] for variant (cell, ...): the RNN without zoneout."""
    rates = dict(OPTIONS[option])
    if variant[0] == "rnn":
        rates.pop("zoneout", None)
    return rates
