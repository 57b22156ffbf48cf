"""Resets (docs/data.md): many series packed end to end in B streams, one mask per step.

A packed run must equal running each series on its own (outputs, final states and every
gradient, float64, to 1e-12) for every cell, 1 and 2 layers; the engine must equal the
NumPy reference with resets and central differences; TBPTT windows, batch shards,
recomputation, streaming and checkpoints must carry the mask; bad masks are refused.
"""
import numpy as np
import pytest

import engine
import naive
from conftest import VARIANTS, make_case_impl
from conftest import assert_close_impl as assert_close
from test_gradcheck import EPS, numerical_gradient
from test_tbptt import assert_updates_match, brute_force, chunk_ends, make_problem, sgd, variant_id

EXACT = 1e-12  # float64 packed against separate: the same arithmetic up to GEMM blocking
REL = 1e-10    # float64 against the NumPy reference and the brute-force TBPTT
FD_REL = 1e-6  # central differences (see tests/test_gradcheck.py)

# Series lengths per stream, packed end to end (T = 13). Stream 1 resets at step 0, so
# the initial state given for it must be ignored; a series of one step is included.
LAYOUT = [[4, 6, 3], [7, 1, 5]]


def packed_resets(layout):
    """(T, B) resets at each series start after the first of stream 0 (which starts from
    the given state); every series of the other streams."""
    T = sum(layout[0])
    resets = np.zeros((T, len(layout)), dtype=bool)
    for b, lengths in enumerate(layout):
        starts = np.cumsum([0] + lengths[:-1])
        resets[starts[1:] if b == 0 else starts, b] = True
    return resets


def series_of(layout):
    """(stream, start, stop) of every packed series."""
    for b, lengths in enumerate(layout):
        bounds = np.cumsum([0] + lengths)
        for start, stop in zip(bounds[:-1], bounds[1:]):
            yield b, int(start), int(stop)


