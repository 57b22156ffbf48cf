"""Bidirectional layers (Model(bidirectional=True), engine/bidirectional.py): the NumPy
reference, float64 central differences, PyTorch's bidirectional modules, resets, batch
shards, where they are refused, memory estimates, checkpoints and exports."""
import pathlib

import numpy as np
import pytest

import engine
import naive
from engine import footprint
from engine.data import DataError
from engine.shards import ShardedChunk
from engine.workspace import Workspace
from test_gradcheck import assert_matches_central_differences

REL = 1e-10  # float64 against float64 references: relative to each tensor's largest entry
MIN_SCALE = 1e-3  # a tensor whose whole gradient is smaller would make a difference check vacuous


def parts(state):
    """The arrays of a state: (h,) or (h, c)."""
    return state if isinstance(state, tuple) else (state,)


def last_step_labels(y):
    """Classification from the last step: the classes of y (T, B) kept at step T - 1 only."""
    labels = np.full_like(y, -1)
    labels[-1] = y[-1]
    return labels


def case_for(make_case, cell, nonlinearity, num_layers, target, **sizes):
    """A bidirectional float64 case with the loss on every step (mse) or on the last step
    (cross_entropy, labels at T - 1 only); y replaced accordingly."""
    loss = "mse" if target == "every-step" else "cross_entropy"
    case = make_case(cell=cell, nonlinearity=nonlinearity, num_layers=num_layers, loss=loss,
                     bidirectional=True, **sizes)
    if target == "last-step":
        case["y"] = last_step_labels(case["y"])
    return case


# ---------------------------------------------------------------- forward

@pytest.mark.parametrize("with_resets", [False, True], ids=["no-resets", "resets"])
def test_forward_matches_the_numpy_reference(make_case, assert_close, variant, num_layers, with_resets):
    cell, nonlinearity = variant
    case = make_case(cell=cell, nonlinearity=nonlinearity, num_layers=num_layers, T=6, B=3, bidirectional=True)
    resets = None
    if with_resets:
        resets = np.zeros((6, 3), dtype=bool)
        resets[2, 0] = resets[4, 1] = resets[0, 2] = resets[5, 2] = True  # the first and the last step too
    y_hat, final = case["model"].forward(case["x"], case["state"], resets)
    expected, expected_final = naive.bidirectional_forward(case["params"], case["x"], cell, case["state"],
                                                           nonlinearity, resets)
    assert_close(y_hat, expected, REL, "y_hat")
    for name, actual, wanted in zip("hc", parts(final), parts(expected_final)):
        assert actual.shape == (2 * num_layers, 3, 3)
        assert_close(actual, wanted, REL, f"final {name}")


def test_a_reset_starts_a_new_series_in_both_directions(make_case, assert_close):
    # Two series packed end to end in one stream give what each gives alone.
    case = make_case(cell="lstm", num_layers=2, T=7, B=1, bidirectional=True, random_state=False)
    model, x = case["model"], case["x"]
    resets = np.zeros((7, 1), dtype=bool)
    resets[3] = True
    packed, _ = model.forward(x, resets=resets)
    assert_close(packed[:3], model.forward(x[:3])[0], REL, "first series")
    assert_close(packed[3:], model.forward(x[3:])[0], REL, "second series")
    assert np.abs(packed[:3] - model.forward(x)[0][:3]).max() > 1e-3  # without the reset the future leaks in


def test_the_reverse_half_at_the_last_step_has_seen_only_the_last_input(make_case):
    case = make_case(cell="gru", num_layers=1, T=5, B=2, bidirectional=True, random_state=False)
    model, x = case["model"], case["x"]
    H = model.hidden_size
    reverse_head = model.views["head.weight"].copy()
    model.views["head.weight"][:, :H] = 0  # the head reads the reverse half only
    changed = x.copy()
    changed[:-1] += 1.0
    y_hat, _ = model.forward(x)
    np.testing.assert_array_equal(model.forward(changed)[0][-1], y_hat[-1])
    assert np.abs(model.forward(changed)[0][0] - y_hat[0]).max() > 1e-3
    model.views["head.weight"][...] = reverse_head


