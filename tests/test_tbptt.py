"""Every Trainer update against a brute-force construction of truncated BPTT(k1, k2).

The reference (docs/training.md, TBPTT(k1, k2)) never touches the Trainer: for each chunk [c, e) of
new steps it takes the window [max(0, c - (k2 - k1)), e), the state at the window's start
carried forward by Model.forward, and engine.loss_and_grad over the window with the
targets before c masked out (NaN / -1), so the loss is the mean over the chunk's targets
only and the gradient stops at the window's start. The optimizer then steps on that
gradient. Parameters after every update, losses, gradient norms, the carried state and
the per-step dL/dh_t norms (diagnostics) must agree, float64, for every cell, one and two
layers, both losses, k1 = k2, k2 > k1 (also k2 - k1 > k1), full BPTT, a final partial
chunk, several epochs and streaming partial_fit with per-stream resets.
"""
import numpy as np
import pytest

import engine
import naive
from conftest import VARIANTS, make_case_impl
from conftest import assert_close_impl as assert_close

REL = 1e-10  # float64 on both sides, relative to each tensor's largest entry

# name: (k1, k2). With T = 13: a final partial chunk in every truncated mode.
MODES = {"chunked": (4, None), "k2>k1": (3, 5), "k2>2k1": (2, 7), "full": (None, None)}


# --------------------------------------------------------------------------- reference

def flat_gradient(model, grads):
    """The gradients of loss_and_grad in the model's flat layout (P,)."""
    return np.concatenate([grads[name].ravel() for name in model.layout.shapes])


def mask_first(y, steps, loss):
    """A copy of y whose first `steps` steps hold no target (NaN, or -1 for classes)."""
    y = np.array(y, dtype=np.float64 if loss == "mse" else np.int64)
    y[:steps] = np.nan if loss == "mse" else -1
    return y


def has_targets(y, loss):
    return bool(np.isfinite(y).any() if loss == "mse" else (y >= 0).any())


def copy_state(state):
    if state is None:
        return None
    return tuple(part.copy() for part in state) if isinstance(state, tuple) else state.copy()


def chunk_ends(T, k1):
    """Ends of the chunks of one pass over T steps: k1, 2 k1, ..., T (None: one chunk)."""
    if k1 is None:
        return [T]
    return list(range(k1, T, k1)) + [T]


def brute_force(model, x, y, loss, ends, overhang, optimizer, state=None, schedule=None,
                step=0, optimizer_state=None, resets=None):
    """Truncated BPTT by brute force on a copy of `model` over one sequence x (T, B, I).

    ends: the end of each chunk (increasing, the last = T); each chunk [c, e) starts at
    the previous end. overhang: k2 - k1, the steps before c the window reaches back.
    resets: optional (T, B), passed on with each window (to loss_and_grad, Model.forward).
    Returns a dict:
      updates: per update {"loss", "grad_norm", "lr", "params" (after the update),
               "window" (start, end), "chunk_start", "params_before", "state" (at the
               window's start)};
      params, model: the final parameters and the model holding them;
      state: the state after the last step, computed with the last update's
             parameters before its step, as the trainer carries it;
      optimizer_state."""
    reference = engine.Model(**model.config)
    reference.load_state_dict(model.state_dict())
    schedule = schedule or engine.schedules.make_schedule("constant")
    if optimizer_state is None:
        optimizer_state = optimizer.init(reference.params)
    window_start, window_state = 0, state  # the window's first step and the state there
    updates = []
    chunk_start = 0
    for end in ends:
        start = window_start
        assert start == max(0, chunk_start - overhang)
        targets = mask_first(y[start:end], chunk_start - start, loss)
        if has_targets(targets, loss):
            value, grads = engine.loss_and_grad(reference, x[start:end], targets, loss,
                                                copy_state(window_state), window(resets, start, end))
            gradient = flat_gradient(reference, grads)
            before = dict(params_before=reference.params.copy(), state=copy_state(window_state))
        # Carry the state with the parameters of this update, before its step.
        _, final_state = reference.forward(x[start:end], window_state, window(resets, start, end))
        window_start = max(start, end - overhang)
        if window_start > start:
            _, window_state = reference.forward(x[start:window_start], window_state,
                                                window(resets, start, window_start))
        if has_targets(targets, loss):
            lr = schedule(step, optimizer.lr)
            optimizer.step(reference.params, gradient, optimizer_state, lr)
            step += 1
            updates.append({"loss": value, "grad_norm": float(np.linalg.norm(gradient)),
                            "lr": lr, "params": reference.params.copy(), "window": (start, end),
                            "chunk_start": chunk_start, **before})
        chunk_start = end
    return dict(updates=updates, params=reference.params.copy(), state=final_state,
                optimizer_state=optimizer_state, model=reference)