def stream_state(state, b):
    """The state of stream b alone, (L, 1, H) parts."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(part[:, b:b + 1].copy() for part in state)
    return state[:, b:b + 1].copy()


def parts(state):
    return state if isinstance(state, tuple) else (state,)


def make_packed(cell, nonlinearity, num_layers, dtype="float64", loss="mse", seed=0):
    T = sum(LAYOUT[0])
    case = make_case_impl(cell=cell, nonlinearity=nonlinearity, num_layers=num_layers, loss=loss,
                          T=T, B=len(LAYOUT), I=2, H=3, O=2, dtype=dtype, seed=seed)
    return case["model"], case["x"], case["y"], case["state"], packed_resets(LAYOUT)


# --------------------------------------------------------------------------- packed = separate

@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_packed_streams_equal_each_series_run_alone(variant, num_layers, loss):
    model, x, y, state, resets = make_packed(*variant, num_layers, loss=loss)
    y_hat, final = model.forward(x, state, resets)
    value, grads = engine.loss_and_grad(model, x, y, loss, state, resets)

    expected_y_hat = np.full_like(y_hat, np.nan)
    expected = {name: np.zeros_like(grad) for name, grad in grads.items()}
    expected_value = 0.0
    for b, start, stop in series_of(LAYOUT):
        own_state = stream_state(state, b) if start == 0 and not resets[0, b] else None
        piece_x, piece_y = x[start:stop, b:b + 1], y[start:stop, b:b + 1]
        piece_y_hat, piece_final = model.forward(piece_x, own_state)
        expected_y_hat[start:stop, b:b + 1] = piece_y_hat
        if stop == len(x):
            for actual_part, piece_part in zip(parts(final), parts(piece_final)):
                assert_close(actual_part[:, b:b + 1], piece_part, EXACT, f"final state of stream {b}")
        piece_value, piece_grads = engine.loss_and_grad(model, piece_x, piece_y, loss, own_state)
        share = piece_y.size / y.size  # of the mean loss (every target counted)
        expected_value += share * piece_value
        for name, grad in piece_grads.items():
            if name not in ("h_0", "c_0"):
                expected[name] += share * grad
            elif own_state is not None:  # the series that starts from the given state
                expected[name][:, b:b + 1] = share * grad
    assert_close(y_hat, expected_y_hat, EXACT, "y_hat")
    assert_close(value, expected_value, EXACT, "loss")
    for name, grad in grads.items():
        assert_close(grad, expected[name], EXACT, name)
    assert np.all(grads["h_0"][:, 1] == 0), "stream 1 resets at step 0: no gradient reaches h_0"


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_float32_packed_streams_match_separate_runs(variant):
    model, x, y, state, resets = make_packed(*variant, 2, dtype="float32")
    y_hat, _ = model.forward(x, state, resets)
    value, grads = engine.loss_and_grad(model, x, y, "mse", state, resets)
    assert y_hat.dtype == np.float32 and grads["weight_hh_l0"].dtype == np.float32
    model64 = engine.Model(**{**model.config, "dtype": "float64"})
    model64.load_state_dict(model.state_dict())
    y_hat64, _ = model64.forward(x, state, resets)
    value64, grads64 = engine.loss_and_grad(model64, x, y, "mse", state, resets)
    assert_close(y_hat, y_hat64, 1e-4, "y_hat", floor=1.0)
    assert_close(value, value64, 1e-4, "loss", floor=1.0)
    for name in grads:
        assert_close(grads[name], grads64[name], 1e-4, name, floor=1.0)


# --------------------------------------------------------------------------- references

@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_engine_equals_the_naive_reference_with_resets(variant, num_layers):
    cell, nonlinearity = variant
    rng = np.random.default_rng(7)
    case = make_case_impl(cell=cell, nonlinearity=nonlinearity, num_layers=num_layers, T=9, B=4,
                          I=2, H=3, O=2, masked=True, seed=3)
    resets = rng.random((9, 4)) < 0.3
    resets[0, 0], resets[5, 1] = True, True
    model, x, y, state = case["model"], case["x"], case["y"], case["state"]
    value, grads = engine.loss_and_grad(model, x, y, "mse", state, resets)
    expected_value, expected = naive.loss_and_grad(case["params"], x, y, cell, "mse", state,
                                                   nonlinearity, resets)
    assert_close(value, expected_value, REL, "loss")
    for name, grad in expected.items():
        assert_close(grads[name], grad, REL, name)
    y_hat, final = model.forward(x, state, resets)
    expected_y_hat, expected_final = naive.forward(case["params"], x, cell, state, nonlinearity, resets)
    assert_close(y_hat, expected_y_hat, REL, "y_hat")
    for actual_part, expected_part in zip(parts(final), parts(expected_final)):
        assert_close(actual_part, expected_part, REL, "final state")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_central_differences_with_resets(cell):
    case = make_case_impl(cell=cell, num_layers=2, T=7, B=3, I=2, H=3, O=2, masked=True, seed=5)
    model, x, y, state = case["model"], case["x"], case["y"], case["state"]
    resets = np.zeros((7, 3), dtype=bool)
    resets[[0, 3], 0] = True
    resets[2, 1] = resets[6, 1] = True
    _, grads = engine.loss_and_grad(model, x, y, "mse", state, resets)

    def loss_of():
        return engine.loss_and_grad(model, x, y, "mse", state, resets)[0]

    for name, view in model.views.items():
        assert_close(grads[name], numerical_gradient(loss_of, view), FD_REL, name)
    for part, name in zip(parts(state), ("h_0", "c_0")):
        numerical = numerical_gradient(loss_of, part)
        assert_close(grads[name], numerical, FD_REL, name)
        assert np.abs(numerical[:, 0]).max() < 10 * EPS, f"{name}: stream 0 resets at step 0"


def test_a_reset_cuts_the_backward_window_there():
    """Targets only after step c; a reset at r < c: the gradient is that of the window
    starting at r from zeros, whatever came before."""
    case = make_case_impl(cell="lstm", num_layers=2, T=10, B=1, I=2, H=3, O=2, seed=2)
    model, x, y, state = case["model"], case["x"], case["y"], case["state"]
    y = y.copy()
    y[:6] = np.nan
    resets = np.zeros((10, 1), dtype=bool)
    resets[4] = True
    _, cut = engine.loss_and_grad(model, x, y, "mse", state, resets)
    _, alone = engine.loss_and_grad(model, x[4:], y[4:], "mse")
    for name in model.views:
        assert_close(cut[name], alone[name], EXACT, name)
    assert np.all(cut["h_0"] == 0) and np.all(cut["c_0"] == 0)


# --------------------------------------------------------------------------- the Trainer

@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize("k1,k2", [(3, None), (3, 5), (2, 7), (None, None)])
def test_tbptt_windows_with_resets_equal_the_brute_force_objective(variant, k1, k2):
    """Resets inside the new steps and inside the k2 - k1 steps a window reaches back."""
    model, x, y = make_problem(*variant, 2, "mse", T=13, B=3)
    resets = np.zeros((13, 3), dtype=bool)
    resets[[1, 5, 8], 0] = True
    resets[[4, 11], 1] = True
    resets[0, 2] = True
    expected = brute_force(model, x, y, "mse", chunk_ends(13, k1), (k2 or k1 or 0) - (k1 or 0),
                           sgd(), resets=resets)
    trainer = engine.Trainer(model, optimizer=sgd(), k1=k1, k2=k2, clip_norm=None)
    trainer.fit(x, y, resets=resets)
    assert_updates_match(trainer.history.updates, None, expected["updates"])
    assert_close(model.params, expected["params"], REL, "final parameters")
    for actual_part, expected_part in zip(parts(trainer.state), parts(expected["state"])):
        assert_close(actual_part, expected_part, REL, "carried state")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_shards_and_recomputation_equal_the_stored_unsharded_run(cell):
    case = make_case_impl(cell=cell, num_layers=2, T=24, B=5, I=2, H=4, O=1, seed=4,
                          random_state=False)
    rng = np.random.default_rng(1)
    resets = rng.random((24, 5)) < 0.15
    runs = {}
    for shards, memory in [(1, None), (2, None), (1, "sqrt"), (2, "sqrt")]:
        model = engine.Model(**case["model"].config)
        trainer = engine.Trainer(model, optimizer=sgd(), k1=8, k2=12, shards=shards, memory=memory,
                                 clip_norm=None)
        trainer.fit(case["x"], case["y"], epochs=2, resets=resets)
        runs[shards, memory] = model.params.copy(), trainer.state
    reference, reference_state = runs[1, None]
    for key, (params, state) in runs.items():
        assert_close(params, reference, REL, f"parameters with shards, memory = {key}")
        for actual_part, expected_part in zip(parts(state), parts(reference_state)):
            assert_close(actual_part, expected_part, REL, f"state with shards, memory = {key}")


def test_partial_fit_reset_is_the_shorthand_for_resets_row_zero():
    model, x, y = make_problem("gru", "tanh", 2, "mse", T=12, B=3)
    runs = []
    for use_shorthand in (True, False):
        copy = engine.Model(**model.config)
        trainer = engine.Trainer(copy, optimizer=sgd(), k1=3, k2=5, clip_norm=None)
        trainer.partial_fit(x[:6], y[:6])
        mask = np.array([True, False, True])
        if use_shorthand:
            trainer.partial_fit(x[6:], y[6:], reset=mask)
        else:
            resets = np.zeros((6, 3), dtype=bool)
            resets[0] = mask
            trainer.partial_fit(x[6:], y[6:], resets=resets)
        runs.append(copy.params.copy())
    assert np.array_equal(runs[0], runs[1])


@pytest.mark.parametrize("k1,k2", [(3, None), (3, 7)])
def test_partial_fit_pieces_with_resets_equal_fit_over_the_whole(k1, k2):
    """Pieces of 6 steps with resets inside them and in the carried k2 - k1 inputs: the
    same updates, bit for bit, as fit over the whole sequence."""
    model, x, y = make_problem("lstm", "tanh", 2, "mse", T=18, B=3)
    resets = np.zeros((18, 3), dtype=bool)
    resets[[4, 6, 13], 0] = True
    resets[[5, 11, 12], 1] = True
    whole = engine.Model(**model.config)
    fit_trainer = engine.Trainer(whole, optimizer="adam", lr=0.05, k1=k1, k2=k2, clip_norm=None)
    fit_trainer.fit(x, y, resets=resets)
    trainer = engine.Trainer(model, optimizer="adam", lr=0.05, k1=k1, k2=k2, clip_norm=None)
    for start in range(0, 18, 6):
        trainer.partial_fit(x[start:start + 6], y[start:start + 6], resets=resets[start:start + 6])
    assert np.array_equal(model.params, whole.params)
    assert trainer.history.updates == fit_trainer.history.updates


def test_carried_resets_survive_a_checkpoint(tmp_path):
    model, x, y = make_problem("rnn", "tanh", 1, "mse", T=12, B=2)
    resets = np.zeros((12, 2), dtype=bool)
    resets[5, 0] = True  # inside the inputs the first piece carries over (k2 - k1 = 4)
    runs = []
    for resume in (False, True):
        copy = engine.Model(**model.config)
        trainer = engine.Trainer(copy, optimizer=sgd(), k1=3, k2=7, clip_norm=None)
        trainer.partial_fit(x[:6], y[:6], resets=resets[:6])
        if resume:
            engine.save(tmp_path / "mid.npz", copy, trainer)
            copy, trainer = engine.load(tmp_path / "mid.npz")
        trainer.partial_fit(x[6:], y[6:])
        runs.append(copy.params.copy())
    assert np.array_equal(runs[0], runs[1])


def test_evaluate_with_resets_is_the_mean_over_separate_series():
    model, x, y, _, resets = make_packed("gru", "tanh", 1)
    trainer = engine.Trainer(model, k1=4)
    total = sum(trainer.evaluate(x[a:e, b:b + 1], y[a:e, b:b + 1]) * (e - a)
                for b, a, e in series_of([[4, 6, 3], [7, 1, 5]]))
    resets[0] = True  # evaluate starts from zeros anyway
    assert_close(trainer.evaluate(x, y, resets=resets), total / (2 * 13), EXACT, "loss")


def test_resets_none_and_all_false_are_the_same_run():
    model, x, y, state, _ = make_packed("lstm", "tanh", 2)
    no_resets = engine.loss_and_grad(model, x, y, "mse", state)
    all_false = engine.loss_and_grad(model, x, y, "mse", state, np.zeros((13, 2), dtype=int))
    assert no_resets[0] == all_false[0]
    for name in no_resets[1]:
        assert np.array_equal(no_resets[1][name], all_false[1][name])


# --------------------------------------------------------------------------- bad masks

BAD_MASKS = [
    (np.zeros((13, 3), dtype=bool), ValueError, r"resets must have shape \(13, 2\)"),
    (np.zeros(13, dtype=bool), ValueError, r"resets must have shape \(13, 2\)"),
    (np.zeros((13, 2)), TypeError, "resets must hold booleans"),
    (np.full((13, 2), 2), ValueError, "resets must hold only 0 and 1"),
    ([[True, False], [True]], TypeError, "resets must be a"),
    ("yes", TypeError, "resets must hold booleans"),
]


@pytest.mark.parametrize("mask, error, message", BAD_MASKS, ids=range(len(BAD_MASKS)))
def test_bad_masks_are_refused_everywhere_before_anything_changes(mask, error, message):
    model, x, y, state, _ = make_packed("lstm", "tanh", 1)
    trainer = engine.Trainer(model, optimizer=sgd(), k1=4)
    before = model.params.copy()
    calls = [lambda: model.forward(x, state, mask),
             lambda: engine.loss_and_grad(model, x, y, "mse", state, mask),
             lambda: trainer.fit(x, y, resets=mask),
             lambda: trainer.partial_fit(x, y, resets=mask),
             lambda: trainer.evaluate(x, y, resets=mask)]
    for call in calls:
        with pytest.raises(error, match=message):
            call()
    assert np.array_equal(model.params, before) and trainer.step == 0


def test_partial_fit_refuses_reset_and_resets_together():
    model, x, y, _, resets = make_packed("rnn", "tanh", 1)
    trainer = engine.Trainer(model, k1=4)
    with pytest.raises(ValueError, match="reset .* or resets, not both"):
        trainer.partial_fit(x, y, reset=[True, False], resets=resets)