# ---------------------------------------------------------------- gradients

def well_conditioned(make_case, cell, num_layers, target, resets=None):
    """A case whose every gradient tensor is clearly non-zero; re-drawn until it is."""
    for seed in range(30):
        case = case_for(make_case, cell, "tanh", num_layers, target, T=4, B=2, I=2, H=3, O=3, seed=seed)
        _, grads = engine.loss_and_grad(case["model"], case["x"], case["y"], case["loss"], case["state"], resets)
        if min(np.abs(g).max() for g in grads.values()) >= MIN_SCALE:
            return case
    pytest.fail("no well-conditioned case in 30 seeds")


@pytest.mark.parametrize("target", ["every-step", "last-step"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_gradients_match_central_differences(make_case, cell, num_layers, target):
    case = well_conditioned(make_case, cell, num_layers, target)
    model, x, y, loss, state = case["model"], case["x"], case["y"], case["loss"], case["state"]
    _, analytic = engine.loss_and_grad(model, x, y, loss, state)
    assert {name for name in analytic if name.endswith("_reverse")} == \
        {name for name in model.views if name.endswith("_reverse")} != set()
    assert_matches_central_differences(model, state, lambda: engine.loss_and_grad(model, x, y, loss, state)[0],
                                       analytic, MIN_SCALE)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_gradients_with_resets_match_central_differences(make_case, cell):
    resets = np.zeros((4, 2), dtype=bool)
    resets[2, 0] = resets[1, 1] = True
    case = well_conditioned(make_case, cell, 2, "every-step", resets)
    model, x, y, state = case["model"], case["x"], case["y"], case["state"]
    _, analytic = engine.loss_and_grad(model, x, y, "mse", state, resets)
    assert_matches_central_differences(model, state,
                                       lambda: engine.loss_and_grad(model, x, y, "mse", state, resets)[0],
                                       analytic, MIN_SCALE)


# ---------------------------------------------------------------- PyTorch

@pytest.mark.parametrize("target", ["every-step", "last-step"])
def test_matches_torch_bidirectional_modules(make_case, assert_close, variant, num_layers, target):
    torch = pytest.importorskip("torch")
    from bench.exactness import torch_loss, torch_model

    cell, nonlinearity = variant
    case = case_for(make_case, cell, nonlinearity, num_layers, target, T=6, B=3, I=2, H=4, O=3, seed=5)
    model, x, y, loss_name, state = case["model"], case["x"], case["y"], case["loss"], case["state"]
    recurrent, head = torch_model(model)  # our state dict, loaded strictly into bidirectional=True
    assert recurrent.bidirectional
    torch_state = tuple(torch.tensor(part, requires_grad=True) for part in parts(state))
    outputs, torch_final = recurrent(torch.from_numpy(x), torch_state if cell == "lstm" else torch_state[0])
    loss = torch_loss(loss_name, head(outputs), y)
    loss.backward()

    y_hat, final = model.forward(x, state)
    assert_close(y_hat, head(outputs).detach().numpy(), REL, "y_hat")
    for name, actual, expected in zip("hc", parts(final), parts(torch_final)):
        assert_close(actual, expected.detach().numpy(), REL, f"final {name}")
    value, grads = engine.loss_and_grad(model, x, y, loss_name, state)
    assert_close(value, loss.item(), REL, "loss")
    expected = {name: p.grad.numpy() for name, p in recurrent.named_parameters()}
    expected.update({f"head.{name}": p.grad.numpy() for name, p in head.named_parameters()})
    expected.update({f"{name}_0": part.grad.numpy() for name, part in zip("hc", torch_state)})
    assert set(grads) == set(expected)
    for name, wanted in expected.items():
        assert_close(grads[name], wanted, REL, name)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_torch_bidirectional_weights_load_into_model(cell, assert_close):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    modules = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}
    recurrent = modules[cell](3, 5, 2, bidirectional=True, dtype=torch.float64)
    head = torch.nn.Linear(10, 2, dtype=torch.float64)
    state_dict = dict(recurrent.state_dict())
    state_dict.update({f"head.{name}": value for name, value in head.state_dict().items()})
    model = engine.Model(cell=cell, input_size=3, hidden_size=5, output_size=2, num_layers=2, dtype="float64",
                         bidirectional=True)
    model.load_state_dict(state_dict)
    assert list(model.state_dict()) == list(state_dict)  # torch's names in torch's order
    x = np.random.default_rng(0).standard_normal((7, 2, 3))
    with torch.no_grad():
        expected = head(recurrent(torch.from_numpy(x))[0]).numpy()
    assert_close(model.forward(x)[0], expected, REL, "y_hat")


def test_initialisation_covers_the_reverse_direction():
    H = 4
    model = engine.Model("lstm", 2, H, 3, 2, init="orthogonal", forget_bias=1.0, bidirectional=True, dtype="float64")
    for k in (0, 1):
        weight_ih, weight_hh, bias_ih, bias_hh = model.layer_parameters(k, reverse=True)
        assert weight_ih.shape == (4 * H, 2 if k == 0 else 2 * H)
        for gate in range(4):
            block = weight_hh[gate * H:(gate + 1) * H]
            np.testing.assert_allclose(block @ block.T, np.eye(H), atol=1e-12)
        np.testing.assert_array_equal(bias_ih, np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)])
        np.testing.assert_array_equal(bias_hh, 0)
    default = engine.Model("gru", 2, H, 3, bidirectional=True)
    bound = 1 / np.sqrt(2 * H)  # torch's nn.Linear(2H, O): U(-1/sqrt(2H), 1/sqrt(2H))
    assert np.abs(default.views["head.weight"]).max() <= bound < np.abs(default.views["weight_hh_l0_reverse"]).max()


