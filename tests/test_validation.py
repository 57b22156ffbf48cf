"""Bad input (docs/safety.md): every public entry point of the core rejects it before
computing, with one error whose message names the argument."""
import numpy as np
import pytest

import engine


@pytest.fixture
def lstm():
    return engine.Model(cell="lstm", input_size=2, hidden_size=3, output_size=2, num_layers=2,
                        dtype="float64")


@pytest.fixture
def gru():
    return engine.Model(cell="gru", input_size=2, hidden_size=3, output_size=2, dtype="float64")


def good_x(T=4, B=2, I=2):
    return np.zeros((T, B, I))


def good_y(T=4, B=2, O=2):
    return np.zeros((T, B, O))


def good_classes(T=4, B=2):
    return np.zeros((T, B), dtype=np.int64)


# Both ways of running a model over x; errors about x and state must come from either.
def run_forward(model, x, state=None):
    return model.forward(x, state)


def run_loss_and_grad(model, x, state=None):
    return engine.loss_and_grad(model, x, good_y(), "mse", state)  # x is checked before y


runners = pytest.mark.parametrize("run", [run_forward, run_loss_and_grad],
                                  ids=["forward", "loss_and_grad"])


# --- Model(...) ---

@pytest.mark.parametrize("option, value", [
    ("cell", "transformer"), ("cell", "LSTM"), ("init", "he"), ("dtype", "float16"),
    ("dtype", "banana"), ("dtype", "complex128"), ("dtype", "int64"), ("nonlinearity", "sigmoid"),
])
def test_unknown_option(option, value):
    with pytest.raises(ValueError, match=option):
        engine.Model(**{option: value})


def test_nonlinearity_only_for_rnn():
    with pytest.raises(ValueError, match="nonlinearity"):
        engine.Model(cell="lstm", nonlinearity="relu")


@pytest.mark.parametrize("size", ["input_size", "hidden_size", "output_size", "num_layers"])
@pytest.mark.parametrize("value", [2.0, 1.5, "3", True, None])
def test_non_integer_size(size, value):
    with pytest.raises(TypeError, match=size):
        engine.Model(**{size: value})


@pytest.mark.parametrize("size", ["input_size", "hidden_size", "output_size", "num_layers"])
@pytest.mark.parametrize("value", [0, -1])
def test_zero_or_negative_size(size, value):
    with pytest.raises(ValueError, match=size):
        engine.Model(**{size: value})


def test_numpy_integer_sizes_are_accepted():
    model = engine.Model(input_size=np.int64(2), hidden_size=np.int32(3))
    assert model.state_dict()["weight_ih_l0"].shape == (12, 2)


def test_bad_seed():
    with pytest.raises(ValueError, match="seed"):
        engine.Model(seed=-1)
    with pytest.raises(TypeError, match="seed"):
        engine.Model(seed=0.5)


@pytest.mark.parametrize("value, error", [(float("nan"), ValueError), (float("inf"), ValueError),
                                          ("1", TypeError), (None, TypeError)])
def test_bad_forget_bias(value, error):
    with pytest.raises(error, match="forget_bias"):
        engine.Model(cell="lstm", forget_bias=value)


def test_forget_bias_only_for_lstm():
    with pytest.raises(ValueError, match="forget_bias"):
        engine.Model(cell="gru", forget_bias=1.0)


# --- x, through Model.forward and engine.loss_and_grad ---

@runners
@pytest.mark.parametrize("shape", [(4, 2), (4, 2, 2, 1), (8,), ()])
def test_x_wrong_number_of_axes(lstm, run, shape):
    with pytest.raises(ValueError, match=r"\bx\b.*shape"):
        run(lstm, np.zeros(shape))


@runners
def test_x_wrong_input_size(lstm, run):
    with pytest.raises(ValueError, match=r"\bx\b.*input_size"):
        run(lstm, np.zeros((4, 2, 3)))


@runners
@pytest.mark.parametrize("shape", [(0, 2, 2), (4, 0, 2)])
def test_x_empty(lstm, run, shape):
    with pytest.raises(ValueError, match=r"\bx\b"):
        run(lstm, np.zeros(shape))


@runners
@pytest.mark.parametrize("x", [
    np.full((4, 2, 2), "a"),                         # strings
    np.full((4, 2, 2), None, dtype=object),          # objects
    np.zeros((4, 2, 2), dtype=np.complex128),        # complex
    np.zeros((4, 2, 2), dtype=bool),                 # bool
], ids=["str", "object", "complex", "bool"])
def test_x_wrong_dtype(lstm, run, x):
    with pytest.raises(TypeError, match=r"\bx\b"):
        run(lstm, x)


@runners
def test_x_ragged_list(lstm, run):
    with pytest.raises(TypeError, match=r"\bx\b"):
        run(lstm, [[[0.0, 1.0]], [[0.0]]])


@runners
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_x_not_finite(lstm, run, bad):
    x = good_x()
    x[2, 1, 0] = bad
    with pytest.raises(ValueError, match=r"\bx\b.*finite"):
        run(lstm, x)


