"""engine.Model: PyTorch-compatible state dicts, initialisers, state, chunked inference."""
import numpy as np
import pytest

import engine
import engine.model

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def make_model(cell="lstm", **options):
    settings = dict(cell=cell, input_size=3, hidden_size=5, output_size=2, num_layers=3,
                    dtype="float64")
    settings.update(options)
    return engine.Model(**settings)


# --- state_dict: names, shapes, order ---

@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_state_dict_names_and_shapes_follow_pytorch(cell):
    model = make_model(cell, input_size=3, hidden_size=5, output_size=2, num_layers=3)
    rows = GATES[cell] * 5
    expected = []
    for k, inputs in enumerate([3, 5, 5]):
        expected += [(f"weight_ih_l{k}", (rows, inputs)), (f"weight_hh_l{k}", (rows, 5)),
                     (f"bias_ih_l{k}", (rows,)), (f"bias_hh_l{k}", (rows,))]
    expected += [("head.weight", (2, 5)), ("head.bias", (2,))]
    state_dict = model.state_dict()
    assert [(name, value.shape) for name, value in state_dict.items()] == expected
    assert all(value.dtype == np.float64 for value in state_dict.values())
    assert model.num_parameters == sum(int(np.prod(shape)) for _, shape in expected)


def test_state_dict_returns_copies():
    model = make_model()
    state_dict = model.state_dict()
    state_dict["weight_hh_l0"][...] = 7.0
    assert not np.any(model.state_dict()["weight_hh_l0"] == 7.0)


def test_lstm_gate_order_is_i_f_g_o():
    # Zero weights, one unit: the step is a function of the four biases alone, each
    # split over bias_ih and bias_hh; distinct values tell any permutation apart.
    model = engine.Model(cell="lstm", input_size=1, hidden_size=1, output_size=1, dtype="float64")
    b_i, b_f, b_g, b_o = 0.3, -1.2, 0.7, 2.0
    state_dict = {name: np.zeros_like(value) for name, value in model.state_dict().items()}
    state_dict["bias_ih_l0"] = np.array([b_i, b_f, b_g, b_o]) - 0.25
    state_dict["bias_hh_l0"] = np.full(4, 0.25)
    state_dict["head.weight"] = np.ones((1, 1))
    model.load_state_dict(state_dict)
    h0, c0 = np.full((1, 1, 1), 0.4), np.full((1, 1, 1), 0.9)
    y_hat, (h1, c1) = model.forward(np.ones((1, 1, 1)), (h0, c0))
    expected_c = sigmoid(b_f) * 0.9 + sigmoid(b_i) * np.tanh(b_g)
    expected_h = sigmoid(b_o) * np.tanh(expected_c)
    assert c1[0, 0, 0] == pytest.approx(expected_c, rel=1e-14)
    assert h1[0, 0, 0] == pytest.approx(expected_h, rel=1e-14)
    assert y_hat[0, 0, 0] == pytest.approx(expected_h, rel=1e-14)


def test_gru_gate_order_is_r_z_n_with_reset_inside():
    # n = tanh(W_in x + b_in + r * (W_hn h + b_hn)): r multiplies the hidden side only.
    model = engine.Model(cell="gru", input_size=1, hidden_size=1, output_size=1, dtype="float64")
    w_in, w_hn = 0.8, -1.5
    b_ir, b_iz, b_in, b_hr, b_hz, b_hn = 0.2, -0.9, 0.1, 0.5, 0.3, 0.6
    state_dict = {name: np.zeros_like(value) for name, value in model.state_dict().items()}
    state_dict["weight_ih_l0"] = np.array([[0.0], [0.0], [w_in]])
    state_dict["weight_hh_l0"] = np.array([[0.0], [0.0], [w_hn]])
    state_dict["bias_ih_l0"] = np.array([b_ir, b_iz, b_in])
    state_dict["bias_hh_l0"] = np.array([b_hr, b_hz, b_hn])
    state_dict["head.weight"] = np.ones((1, 1))
    model.load_state_dict(state_dict)
    x, h = 1.3, 0.7
    _, h1 = model.forward(np.full((1, 1, 1), x), np.full((1, 1, 1), h))
    r, z = sigmoid(b_ir + b_hr), sigmoid(b_iz + b_hz)
    n = np.tanh(w_in * x + b_in + r * (w_hn * h + b_hn))
    assert h1[0, 0, 0] == pytest.approx((1 - z) * n + z * h, rel=1e-14)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_step(nonlinearity):
    model = engine.Model(cell="rnn", input_size=1, hidden_size=1, output_size=1,
                         nonlinearity=nonlinearity, dtype="float64")
    model.load_state_dict({"weight_ih_l0": np.array([[0.5]]), "weight_hh_l0": np.array([[-0.8]]),
                           "bias_ih_l0": np.array([0.1]), "bias_hh_l0": np.array([-0.3]),
                           "head.weight": np.array([[2.0]]), "head.bias": np.array([0.25])})
    y_hat, h = model.forward(np.array([[[1.0]], [[-2.0]]]), np.full((1, 1, 1), -0.5))
    act = np.tanh if nonlinearity == "tanh" else (lambda a: max(a, 0.0))
    h1 = act(0.5 * 1.0 + 0.1 - 0.8 * -0.5 - 0.3)
    h2 = act(0.5 * -2.0 + 0.1 - 0.8 * h1 - 0.3)
    np.testing.assert_allclose(y_hat.ravel(), [2 * h1 + 0.25, 2 * h2 + 0.25], rtol=1e-14)
    assert h[0, 0, 0] == pytest.approx(h2, rel=1e-14)


