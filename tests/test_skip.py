"""The linear path from the inputs to the outputs (Model(skip=True): y = head(h) + V x,
V = skip.weight (O, I)): its place in the parameters, its zero start, its arithmetic, the
plans of batch shards against one, checkpoints old and new, the forecasting front's
default and `bptt train --skip/--no-skip`. Its gradients against central differences are
in tests/test_gradcheck.py, the hidden-block and recomputed plans in tests/test_split.py,
RTRL and UORO in tests/test_rtrl.py, the exports in tests/test_export*.py."""
import pathlib

import numpy as np
import pytest

import engine
import engine.bptt
import engine.online
from conftest import make_case_impl
from conftest import assert_close_impl as assert_close
from engine import footprint
from engine.shards import ShardedChunk
from engine.workspace import Workspace
from test_cli import assert_ok, run

OLD = pathlib.Path(__file__).parent / "data" / "v1"


def with_path(cell="lstm", I=3, H=4, O=2, **options):
    return engine.Model(cell, I, H, O, skip=True, **options)


def test_skip_weight_follows_the_head_and_starts_at_zero():
    """skip.weight (O, I) is the last parameter; it starts at zero under every init, and
    every other parameter is the same model's without the path (same seed)."""
    for init in ("default", "xavier", "orthogonal"):
        model, plain = with_path(init=init, num_layers=2), engine.Model("lstm", 3, 4, 2, init=init, num_layers=2)
        names = list(model.layout.shapes)
        assert names[-3:] == ["head.weight", "head.bias", "skip.weight"]
        assert model.layout.shapes["skip.weight"] == (2, 3) and "skip.weight" not in plain.views
        assert not model.views["skip.weight"].any()
        assert model.num_parameters == plain.num_parameters + 2 * 3
        assert model.num_parameters == footprint.parameter_count("lstm", 3, 4, 2, 2, skip=True)
        np.testing.assert_array_equal(model.params[:plain.num_parameters], plain.params)
    assert model.config["skip"] is True and engine.Model().config["skip"] is False
    with pytest.raises(TypeError, match="skip"):
        engine.Model(skip="yes")


def test_a_new_model_with_the_path_computes_the_plain_model():
    x = np.random.default_rng(0).standard_normal((9, 2, 3)).astype(np.float32)
    y, state = with_path().forward(x)
    expected, expected_state = engine.Model("lstm", 3, 4, 2).forward(x)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(state[0], expected_state[0])


@pytest.mark.parametrize("bidirectional", [False, True], ids=["one-direction", "bidirectional"])
def test_forward_adds_x_times_the_skip_weight(bidirectional):
    """y = the plain model's outputs + x V^T, at every step and stream (and over the
    inference chunks of a long sequence)."""
    model = with_path("gru", dtype="float64", bidirectional=bidirectional, seed=2)
    model.views["skip.weight"][...] = np.random.default_rng(1).standard_normal((2, 3))
    plain = engine.Model(**{**model.config, "skip": False})
    plain.load_state_dict({name: value for name, value in model.state_dict().items() if name != "skip.weight"})
    x = np.random.default_rng(3).standard_normal((2500 if not bidirectional else 40, 3, 3))
    y, _ = model.forward(x)
    assert_close(y, plain.forward(x)[0] + x @ model.views["skip.weight"].T, 1e-12, "y")


def test_the_plain_model_never_calls_the_path(monkeypatch):
    """skip=False (every Model by default): training, inference and forward-mode gradients
    run no kernel of the linear path."""
    def refuse(*arguments):
        raise AssertionError("a model without the linear path ran its kernel")

    for module, name in ((engine.bptt, "skip_forward"), (engine.bptt, "skip_backward"),
                         (engine.online, "skip_backward")):
        monkeypatch.setattr(module, name, refuse)
    case = make_case_impl(num_layers=2, T=5, B=3)
    engine.loss_and_grad(case["model"], case["x"], case["y"])
    case["model"].forward(case["x"])
    trainer = engine.Trainer(case["model"], k1=5, gradient="uoro", shards=1)
    trainer.fit(case["x"], case["y"], epochs=1)
    with_skip = make_case_impl(num_layers=2, T=5, B=3, skip=True)
    with pytest.raises(AssertionError, match="linear path"):
        engine.loss_and_grad(with_skip["model"], with_skip["x"], with_skip["y"])


@pytest.mark.parametrize("memory", [None, "sqrt"])
def test_batch_shards_equal_one_shard(memory):
    """Two and three shards (and recomputation by segments) give one shard's loss and
    gradient, skip.weight's included, to float64 rounding."""
    case = make_case_impl("gru", num_layers=2, loss="mse", masked=True, T=8, B=6, I=3, H=4, O=2, skip=True)
    model, x, y = case["model"], case["x"], case["y"]
    results = []
    for shards in (1, 2, 3):
        grad = np.zeros_like(model.params)
        chunk = ShardedChunk(model, 8, 6, shards, grad, memory)
        loss, count = chunk.forward_backward(x, y, "mse", model.init_state(6), 2)
        results.append((loss, count, grad))
    loss, count, grad = results[0]
    assert np.abs(model.layout.views(grad)["skip.weight"]).max() > 1e-3
    for other_loss, other_count, other_grad in results[1:]:
        assert other_count == count and other_loss == pytest.approx(loss, rel=1e-12)
        assert_close(other_grad, grad, 1e-12, "gradient")