def test_x_as_nested_list_and_integers_is_accepted(gru):
    x = [[[1, 2]], [[3, 4]]]  # (T=2, B=1, I=2) integers
    y_hat, _ = gru.forward(x)
    np.testing.assert_array_equal(y_hat, gru.forward(np.array(x, dtype=float))[0])


# --- state ---

@runners
@pytest.mark.parametrize("shape", [(2, 3, 3), (1, 2, 3), (2, 2, 4), (2, 3)])
def test_state_wrong_shape(lstm, run, shape):
    good = np.zeros((2, 2, 3))
    with pytest.raises(ValueError, match="state h"):
        run(lstm, good_x(), (np.zeros(shape), good))
    with pytest.raises(ValueError, match="state c"):
        run(lstm, good_x(), (good, np.zeros(shape)))


@runners
def test_lstm_state_not_a_pair(lstm, run):
    with pytest.raises(TypeError, match="state"):
        run(lstm, good_x(), np.zeros((2, 2, 3)))
    with pytest.raises(TypeError, match="state"):
        run(lstm, good_x(), (np.zeros((2, 2, 3)),) * 3)


@runners
def test_gru_state_wrong_shape(gru, run):
    with pytest.raises(ValueError, match="state"):
        run(gru, good_x(), np.zeros((1, 3, 3)))


@runners
@pytest.mark.parametrize("dtype", [np.complex128, bool, object])
def test_state_wrong_dtype(gru, run, dtype):
    with pytest.raises(TypeError, match="state"):
        run(gru, good_x(), np.zeros((1, 2, 3), dtype=dtype))


@runners
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_state_not_finite(lstm, run, bad):
    c = np.zeros((2, 2, 3))
    c[1, 0, 2] = bad
    with pytest.raises(ValueError, match="state c.*finite"):
        run(lstm, good_x(), (np.zeros((2, 2, 3)), c))


# --- y and loss, through engine.loss_and_grad ---

def test_unknown_loss(gru):
    with pytest.raises(ValueError, match="loss"):
        engine.loss_and_grad(gru, good_x(), good_y(), "mae")


@pytest.mark.parametrize("shape", [(4, 2), (4, 2, 3), (3, 2, 2), (4, 1, 2), (4, 2, 2, 1)])
def test_mse_y_wrong_shape(gru, shape):
    with pytest.raises(ValueError, match=r"\by\b.*shape"):
        engine.loss_and_grad(gru, good_x(), np.zeros(shape), "mse")


@pytest.mark.parametrize("shape", [(4, 2, 2), (4, 2, 1), (3, 2), (4,)])
def test_cross_entropy_y_wrong_shape(gru, shape):
    with pytest.raises(ValueError, match=r"\by\b.*shape"):
        engine.loss_and_grad(gru, good_x(), np.zeros(shape, dtype=np.int64), "cross_entropy")


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_mse_y_infinite(gru, bad):
    y = good_y()
    y[1, 1, 1] = bad
    with pytest.raises(ValueError, match=r"\by\b.*infinity"):
        engine.loss_and_grad(gru, good_x(), y, "mse")


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("dtype", ["U1", object, np.complex128, bool])
def test_y_wrong_dtype(gru, loss, dtype):
    shape = (4, 2, 2) if loss == "mse" else (4, 2)
    with pytest.raises(TypeError, match=r"\by\b"):
        engine.loss_and_grad(gru, good_x(), np.zeros(shape).astype(dtype), loss)


@pytest.mark.parametrize("bad", [2, 7, -2])
def test_cross_entropy_class_out_of_range(gru, bad):
    y = good_classes()
    y[3, 1] = bad
    with pytest.raises(ValueError, match=rf"\by\b.*class.*{bad}"):
        engine.loss_and_grad(gru, good_x(), y, "cross_entropy")


@pytest.mark.parametrize("bad", [0.5, np.nan, np.inf])
def test_cross_entropy_non_integer_classes(gru, bad):
    y = good_classes().astype(float)
    y[0, 0] = bad
    with pytest.raises(TypeError, match=r"\by\b.*integer"):
        engine.loss_and_grad(gru, good_x(), y, "cross_entropy")


def test_cross_entropy_integral_floats_are_accepted(gru):
    y = np.array([[0, 1], [1, -1], [0, 0], [1, 1]])
    value_int, _ = engine.loss_and_grad(gru, good_x() + 1, y, "cross_entropy")
    value_float, _ = engine.loss_and_grad(gru, good_x() + 1, y.astype(float), "cross_entropy")
    assert value_int == value_float


def test_mse_all_targets_missing(gru):
    with pytest.raises(ValueError, match=r"\by\b.*missing"):
        engine.loss_and_grad(gru, good_x(), np.full((4, 2, 2), np.nan), "mse")


def test_cross_entropy_all_targets_ignored(gru):
    with pytest.raises(ValueError, match=r"\by\b.*missing"):
        engine.loss_and_grad(gru, good_x(), np.full((4, 2), -1), "cross_entropy")