# --- load_state_dict ---

def test_load_state_dict_round_trip(variant, assert_close):
    cell, nonlinearity = variant
    source = make_model(cell, nonlinearity=nonlinearity, seed=1)
    target = make_model(cell, nonlinearity=nonlinearity, seed=2)
    x = np.random.default_rng(0).standard_normal((6, 2, 3))
    assert not np.allclose(source.forward(x)[0], target.forward(x)[0])
    target.load_state_dict(source.state_dict())
    for name, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[name], value, err_msg=name)
    np.testing.assert_array_equal(target.forward(x)[0], source.forward(x)[0])
    for name, view in target.views.items():  # still views into the one flat buffer
        assert np.shares_memory(view, target.params), name


def test_load_state_dict_copies_its_input():
    model = make_model()
    state_dict = make_model(seed=5).state_dict()
    model.load_state_dict(state_dict)
    state_dict["head.bias"][...] = 99.0
    assert not np.any(model.state_dict()["head.bias"] == 99.0)


def test_load_state_dict_casts_float64_to_float32():
    model = make_model(dtype="float32")
    source = make_model(dtype="float64", seed=3).state_dict()
    model.load_state_dict(source)
    for name, value in model.state_dict().items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, source[name].astype(np.float32), err_msg=name)
    assert model.params.dtype == np.float32


def test_load_state_dict_casts_float32_and_integers_to_float64():
    model = make_model(dtype="float64")
    source = make_model(dtype="float32", seed=3).state_dict()
    source["head.bias"] = np.array([3, -4])  # integers are numbers too
    model.load_state_dict(source)
    for name, value in model.state_dict().items():
        assert value.dtype == np.float64
        np.testing.assert_array_equal(value, source[name].astype(np.float64), err_msg=name)


# --- initialisers ---

def assert_uniform_within(values, bound, what):
    """All |values| <= bound, and with 64+ draws the largest reaches 0.8 * bound (so the
    range is not a smaller one; a false alarm has probability 0.8**64 < 1e-6)."""
    largest = np.abs(values).max()
    assert largest <= bound, f"{what}: {largest} > bound {bound}"
    if np.size(values) >= 64:
        assert largest > 0.8 * bound, f"{what}: {largest} far below bound {bound}"


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_default_init_is_pytorch_uniform(cell):
    # U(-1/sqrt(H), 1/sqrt(H)) for every tensor, input weights too (not 1/sqrt(I)).
    model = make_model(cell, input_size=4, hidden_size=16, output_size=6, num_layers=2)
    bound = 1 / np.sqrt(16)
    for name, value in model.state_dict().items():
        assert_uniform_within(value, bound, name)
        assert abs(value.mean()) < 0.5 * bound, name