def test_workspace_and_footprint_count_the_path():
    model = with_path("rnn", I=3, H=5, O=2, num_layers=3)
    assert footprint.workspace_bytes("rnn", 5, 2, 3, 7, 4, 4, skip=True) == Workspace(model, 7, 4).nbytes
    assert footprint.workspace_bytes("rnn", 5, 2, 3, 7, 4, 4) == Workspace(engine.Model("rnn", 3, 5, 2, 3), 7, 4).nbytes


def test_trained_checkpoint_keeps_the_path_and_resumes(tmp_path):
    """The Trainer moves skip.weight from zero; a checkpoint keeps the config and the weight,
    and one more epoch from it equals two epochs in one run."""
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((12, 2, 2)).astype(np.float32), rng.standard_normal((12, 2, 1)).astype(np.float32)

    def trainer(model):
        return engine.Trainer(model, k1=4, lr=0.05, shards=1)

    model = with_path("lstm", I=2, H=3, O=1)
    first = trainer(model)
    first.fit(x, y, epochs=1)
    assert model.views["skip.weight"].any()
    engine.save(tmp_path / "m.npz", model, first)
    loaded, resumed = engine.load(tmp_path / "m.npz")
    assert loaded.skip and loaded.config == model.config
    np.testing.assert_array_equal(loaded.views["skip.weight"], model.views["skip.weight"])
    resumed.fit(x, y, epochs=1)
    straight = with_path("lstm", I=2, H=3, O=1)
    trainer(straight).fit(x, y, epochs=2)
    np.testing.assert_array_equal(loaded.params, straight.params)


def test_checkpoints_from_before_the_path_load_without_it():
    model, _ = engine.load(OLD / "single_h1.npz")
    assert model.skip is False and "skip.weight" not in model.views
    assert "skip" not in engine.read_metadata(OLD / "single_h1.npz")["model"]


def series_csv(path, rows=240):
    """A sine with noise ("value") and a known input ("price") that moves it."""
    t = np.arange(rows)
    rng = np.random.default_rng(0)
    price = rng.standard_normal(rows)
    value = np.sin(2 * np.pi * t / 24) + 0.5 * price + 0.1 * rng.standard_normal(rows)
    path.write_text("value,price\n" + "".join(f"{v:.4f},{p:.4f}\n" for v, p in zip(value, price)))
    return path


def test_the_path_is_chosen_where_the_data_has_known_inputs(tmp_path):
    """Left unset, training gives the linear path to a model whose data has known inputs,
    and none otherwise; its first line says so; --skip / --no-skip always win; bptt info
    shows it; a resumed run keeps its own and refuses the other."""
    data = series_csv(tmp_path / "s.csv")
    small = ["--hidden", "4", "--epochs", "1", "--k1", "24", "--targets", "value"]
    started = []
    model, _, _ = engine.train_series(data, None, hidden=4, epochs=1, k1=24, targets="value", known="price",
                                      on_start=started.append)
    assert model.skip is True and "a linear path from the inputs to the outputs" in started[0]["inputs"]
    model, _, _ = engine.train_series(data, None, hidden=4, epochs=1, k1=24, targets="value", inputs="value",
                                      on_start=started.append)
    assert model.skip is False and "linear path" not in (started[1]["inputs"] or "")
    chosen = run("train", data, *small, "--known", "price", "-o", tmp_path / "chosen.npz")
    assert_ok(chosen)
    assert "a linear path from the inputs to the outputs, as there are known inputs" in chosen.stderr
    for flags, name, expected in ((["--skip"], "on.npz", True), (["--known", "price", "--no-skip"], "off.npz", False)):
        given = run("train", data, *small, *flags, "-o", tmp_path / name)
        assert_ok(given)
        assert engine.read_metadata(tmp_path / name)["model"]["skip"] is expected
        assert "linear path" not in given.stderr   # given, not chosen
    info = run("info", tmp_path / "on.npz")
    assert_ok(info)
    assert "Linear path: the" in info.stdout
    assert "Linear path" not in run("info", tmp_path / "off.npz").stdout
    assert_ok(run("train", data, *small, "--known", "price", "--epochs", "2", "--resume", "-o", tmp_path / "off.npz"))
    assert engine.read_metadata(tmp_path / "off.npz")["model"]["skip"] is False
    refused = run("train", data, *small, "--known", "price", "--epochs", "3", "--skip", "--resume",
                  "-o", tmp_path / "off.npz")
    assert refused.exit_code == 2 and "skip" in refused.stderr
    assert "--skip / --no-skip" in run("train", "--help").stdout