def window(resets, start, end):
    return None if resets is None else resets[start:end]


def epochs_brute_force(model, x, y, loss, k1, k2, optimizer, epochs):
    """brute_force over `epochs` passes of fit: zero state at each epoch's start."""
    overhang = 0 if k1 is None else (k2 or k1) - k1
    updates, optimizer_state, current = [], None, model
    for _ in range(epochs):
        result = brute_force(current, x, y, loss, chunk_ends(len(x), k1), overhang, optimizer,
                             step=len(updates), optimizer_state=optimizer_state)
        updates += result["updates"]
        optimizer_state, current = result["optimizer_state"], result["model"]
    return updates, current.params


# --------------------------------------------------------------------------- helpers

def make_problem(cell, nonlinearity, num_layers, loss, T=13, B=2, seed=0, masked=True):
    case = make_case_impl(cell=cell, nonlinearity=nonlinearity, num_layers=num_layers,
                          loss=loss, masked=masked, T=T, B=B, I=2, H=3, O=2, dtype="float64",
                          seed=seed, random_state=False)
    return case["model"], case["x"], case["y"]


def assert_states_close(actual, expected, rel=REL):
    actual = actual if isinstance(actual, tuple) else (actual,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert_close(a, e, rel, "state")


def assert_updates_match(records, params_after, expected, rel=REL):
    """Trainer history records (and parameters after each update, if captured) against
    the brute-force updates."""
    assert len(records) == len(expected), f"{len(records)} updates, expected {len(expected)}"
    for index, (record, reference) in enumerate(zip(records, expected)):
        what = f"update {index + 1} (window {reference['window']})"
        assert_close(record["loss"], reference["loss"], rel, f"{what} loss")
        assert_close(record["grad_norm"], reference["grad_norm"], rel, f"{what} grad_norm")
        assert record["lr"] == reference["lr"], what
        if params_after is not None:
            assert_close(params_after[index], reference["params"], rel, f"{what} parameters")


def sgd():
    return engine.optim.SGD(lr=0.5)


def variant_id(variant):
    return f"{variant[0]}-{variant[1]}" if variant[0] == "rnn" else variant[0]


# --------------------------------------------------------------------------- fit

PLANS = {"1shard": dict(shards=1), "2shards": dict(shards=2), "split3": dict(split=3)}


@pytest.mark.parametrize("plan", list(PLANS))
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_fit_updates_equal_brute_force(variant, num_layers, loss, mode, plan):
    """Two epochs of fit over 13 steps of 3 streams (missing targets included), the
    streams in one shard, two uneven ones, or one shard whose 3 hidden units are split
    among threads: every update's loss, gradient norm and resulting parameters equal the
    brute force."""
    k1, k2 = MODES[mode]
    model, x, y = make_problem(*variant, num_layers, loss, B=3)
    expected, expected_params = epochs_brute_force(model, x, y, loss, k1, k2, sgd(), epochs=2)
    trainer = engine.Trainer(model, loss=loss, optimizer=sgd(), k1=k1, k2=k2, clip_norm=None,
                             **PLANS[plan])
    params_after = []
    history = trainer.fit(x, y, epochs=2, on_update=lambda record: params_after.append(model.params.copy()))
    per_epoch = len(chunk_ends(len(x), k1))
    assert len(expected) == 2 * per_epoch  # (the missing targets leave every chunk some)
    assert_updates_match(history.updates, params_after, expected)
    assert_close(model.params, expected_params, REL, "final parameters")
    assert [record["step"] for record in history.updates] == list(range(1, len(expected) + 1))
    assert trainer.step == len(expected) and trainer.epoch == 2


@pytest.mark.parametrize("mode", ["k2>2k1", "full"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_fit_with_recomputation_equals_brute_force(variant, mode):
    """memory="sqrt" (activations recomputed by segments) makes the same updates."""
    k1, k2 = MODES[mode]
    model, x, y = make_problem(*variant, 2, "mse", B=3)
    expected, expected_params = epochs_brute_force(model, x, y, "mse", k1, k2, sgd(), epochs=1)
    trainer = engine.Trainer(model, optimizer=sgd(), k1=k1, k2=k2, clip_norm=None, memory="sqrt")
    trainer.fit(x, y)
    assert_updates_match(trainer.history.updates, None, expected)
    assert_close(model.params, expected_params, REL, "final parameters")


def test_windows_reach_back_k2_steps():
    """The brute force really truncates: with k2 > k1 the update differs from k1 = k2 and
    from full BPTT, so the tests above could tell the modes apart."""
    model, x, y = make_problem("lstm", "tanh", 1, "mse", masked=False)
    finals = []
    for k1, k2 in [(3, None), (3, 5), (None, None)]:
        copy = engine.Model(**model.config)
        trainer = engine.Trainer(copy, optimizer=sgd(), k1=k1, k2=k2, clip_norm=None)
        trainer.fit(x, y)
        finals.append(copy.params.copy())
    assert not np.allclose(finals[0], finals[1], rtol=1e-6, atol=0)
    assert not np.allclose(finals[1], finals[2], rtol=1e-6, atol=0)


def test_chunks_without_targets_make_no_update():
    """Many-to-one: only the last step has targets; the earlier chunks only carry the
    state, and the one update backpropagates k2 steps into them."""
    model, x, y = make_problem("gru", "tanh", 2, "mse", masked=False)
    y[:-1] = np.nan
    expected = brute_force(model, x, y, "mse", chunk_ends(13, 3), 2, sgd())
    trainer = engine.Trainer(model, optimizer=sgd(), k1=3, k2=5, clip_norm=None)
    stats = trainer.partial_fit(x, y)
    assert stats["updates"] == 1 and len(expected["updates"]) == 1
    assert expected["updates"][0]["window"] == (10, 13)
    assert_updates_match(trainer.history.updates, [model.params], expected["updates"])


# --------------------------------------------------------------------------- streaming

STREAM_MODES = {"chunked": (3, None, [6, 3, 9]), "k2>k1": (3, 5, [6, 3, 9]),
                "k2>2k1": (2, 7, [2, 4, 2, 6, 4])}


@pytest.mark.parametrize("mode", list(STREAM_MODES))
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_partial_fit_pieces_equal_one_fit(variant, mode):
    """Streaming in pieces whose lengths are multiples of k1 makes exactly the updates of
    one fit epoch over the concatenation: the state and, for k2 > k1, the last k2 - k1
    inputs (even from more than one earlier piece) are carried between calls."""
    k1, k2, pieces = STREAM_MODES[mode]
    T = sum(pieces)
    model, x, y = make_problem(*variant, 2, "mse", T=T, B=3)
    whole = engine.Model(**model.config)
    fit_trainer = engine.Trainer(whole, optimizer="adam", lr=0.05, k1=k1, k2=k2, clip_norm=None)
    fit_trainer.fit(x, y)

    trainer = engine.Trainer(model, optimizer="adam", lr=0.05, k1=k1, k2=k2, clip_norm=None)
    bounds = np.cumsum([0] + pieces)
    for a, b in zip(bounds[:-1], bounds[1:]):
        stats = trainer.partial_fit(x[a:b], y[a:b])
        assert stats["steps"] == b - a and stats["updates"] == (b - a) // k1
    assert np.array_equal(model.params, whole.params)
    assert trainer.history.updates == fit_trainer.history.updates
    for key in fit_trainer.optimizer_state:
        assert np.array_equal(trainer.optimizer_state[key], fit_trainer.optimizer_state[key])
    assert_states_close(trainer.state, fit_trainer.state, rel=0)


@pytest.mark.parametrize("k1,k2", [(3, None), (3, 5), (2, 7)])
def test_partial_fit_pieces_with_partial_chunks(k1, k2):
    """A piece that is not a multiple of k1 ends with an update on its last, shorter
    chunk; the next piece's chunks start there and still reach k2 - k1 steps back."""
    pieces = [4, 5, 1, 7]
    model, x, y = make_problem("lstm", "tanh", 2, "cross_entropy", T=sum(pieces))
    bounds = np.cumsum([0] + pieces)
    ends = [int(a) + end for a, b in zip(bounds[:-1], bounds[1:]) for end in chunk_ends(int(b - a), k1)]
    expected = brute_force(model, x, y, "cross_entropy", ends, (k2 or k1) - k1, sgd())
    trainer = engine.Trainer(model, loss="cross_entropy", optimizer=sgd(), k1=k1, k2=k2,
                             clip_norm=None)
    for a, b in zip(bounds[:-1], bounds[1:]):
        trainer.partial_fit(x[a:b], y[a:b])
    assert_updates_match(trainer.history.updates, None, expected["updates"])
    assert_close(model.params, expected["params"], REL, "final parameters")
    assert_states_close(trainer.state, expected["state"])


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize("k1,k2", [(3, None), (3, 5)])
def test_reset_mask_restarts_chosen_streams(variant, k1, k2):
    """reset=[True, False, True]: streams 0 and 2 start the second piece from zeros,
    stream 1 carries its state on. Exact: the piece's first window still reaches back
    into the carried inputs, and for streams 0 and 2 the reset cuts it (no gradient crosses a reset),
    as training over the whole sequence with resets[6] = reset does."""
    model, x, y = make_problem(*variant, 2, "mse", T=15, B=3)
    overhang = (k2 or k1) - k1
    reset = np.array([True, False, True])
    resets = np.zeros((15, 3), dtype=bool)
    resets[6] = reset
    ends = chunk_ends(6, k1) + [6 + end for end in chunk_ends(9, k1)]
    expected = brute_force(model, x, y, "mse", ends, overhang, sgd(), resets=resets)
    trainer = engine.Trainer(model, optimizer=sgd(), k1=k1, k2=k2, clip_norm=None)
    trainer.partial_fit(x[:6], y[:6])
    trainer.partial_fit(x[6:], y[6:], reset=reset)
    assert_updates_match(trainer.history.updates, None, expected["updates"])
    assert_close(model.params, expected["params"], REL, "final parameters")
    assert_states_close(trainer.state, expected["state"])


def test_reset_mask_all_false_changes_nothing_and_all_true_is_reset_state():
    model, x, y = make_problem("lstm", "tanh", 1, "mse", T=12, B=2)
    runs = {}
    for name in ("none", "all-false", "all-true", "reset_state"):
        copy = engine.Model(**model.config)
        trainer = engine.Trainer(copy, optimizer=sgd(), k1=3, k2=5, clip_norm=None)
        trainer.partial_fit(x[:6], y[:6])
        if name == "reset_state":
            trainer.reset_state()
        reset = {"all-false": [False, False], "all-true": np.array([1, 1])}.get(name)
        trainer.partial_fit(x[6:], y[6:], reset=reset)
        runs[name] = copy.params.copy()
    assert np.array_equal(runs["none"], runs["all-false"])
    assert np.array_equal(runs["all-true"], runs["reset_state"])
    assert not np.array_equal(runs["none"], runs["all-true"])


def test_reset_state_starts_over_from_zeros():
    model, x, y = make_problem("gru", "tanh", 2, "mse", T=12, B=2)
    first = brute_force(model, x[:6], y[:6], "mse", chunk_ends(6, 3), 2, sgd())
    second = brute_force(first["model"], x[6:], y[6:], "mse", chunk_ends(6, 3), 2, sgd(),
                         step=len(first["updates"]))
    trainer = engine.Trainer(model, optimizer=sgd(), k1=3, k2=5, clip_norm=None)
    trainer.partial_fit(x[:6], y[:6])
    trainer.reset_state()
    trainer.partial_fit(x[6:], y[6:])
    assert_updates_match(trainer.history.updates, None, first["updates"] + second["updates"])
    assert_close(model.params, second["params"], REL, "final parameters")


@pytest.mark.parametrize("reset", [[True], [True, False, True], np.array([0.5, 1.0]), "yes"])
def test_reset_mask_is_validated(reset):
    model, x, y = make_problem("rnn", "tanh", 1, "mse", T=6, B=2)
    trainer = engine.Trainer(model, k1=3)
    before = model.params.copy()
    with pytest.raises(ValueError, match="reset must be 2 booleans"):
        trainer.partial_fit(x, y, reset=reset)
    assert np.array_equal(model.params, before)


# --------------------------------------------------------------------------- diagnostics

def brute_force_dh_norms(model, x, y, loss, state):
    """Norm over the batch of the total dL/dh_t per layer and step (L, T), by the plain
    NumPy reference's backward (tests/naive.py), for the mean loss over y's targets."""
    params = model.state_dict()
    cell, relu = model.cell, model.nonlinearity == "relu"
    y_hat, _, caches, _ = naive.run(params, x, cell, state, model.nonlinearity)
    _, dy = naive.loss_value_and_dy(loss, y_hat, y)
    T, B, _ = x.shape
    L, H = model.num_layers, model.hidden_size
    norms = np.zeros((L, T))
    dh_next = [np.zeros((B, H)) for _ in range(L)]
    dc_next = [np.zeros((B, H)) for _ in range(L)]
    for t in range(T - 1, -1, -1):
        dh_from_above = dy[t] @ params["head.weight"]
        for k in range(L - 1, -1, -1):
            W_ih, W_hh, _, _ = naive.layer_params(params, k)
            dh = dh_from_above + dh_next[k]  # the total dL/dh_t of layer k
            norms[k, t] = np.linalg.norm(dh)
            if cell == "lstm":
                step = naive.lstm_step_backward(dh, dc_next[k], caches[t][k], W_ih, W_hh)
                dc_next[k] = step["dc"]
            elif cell == "gru":
                step = naive.gru_step_backward(dh, caches[t][k], W_ih, W_hh)
            else:
                step = naive.rnn_step_backward(dh, caches[t][k], W_ih, W_hh, relu)
            dh_next[k], dh_from_above = step["dh"], step["dx"]
    return norms


@pytest.mark.parametrize("plan,memory", [("1shard", None), ("1shard", "sqrt"), ("2shards", None),
                                         ("split3", None), ("split3", "sqrt")],
                         ids=["1shard", "1shard-recompute", "2shards", "split3", "split3-recompute"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_diagnostics_record_dh_norm_per_step_and_layer(variant, num_layers, plan, memory):
    """diagnostics=True: each update's "dh_norms" (L, window) holds the norm of the total
    dL/dh_t over all streams for every step of its window (the k2 - k1 steps before the
    chunk included) and every layer, as a NumPy backward over the same window computes it."""
    k1, k2 = 3, 5
    model, x, y = make_problem(*variant, num_layers, "mse", masked=False, B=3)
    expected = brute_force(model, x, y, "mse", chunk_ends(13, k1), k2 - k1, sgd())
    replay = engine.Model(**model.config)
    trainer = engine.Trainer(model, optimizer=sgd(), k1=k1, k2=k2, clip_norm=None,
                             diagnostics=True, memory=memory, **PLANS[plan])
    trainer.fit(x, y)
    records = trainer.history.updates
    assert len(records) == len(expected["updates"]) == 5
    for record, reference in zip(records, expected["updates"]):
        (start, end), chunk_start = reference["window"], reference["chunk_start"]
        replay.params[...] = reference["params_before"]
        targets = mask_first(y[start:end], chunk_start - start, "mse")
        norms = brute_force_dh_norms(replay, x[start:end], targets, "mse", reference["state"])
        assert record["dh_norms"].shape == (num_layers, end - start)
        assert_close(record["dh_norms"], norms, REL, f"dh_norms of window {(start, end)}")
    # The steps before the chunk get gradient only through the recurrence: non-zero
    # (a ReLU unit may be dead, so the ReLU RNN is left out of this check).
    if variant != ("rnn", "relu"):
        assert np.all(records[-2]["dh_norms"][:, :k2 - k1] > 0)


def test_no_diagnostics_by_default():
    model, x, y = make_problem("lstm", "tanh", 1, "mse")
    trainer = engine.Trainer(model, k1=4)
    trainer.fit(x, y)
    assert all("dh_norms" not in record for record in trainer.history.updates)