def test_loss_and_grad_x_and_y_lengths_disagree(gru):
    with pytest.raises(ValueError, match=r"\by\b.*\(5, 2, 2\)"):
        engine.loss_and_grad(gru, good_x(T=5), good_y(T=4), "mse")


# --- Model.init_state ---

@pytest.mark.parametrize("batch, error", [(0, ValueError), (-3, ValueError), (2.0, TypeError),
                                          ("2", TypeError), (None, TypeError)])
def test_init_state_bad_batch(gru, batch, error):
    with pytest.raises(error, match="batch"):
        gru.init_state(batch)


# --- Model.load_state_dict: errors leave the parameters unchanged ---

def perturbed_state_dict(model):
    """A valid state dict different from the model's own parameters."""
    return {name: value + 1.0 for name, value in model.state_dict().items()}


def assert_load_fails(model, state_dict, error, match):
    before = model.params.copy()
    with pytest.raises(error, match=match):
        model.load_state_dict(state_dict)
    np.testing.assert_array_equal(model.params, before)


def test_load_state_dict_missing_name(lstm):
    state_dict = perturbed_state_dict(lstm)
    del state_dict["bias_hh_l1"]
    assert_load_fails(lstm, state_dict, ValueError, r"missing.*bias_hh_l1")


def test_load_state_dict_unexpected_name(lstm):
    state_dict = perturbed_state_dict(lstm)
    state_dict["weight_ih_l2"] = np.zeros((12, 3))
    assert_load_fails(lstm, state_dict, ValueError, r"unexpected.*weight_ih_l2")


@pytest.mark.parametrize("name, shape", [("head.bias", (3,)), ("weight_hh_l1", (3, 12)),
                                         ("weight_ih_l0", (12, 2, 1)), ("bias_ih_l0", ())])
def test_load_state_dict_wrong_shape(lstm, name, shape):
    # The bad entry may come after good ones (head.bias is last): nothing is half-loaded.
    state_dict = perturbed_state_dict(lstm)
    state_dict[name] = np.zeros(shape)
    assert_load_fails(lstm, state_dict, ValueError, rf"state_dict\['{name}'\].*shape")


@pytest.mark.parametrize("dtype", ["U1", object, np.complex128, bool])
def test_load_state_dict_wrong_dtype(lstm, dtype):
    state_dict = perturbed_state_dict(lstm)
    state_dict["head.weight"] = state_dict["head.weight"].astype(dtype)
    assert_load_fails(lstm, state_dict, TypeError, r"state_dict\['head.weight'\]")


def test_load_state_dict_not_finite(lstm):
    state_dict = perturbed_state_dict(lstm)
    state_dict["head.bias"][1] = np.nan
    assert_load_fails(lstm, state_dict, ValueError, r"state_dict\['head.bias'\].*finite")


@pytest.mark.parametrize("value", [None, [("head.bias", np.zeros(2))], "weights.npz"])
def test_load_state_dict_not_a_dict(lstm, value):
    assert_load_fails(lstm, value, TypeError, "state_dict")


def test_load_state_dict_good_input_does_change_parameters(lstm):
    # The counterpart of the failure tests: the same perturbed dict, unbroken, loads.
    state_dict = perturbed_state_dict(lstm)
    lstm.load_state_dict(state_dict)
    for name, value in state_dict.items():
        np.testing.assert_array_equal(lstm.state_dict()[name], value)


# --- Finite in float64 but not in float32: values beyond float32's range (~3.4e38) turn
# into inf when cast to a float32 model, so finiteness must be judged after the cast. ---

@pytest.fixture
def gru32():
    return engine.Model(cell="gru", input_size=2, hidden_size=3, output_size=2, dtype="float32")


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
@runners
def test_x_beyond_float32_range(gru32, run):
    x = good_x()
    x[1, 0, 0] = 1e300
    with pytest.raises(ValueError, match=r"\bx\b"):
        run(gru32, x)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
def test_mse_y_beyond_float32_range(gru32):
    # Unchecked, the entry would silently count as a missing target (the kernel masks inf).
    y = good_y()
    y[1, 0, 0] = 1e300
    with pytest.raises(ValueError, match=r"\by\b"):
        engine.loss_and_grad(gru32, good_x(), y, "mse")


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
@runners
def test_state_beyond_float32_range(gru32, run):
    state = np.zeros((1, 2, 3))
    state[0, 1, 1] = 1e300
    with pytest.raises(ValueError, match="state"):
        run(gru32, good_x(), state)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
def test_load_state_dict_beyond_float32_range(gru32):
    state_dict = perturbed_state_dict(gru32)
    state_dict["head.bias"] = np.array([0.0, 1e300])
    assert_load_fails(gru32, state_dict, ValueError, r"state_dict\['head.bias'\]")


def test_dtype_none_is_rejected():
    # None is no dtype name (np.dtype(None) would be float64, while the default is float32).
    with pytest.raises(ValueError, match="dtype"):
        engine.Model(dtype=None)