# ---------------------------------------------------------------- training

def classification_data(T=8, B=6, seed=0):
    """x (T, B, 2) and labels at the last step that depend on the first input."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, 2))
    y = np.full((T, B), -1)
    y[-1] = (x[0, :, 0] > 0).astype(int)
    return x, y


def test_batch_shards_give_the_gradient_of_one_shard():
    x, y = classification_data()
    results = []
    for shards in (1, 2, 3):
        model = engine.Model("lstm", 2, 4, 2, 2, dtype="float64", bidirectional=True)
        trainer = engine.Trainer(model, loss="cross_entropy", k1=None, shards=shards, lr=0.01)
        trainer.fit(x, y, epochs=2)
        results.append(model.params.copy())
    for params in results[1:]:
        np.testing.assert_allclose(params, results[0], rtol=0, atol=1e-12)


def test_k1_at_least_the_sequence_length_trains_as_full_bptt():
    x, y = classification_data()
    trained = []
    for k1 in (None, 8, 20):
        model = engine.Model("gru", 2, 4, 2, dtype="float64", bidirectional=True)
        engine.Trainer(model, loss="cross_entropy", k1=k1, lr=0.01).fit(x, y, epochs=2)
        trained.append(model.params)
    np.testing.assert_array_equal(trained[0], trained[1])
    np.testing.assert_array_equal(trained[0], trained[2])


@pytest.mark.parametrize("options, message", [
    (dict(gradient="rtrl", k1=None), "gradient='rtrl' does not apply to a bidirectional model"),
    (dict(gradient="uoro", k1=None), "gradient='uoro' does not apply to a bidirectional model"),
    (dict(memory="sqrt"), "memory='sqrt' does not apply to a bidirectional model"),
    (dict(memory=10 ** 6), "memory=1000000 does not apply to a bidirectional model"),
    (dict(split=2), "split=2 does not apply to a bidirectional model"),
    (dict(diagnostics=True), "diagnostics=True does not apply to a bidirectional model"),
])
def test_trainer_refuses_what_a_bidirectional_model_does_not_run(options, message):
    model = engine.Model("rnn", 2, 4, 2, bidirectional=True)
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        engine.Trainer(model, loss="cross_entropy", **options)


def test_truncated_windows_and_streaming_are_refused():
    x, y = classification_data()
    model = engine.Model("rnn", 2, 4, 2, bidirectional=True)
    before = model.params.copy()
    with pytest.raises(ValueError, match="k1=5 would cut the 8 steps of x into windows; use k1=None"):
        engine.Trainer(model, loss="cross_entropy", k1=5).fit(x, y)
    with pytest.raises(ValueError, match="partial_fit does not apply to a bidirectional model"):
        engine.Trainer(model, loss="cross_entropy", k1=None).partial_fit(x, y)
    np.testing.assert_array_equal(model.params, before)


def test_the_state_has_torchs_h0_shape():
    model = engine.Model("lstm", 2, 4, 1, num_layers=3, bidirectional=True)
    h, c = model.init_state(5)
    assert h.shape == c.shape == (6, 5, 4)
    wrong = np.zeros((3, 5, 4), np.float32)
    with pytest.raises(ValueError, match=r"must have shape \(6, 5, 4\) \(num_layers \* 2, B, hidden_size\)"):
        model.forward(np.zeros((2, 5, 2)), (wrong, wrong))
    with pytest.raises(TypeError, match="bidirectional must be True or False"):
        engine.Model("lstm", bidirectional="yes")


# ---------------------------------------------------------------- memory

@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 3])
def test_estimates_equal_what_the_engine_allocates(cell, layers):
    model = engine.Model(cell=cell, input_size=3, hidden_size=5, output_size=2, num_layers=layers,
                         dtype="float64", bidirectional=True)
    assert footprint.parameter_count(cell, 3, 5, 2, layers, bidirectional=True) == model.num_parameters
    assert footprint.workspace_bytes(cell, 5, 2, layers, 7, 4, 8, bidirectional=True, input_size=3) == \
        Workspace(model, 7, 4).nbytes
    assert Workspace(model, 7, 4).nbytes > 2 * Workspace(engine.Model(cell, 3, 5, 2, layers, dtype="float64"),
                                                         7, 4).nbytes
    grad = np.zeros_like(model.params)
    chunk = ShardedChunk(model, 7, 4, 2, grad)
    shard_copies = sum(array.nbytes for array in chunk.inputs) + 7 * 4 * 2 * 8 + model.params.nbytes
    assert footprint.chunk_bytes(cell, 3, 5, 2, layers, 7, 4, 2, 8, model.params.nbytes, bidirectional=True) == \
        chunk.nbytes + shard_copies


# ---------------------------------------------------------------- checkpoints and the command

def bidirectional_checkpoint(path):
    """A trained 2-layer bidirectional GRU classifier saved with its trainer at `path`."""
    x, y = classification_data()
    model = engine.Model("gru", 2, 4, 2, 2, bidirectional=True)
    trainer = engine.Trainer(model, loss="cross_entropy", k1=None)
    trainer.fit(x, y, epochs=2)
    engine.save(path, model, trainer)
    return model


def test_checkpoint_round_trip_and_info(tmp_path):
    from click.testing import CliRunner

    from cli import main

    model = bidirectional_checkpoint(tmp_path / "m.npz")
    loaded, trainer = engine.load(tmp_path / "m.npz")
    assert loaded.bidirectional and loaded.config == model.config
    np.testing.assert_array_equal(loaded.params, model.params)
    assert trainer.state.shape == (4, 6, 4)  # the carried state: torch's (num_layers * 2, B, H)
    result = CliRunner().invoke(main, ["info", str(tmp_path / "m.npz")])
    assert result.exit_code == 0, result.output
    assert "Model:    gru, 2 bidirectional layer(s) x 4 hidden" in result.output


def test_an_older_checkpoint_loads_as_one_directional():
    old = pathlib.Path(__file__).parent / "data" / "v1" / "single_h1.npz"  # written before the option
    assert "bidirectional" not in engine.read_metadata(old)["model"]
    model, _ = engine.load(old)
    assert model.bidirectional is False and model.config["bidirectional"] is False


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_the_command_refuses_bidirectional_forecasting(tmp_path, monkeypatch, command):
    from click.testing import CliRunner

    from cli import main
    from cli_checks import assert_bad_input

    monkeypatch.chdir(tmp_path)
    arguments = [command, "--demo", "sine", "--bidirectional", "--epochs", "1", "-o", "out"]
    assert_bad_input(CliRunner().invoke(main, arguments),
                     "--bidirectional does not apply to forecasting", "reads every later step")
    assert list(tmp_path.iterdir()) == []


def test_forecasting_jobs_refuse_a_bidirectional_model(tmp_path):
    bidirectional_checkpoint(tmp_path / "m.npz")
    model, _ = engine.load(tmp_path / "m.npz")
    for job in (engine.forecast_series, engine.evaluate_series, engine.backtest_series):
        with pytest.raises(DataError, match="holds a bidirectional model, which cannot forecast"):
            job((model, {}), tmp_path / "absent.csv")


def test_gradcheck_command_checks_a_bidirectional_model():
    from click.testing import CliRunner

    from cli import main

    result = CliRunner().invoke(main, ["gradcheck", "--bidirectional", "--cell", "gru", "--hidden", "3",
                                       "--layers", "2", "--steps", "4"])
    assert result.exit_code == 0, result.output
    entries = footprint.parameter_count("gru", 3, 3, 2, 2, bidirectional=True) + 2 * 2 * 2 * 3  # + h_0 (4, 2, 3)
    assert result.output.startswith(f"gru: {entries} gradient entries checked") and result.output.endswith(": ok\n")


# ---------------------------------------------------------------- exports

def test_onnx_bidirectional_operators_equal_forward(tmp_path, variant, num_layers, assert_close):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from engine.export import export_model

    cell, nonlinearity = variant
    model = engine.Model(cell, 3, 4, 2, num_layers, nonlinearity=nonlinearity, bidirectional=True, seed=2)
    export_model(model, tmp_path / "m.onnx", "onnx")
    proto = onnx.load(tmp_path / "m.onnx")
    recurrent = [node for node in proto.graph.node if node.op_type in ("RNN", "LSTM", "GRU")]
    assert len(recurrent) == num_layers
    assert all(onnx.helper.get_attribute_value(attribute) == b"bidirectional"
               for node in recurrent for attribute in node.attribute if attribute.name == "direction")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 3, 3)).astype(np.float32)
    state = tuple((0.5 * rng.standard_normal((2 * num_layers, 3, 4))).astype(np.float32) for _ in range(2))
    state = state if cell == "lstm" else state[0]
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    y, *final = session.run(None, {"x": x, **{f"{name}0": part for name, part in zip("hc", parts(state))}})
    expected, expected_final = model.forward(x, state)
    assert_close(y, expected, 1e-5, "y")
    for name, actual, wanted in zip("hc", final, parts(expected_final)):
        assert_close(actual, wanted, 1e-5, f"final {name}")


def test_safetensors_carries_the_reverse_tensors_into_torch(tmp_path, assert_close):
    torch = pytest.importorskip("torch")
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    from bench.exactness import torch_model
    from engine.export import export_model

    model = engine.Model("lstm", 3, 4, 2, 2, dtype="float64", bidirectional=True)
    export_model(model, tmp_path / "m.safetensors", "safetensors")
    loaded = safetensors_numpy.load_file(tmp_path / "m.safetensors")
    assert {name for name in loaded if name.endswith("_reverse")} == {
        f"{kind}_l{k}_reverse" for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") for k in (0, 1)}
    for name, array in model.state_dict().items():
        assert loaded[name].tobytes() == array.tobytes(), name
    copy = engine.Model("lstm", 3, 4, 2, 2, dtype="float64", bidirectional=True, seed=9)
    copy.load_state_dict(loaded)
    recurrent, head = torch_model(copy)  # strict loading into torch.nn.LSTM(bidirectional=True)
    x = np.random.default_rng(1).standard_normal((5, 2, 3))
    with torch.no_grad():
        expected = head(recurrent(torch.from_numpy(x))[0]).numpy()
    assert_close(model.forward(x)[0], expected, REL, "y_hat")