@pytest.mark.parametrize("init", ["xavier", "orthogonal", "identity"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_non_default_inits(cell, init):
    I, H, O = 4, 16, 6
    model = make_model(cell, input_size=I, hidden_size=H, output_size=O, num_layers=2, init=init)
    for k, inputs in enumerate([I, H]):
        weight_ih, weight_hh, bias_ih, bias_hh = model.layer_parameters(k)
        assert not np.any(bias_ih) and not np.any(bias_hh)
        blocks = []
        for gate in range(GATES[cell]):
            rows = slice(gate * H, (gate + 1) * H)
            # Glorot per gate block: fan_in I_k, fan_out H.
            assert_uniform_within(weight_ih[rows], np.sqrt(6 / (inputs + H)), f"ih l{k} gate {gate}")
            block = weight_hh[rows]
            blocks.append(block)
            if init == "xavier":
                assert_uniform_within(block, np.sqrt(6 / (2 * H)), f"hh l{k} gate {gate}")
            elif init == "orthogonal":
                np.testing.assert_allclose(block @ block.T, np.eye(H), atol=1e-12)
            else:
                np.testing.assert_array_equal(block, np.eye(H))
        if init != "identity" and len(blocks) > 1:  # independent draws per gate
            assert not np.allclose(blocks[0], blocks[1])
    assert_uniform_within(model.views["head.weight"], np.sqrt(6 / (H + O)), "head.weight")
    assert not np.any(model.views["head.bias"])


@pytest.mark.parametrize("init", ["default", "xavier", "orthogonal", "identity"])
def test_forget_bias_sets_the_total_forget_gate_bias(init):
    H = 5
    plain = make_model("lstm", hidden_size=H, init=init, seed=4)
    biased = make_model("lstm", hidden_size=H, init=init, seed=4, forget_bias=1.5)
    forget = slice(H, 2 * H)
    for k in range(3):
        total = biased.views[f"bias_ih_l{k}"] + biased.views[f"bias_hh_l{k}"]
        np.testing.assert_array_equal(total[forget], np.full(H, 1.5))
        # Everything else is exactly what the same seed gives without forget_bias.
        for kind in ("bias_ih", "bias_hh"):
            name = f"{kind}_l{k}"
            keep = np.ones(4 * H, dtype=bool)
            keep[forget] = False
            np.testing.assert_array_equal(biased.views[name][keep], plain.views[name][keep])
    for name in plain.views:
        if not name.startswith("bias"):
            np.testing.assert_array_equal(biased.views[name], plain.views[name], err_msg=name)


@pytest.mark.parametrize("init", ["default", "xavier", "orthogonal", "identity"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_seed_determines_parameters(variant, init, dtype):
    cell, nonlinearity = variant
    first, again, other = (make_model(cell, nonlinearity=nonlinearity, init=init, dtype=dtype,
                                      seed=seed) for seed in (7, 7, 8))
    assert first.params.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(first.params, again.params)
    for name, value in first.state_dict().items():
        if np.any(value != 0) and not (init == "identity" and name.startswith("weight_hh")):
            assert np.any(value != other.state_dict()[name]), name


# --- init_state ---

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_init_state_is_zeros(variant, dtype):
    cell, nonlinearity = variant
    model = make_model(cell, nonlinearity=nonlinearity, num_layers=2, hidden_size=5, dtype=dtype)
    state = model.init_state(7)
    parts = state if cell == "lstm" else (state,)
    if cell == "lstm":
        assert isinstance(state, tuple) and len(state) == 2
        assert not np.shares_memory(state[0], state[1])
    for part in parts:
        assert part.shape == (2, 7, 5) and part.dtype == np.dtype(dtype)
        assert not np.any(part)


# --- forward ---

def chunking_case(cell, nonlinearity, dtype="float64", T=10):
    model = make_model(cell, nonlinearity=nonlinearity, num_layers=2, dtype=dtype)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((T, 3, 3)).astype(dtype)
    h = rng.standard_normal((2, 3, 5)).astype(dtype)
    state = (h, rng.standard_normal((2, 3, 5)).astype(dtype)) if cell == "lstm" else h
    return model, x, state


def assert_states_close(assert_close, actual, expected, cell, rel):
    for part, (a, e) in enumerate(zip(actual, expected) if cell == "lstm" else [(actual, expected)]):
        assert a.shape == e.shape
        assert_close(a, e, rel, f"state part {part}")


@pytest.mark.parametrize("T", [10, 9, 2, 1])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forward_in_inference_chunks_equals_one_shot(monkeypatch, variant, assert_close, T, dtype):
    cell, nonlinearity = variant
    model, x, state = chunking_case(cell, nonlinearity, dtype, T)
    one_shot, final = model.forward(x, state)
    monkeypatch.setattr(engine.model, "INFERENCE_CHUNK", 3)
    chunked, chunked_final = model.forward(x, state)
    rel = 1e-12 if dtype == "float64" else 1e-5
    assert chunked.shape == one_shot.shape
    assert_close(chunked, one_shot, rel, "y_hat")
    assert_states_close(assert_close, chunked_final, final, cell, rel)


def test_forward_carries_state_across_calls(variant, assert_close):
    cell, nonlinearity = variant
    model, x, state = chunking_case(cell, nonlinearity)
    whole, final = model.forward(x, state)
    first, middle = model.forward(x[:4], state)
    second, end = model.forward(x[4:], middle)
    assert_close(np.concatenate([first, second]), whole, 1e-12, "y_hat")
    assert_states_close(assert_close, end, final, cell, 1e-12)


def test_forward_and_loss_and_grad_leave_their_inputs_alone(variant):
    cell, nonlinearity = variant
    model, x, state = chunking_case(cell, nonlinearity)
    copies = [np.copy(a) for a in (state if cell == "lstm" else (state,))] + [x.copy(), model.params.copy()]
    model.forward(x, state)
    engine.loss_and_grad(model, x, np.zeros((10, 3, 2)), "mse", state)
    after = list(state if cell == "lstm" else (state,)) + [x, model.params]
    for before, now in zip(copies, after):
        np.testing.assert_array_equal(before, now)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_loss_and_grad_loss_agrees_with_forward(variant, loss):
    # The fused loss kernel against NumPy on Model.forward's outputs.
    cell, nonlinearity = variant
    model, x, state = chunking_case(cell, nonlinearity)
    rng = np.random.default_rng(2)
    if loss == "mse":
        y = rng.standard_normal((10, 3, 2))
        y[rng.random(y.shape) < 0.3] = np.nan
    else:
        y = rng.integers(-1, 2, size=(10, 3))
    value, _ = engine.loss_and_grad(model, x, y, loss, state)
    y_hat, _ = model.forward(x, state)
    if loss == "mse":
        counted = np.isfinite(y)
        expected = np.mean((y_hat[counted] - y[counted]) ** 2)
    else:
        logits, targets = y_hat.reshape(-1, 2), y.reshape(-1)
        logits, targets = logits[targets >= 0], targets[targets >= 0]
        log_sum_exp = np.log(np.exp(logits).sum(axis=1))
        expected = np.mean(log_sum_exp - logits[np.arange(len(targets)), targets])
    assert value == pytest.approx(expected, rel=1e-12)


def test_forward_accepts_non_contiguous_inputs(variant):
    # The kernels need C-contiguous arrays; strided views must give the same numbers.
    cell, nonlinearity = variant
    model, x, state = chunking_case(cell, nonlinearity)
    x_strided = np.asfortranarray(x)[:, ::-1][:, ::-1]
    parts = state if cell == "lstm" else (state,)
    strided_parts = [np.asfortranarray(part) for part in parts]
    strided_state = tuple(strided_parts) if cell == "lstm" else strided_parts[0]
    assert not x_strided.flags.c_contiguous and not strided_parts[0].flags.c_contiguous
    np.testing.assert_array_equal(model.forward(x_strided, strided_state)[0],
                                  model.forward(x, state)[0])


def test_returned_state_is_not_reused(variant):
    # A returned state must survive later calls (it is the carry of a stream).
    cell, nonlinearity = variant
    model, x, state = chunking_case(cell, nonlinearity)
    _, final = model.forward(x, state)
    kept = [part.copy() for part in (final if cell == "lstm" else (final,))]
    model.forward(2 * x, state)
    model.forward(x[:3])
    for part, copy in zip(final if cell == "lstm" else (final,), kept):
        np.testing.assert_array_equal(part, copy)


@pytest.mark.parametrize("dtype, value", [("float32", 1e300), ("float32", -3.5e38), ("float64", float("inf"))])
def test_forget_bias_must_be_within_the_dtype(dtype, value):
    with pytest.raises(ValueError, match="forget_bias must be"):
        engine.Model(cell="lstm", hidden_size=4, dtype=dtype, forget_bias=value)
    assert engine.Model(cell="lstm", hidden_size=4, dtype="float64", forget_bias=1e300).forget_bias == 1e300
