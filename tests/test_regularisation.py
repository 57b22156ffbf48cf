"""Dropout between layers, variational recurrent dropout and zoneout (docs/training.md,
"Regularisation"; every rate 0 reproducing the engine of before them: test_rate0_recordings.py):
the kernels' masks against the NumPy reference and float64 central differences; inter-layer
dropout against PyTorch; the drawn masks' rates; the options' checks, checkpoints and
exports."""
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest

import engine
import naive
from conftest import RATE, VARIANTS, option_cases, option_rates
from conftest import assert_close_impl as assert_close
from conftest import assert_equals_stacked_torch, make_case_impl
from engine.bptt import SERIAL, initial_state_grad
from engine.masks import ChunkMasks, draw_masks
from engine.passes import RecomputePass, StoredPass
from engine.split import SplitLayers
from test_gradcheck import assert_matches_central_differences


# ---------------------------------------------------------------- kernels with fixed masks

def _masked_case(variant, num_layers, option, seed=0, T=5, B=3, H=4):
    """A float64 model with the option's rates, data with resets, and masks drawn for it."""
    cell, nonlinearity = variant
    case = make_case_impl(cell=cell, nonlinearity=nonlinearity, num_layers=num_layers, loss="mse", masked=True,
                          T=T, B=B, I=3, H=H, O=2, seed=seed)
    model = engine.Model(cell=cell, input_size=3, hidden_size=H, output_size=2, num_layers=num_layers,
                         nonlinearity=nonlinearity, dtype="float64", **option_rates(variant, option))
    model.load_state_dict(case["params"])
    rng = np.random.default_rng(seed + 7)
    case.update(model=model, resets=rng.random((T, B)) < 0.2, masks=draw_masks(model, T, B, rng))
    return case


def _naive_masks(masks):
    return {name: None if mask is None else mask.astype(np.float64) for name, mask in masks._asdict().items()}


@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("variant, option", list(option_cases(VARIANTS)),
                         ids=[f"{v[0]}-{v[1]}-{o}" for v, o in option_cases(VARIANTS)])
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
@pytest.mark.parametrize("variant, option", list(option_cases(TANH_VARIANTS)),
                         ids=[f"{v[0]}-{o}" for v, o in option_cases(TANH_VARIANTS)])
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


# ---------------------------------------------------------------- PyTorch's inter-layer dropout

@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_inter_layer_dropout_equals_torch_with_the_same_mask(cell):
    """torch.nn.LSTM(num_layers=2, dropout=p) multiplies layer 0's output by a Bernoulli
    mask / (1 - p) before layer 1 reads it; with the mask given, two stacked single-layer
    modules and that product compute it. Outputs, loss and every gradient equal ours."""
    torch = pytest.importorskip("torch")
    case = _masked_case((cell, "tanh"), 2, "dropout", T=6, B=3, H=4)
    model, x, y, masks = case["model"], case["x"], np.nan_to_num(case["y"]), case["masks"]
    state = case["state"]
    loss, grads = engine.loss_and_grad(model, x, y, "mse", state, masks=masks)
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    layers = [module(3 if k == 0 else 4, 4, dtype=torch.float64) for k in range(2)]
    for k, layer in enumerate(layers):
        layer.load_state_dict({f"{kind}_l0": torch.tensor(case["params"][f"{kind}_l{k}"])
                               for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
    head = torch.nn.Linear(4, 2, dtype=torch.float64)
    head.load_state_dict({"weight": torch.tensor(case["params"]["head.weight"]),
                          "bias": torch.tensor(case["params"]["head.bias"])})
    parts = [torch.tensor(part, requires_grad=True) for part in _parts(state)]
    below, _ = layers[0](torch.tensor(x), tuple(p[0:1] for p in parts) if cell == "lstm" else parts[0][0:1])
    above, _ = layers[1](below * torch.tensor(masks.drop[0]),
                         tuple(p[1:2] for p in parts) if cell == "lstm" else parts[0][1:2])
    torch_loss = torch.nn.functional.mse_loss(head(above), torch.tensor(y))
    torch_loss.backward()
    assert_equals_stacked_torch(loss, grads, torch_loss, layers, head, parts)


# ---------------------------------------------------------------- the drawn masks

def test_drawn_masks_have_the_rates():
    """Over 2 x 50 x 40 x 25 = 100 000 draws the fraction of zeroed (dropout) or kept
    (zoneout) units is within 0.01 of the rate (binomial sd 0.0016: over 6 sd); kept
    dropout units are 1 / (1 - p); recurrent dropout has one mask per stream for the window."""
    model = engine.Model(cell="lstm", hidden_size=25, num_layers=3, dtype="float64", dropout=0.3,
                         recurrent_dropout=0.2, zoneout=0.1)
    masks = draw_masks(model, 50, 40, np.random.default_rng(0))
    assert masks.drop.shape == (2, 50, 40, 25) and masks.keep_prev.shape == (3, 40, 25)
    assert abs(np.mean(masks.drop == 0) - 0.3) < 0.01
    assert set(np.unique(masks.drop)) == {0.0, 1 / 0.7}
    big = draw_masks(model, 1, 1000, np.random.default_rng(1)).keep_prev  # 75 000 draws
    assert abs(np.mean(big == 0) - 0.2) < 0.01 and set(np.unique(big)) == {0.0, 1 / 0.8}
    for zone in (masks.zone_h, masks.zone_c):
        assert abs(np.mean(zone) - 0.1) < 0.01 and set(np.unique(zone)) == {0.0, 1.0}
    assert not np.array_equal(masks.zone_h, masks.zone_c)  # independent
    assert draw_masks(engine.Model(cell="gru", num_layers=2), 5, 2, np.random.default_rng(0)) is None


# ---------------------------------------------------------------- training

def _train(model_options, trainer_options=None, epochs=2, T=30, B=4):
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((T, B, 2)), rng.standard_normal((T, B, 1))
    resets = rng.random((T, B)) < 0.05
    model = engine.Model(input_size=2, hidden_size=4, output_size=1, dtype="float64", seed=1, **model_options)
    trainer = engine.Trainer(model, k1=5, k2=8, lr=0.01, seed=3, **(trainer_options or {}))
    trainer.fit(x, y, epochs=epochs, resets=resets, validation=(x[:10], y[:10]))
    return model, trainer, (x, y, resets)


ALL = dict(num_layers=2, dropout=0.3, recurrent_dropout=0.3, zoneout=0.2)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_training_with_masks_is_reproducible_and_the_plans_agree(cell):
    options = dict(ALL, cell=cell, zoneout=0.0 if cell == "rnn" else 0.2)
    serial, _, _ = _train(options, dict(shards=1))
    again, _, _ = _train(options, dict(shards=1))
    assert np.array_equal(serial.params, again.params)
    plain, _, _ = _train(dict(options, dropout=0.0, recurrent_dropout=0.0, zoneout=0.0), dict(shards=1))
    assert not np.allclose(plain.params, serial.params, rtol=1e-4)
    for plan in (dict(shards=2), dict(split=2), dict(shards=1, memory="sqrt"), dict(split=2, memory="sqrt")):
        other, _, _ = _train(options, plan)  # the same masks, sliced by streams, blocks and segments
        assert_close(other.params, serial.params, 1e-9, str(plan))


def test_a_resumed_checkpoint_continues_bit_exactly(tmp_path):
    straight, _, _ = _train(dict(ALL, cell="lstm"), epochs=2)
    model, trainer, (x, y, resets) = _train(dict(ALL, cell="lstm"), epochs=1)
    engine.save(tmp_path / "run.npz", model, trainer)
    model, trainer = engine.load(tmp_path / "run.npz")
    assert (model.dropout, model.recurrent_dropout, model.zoneout) == (0.3, 0.3, 0.2)
    trainer.fit(x, y, epochs=1, resets=resets, validation=(x[:10], y[:10]))
    assert np.array_equal(model.params, straight.params)


def test_validation_and_evaluate_draw_no_masks():
    model, trainer, (x, y, _) = _train(dict(ALL, cell="gru"), epochs=1)
    generator = trainer.rng.bit_generator.state
    first = trainer.evaluate(x, y)
    assert trainer.evaluate(x, y) == first and trainer.rng.bit_generator.state == generator
    assert trainer.history.epochs[0]["val_loss"] == pytest.approx(trainer.evaluate(x[:10], y[:10]), rel=1e-3)


def test_partial_fit_draws_masks_per_window():
    """Streaming (k2 > k1, the carried overhang) with masks: reproducible, and masked."""
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((20, 3, 2)), rng.standard_normal((20, 3, 1))

    def streamed(**rates):
        model = engine.Model(cell="lstm", input_size=2, hidden_size=4, num_layers=2, dtype="float64", **rates)
        trainer = engine.Trainer(model, k1=5, k2=8, seed=3)
        for piece in (slice(0, 10), slice(10, 20)):
            trainer.partial_fit(x[piece], y[piece])
        return model.params, trainer

    params, trainer = streamed(dropout=0.3, recurrent_dropout=0.3, zoneout=0.2)
    assert trainer.step == 4
    assert np.array_equal(params, streamed(dropout=0.3, recurrent_dropout=0.3, zoneout=0.2)[0])
    assert not np.allclose(params, streamed()[0], rtol=1e-4)


@pytest.mark.parametrize("options, message", [
    (dict(dropout=1.0), "dropout must be in [0, 1)"), (dict(recurrent_dropout=-0.1), "must be >= 0"),
    (dict(zoneout=float("nan")), "must be finite"), (dict(dropout="0.1"), "must be a real number"),
    (dict(cell="rnn", zoneout=0.1), "zoneout applies to cells 'lstm' and 'gru' only")])
def test_bad_rates_are_refused(options, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        engine.Model(**options)


@pytest.mark.parametrize("gradient", ["rtrl", "uoro"])
def test_online_gradients_refuse_the_rates(gradient):
    with pytest.raises(ValueError, match="not supported with gradient="):
        engine.Trainer(engine.Model(cell="gru", dropout=0.1, num_layers=2), gradient=gradient)


def test_loss_and_grad_checks_the_masks():
    model = engine.Model(cell="lstm", num_layers=2, dropout=0.2, dtype="float64")
    x, y = np.zeros((3, 2, 1)), np.zeros((3, 2, 1))
    with pytest.raises(ValueError, match=re.escape("masks.drop must have shape (1, 3, 2, 64)")):
        engine.loss_and_grad(model, x, y, masks=ChunkMasks(drop=np.ones((1, 3, 2, 4))))
    with pytest.raises(ValueError, match="masks.keep_prev must be None"):
        engine.loss_and_grad(model, x, y, masks=ChunkMasks(np.ones((1, 3, 2, 64)), np.ones((2, 2, 64))))


# ---------------------------------------------------------------- exports

def test_exports_leave_dropout_out_and_torch_refuses_zoneout(tmp_path):
    """Dropout and recurrent dropout vanish from the ONNX graph (it equals Model.forward);
    zoneout's expectation is in the ONNX graph (tests/test_export.py checks its values),
    the torch export refuses zoneout > 0 in one line before anything is written;
    safetensors carries the rates in its config."""
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from cli import main
    from click.testing import CliRunner

    model = engine.Model(cell="gru", input_size=2, hidden_size=4, output_size=1, num_layers=2, dropout=0.3,
                         recurrent_dropout=0.2)
    engine.save(tmp_path / "dropout.npz", model)
    engine.export.export_checkpoint(tmp_path / "dropout.npz", tmp_path / "m.onnx", "onnx")
    x = np.random.default_rng(0).standard_normal((7, 3, 2)).astype(np.float32)
    runtime = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    y, *_ = runtime.run(None, {"x": x, "h0": np.zeros((2, 3, 4), np.float32)})
    assert_close(y, model.forward(x)[0], 1e-5, "y")
    zoned = engine.Model(cell="lstm", input_size=2, hidden_size=4, zoneout=0.25)
    engine.save(tmp_path / "zoneout.npz", zoned)
    result = CliRunner().invoke(main, ["export", str(tmp_path / "zoneout.npz"), "--format", "onnx",
                                       "-o", str(tmp_path / "z.onnx")])
    assert result.exit_code == 0, result.output
    runtime = onnxruntime.InferenceSession(str(tmp_path / "z.onnx"), providers=["CPUExecutionProvider"])
    zeros = np.zeros((1, 3, 4), np.float32)
    y, *_ = runtime.run(None, {"x": x, "h0": zeros, "c0": zeros})
    assert_close(y, zoned.forward(x)[0], 1e-5, "y")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "zoneout.npz"), "--format", "torch",
                                       "-o", str(tmp_path / "z.pt")])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == ("Error: --format torch cannot express zoneout's inference "
                                     "(h = p h_prev + (1 - p) h_new): torch.nn.LSTM/GRU have no such option and "
                                     "this model has zoneout 0.25; export --format onnx (which computes it) or "
                                     "safetensors (which carries it)")
    assert not (tmp_path / "z.pt").exists()
    pytest.importorskip("safetensors")
    from safetensors import safe_open
    engine.export.export_checkpoint(tmp_path / "zoneout.npz", tmp_path / "z.safetensors", "safetensors")
    with safe_open(tmp_path / "z.safetensors", "np") as file:
        metadata = file.metadata()
    assert (metadata["zoneout"], metadata["dropout"]) == ("0.25", "0.0")


def test_old_checkpoints_load_with_rates_zero(tmp_path):
    model = engine.Model(cell="gru", hidden_size=4, num_layers=2)
    engine.save(tmp_path / "new.npz", model)
    with np.load(tmp_path / "new.npz") as archive:
        arrays = dict(archive)
    metadata = json.loads(str(arrays["metadata"]))
    for name in ("dropout", "recurrent_dropout", "zoneout"):
        del metadata["model"][name]  # as written before these options existed
    arrays["metadata"] = np.array(json.dumps(metadata))
    np.savez(tmp_path / "old.npz", **arrays)
    loaded, _ = engine.load(tmp_path / "old.npz")
    assert (loaded.dropout, loaded.recurrent_dropout, loaded.zoneout) == (0.0, 0.0, 0.0)
    assert np.array_equal(loaded.params, model.params)


def test_cli_trains_with_the_rates_and_info_shows_them(tmp_path):
    from cli import main
    from click.testing import CliRunner

    t = np.arange(300)
    np.savetxt(tmp_path / "s.csv", np.c_[np.sin(t / 5), np.cos(t / 7)], delimiter=",", header="a,b", comments="")
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(tmp_path / "s.csv"), "--targets", "a", "--hidden", "4", "--layers", "2",
                                  "--epochs", "1", "--k1", "20", "--dropout", "0.2", "--recurrent-dropout", "0.1",
                                  "--zoneout", "0.1", "-q", "-o", str(tmp_path / "m.npz")])
    assert result.exit_code == 0, result.output
    model, _ = engine.load(tmp_path / "m.npz")
    assert (model.dropout, model.recurrent_dropout, model.zoneout) == (0.2, 0.1, 0.1)
    info = runner.invoke(main, ["info", str(tmp_path / "m.npz")])
    assert "Regularisation (training only): dropout 0.2, recurrent dropout 0.1, zoneout 0.1" in info.output
    refused = runner.invoke(main, ["train", str(tmp_path / "s.csv"), "--targets", "a", "--cell", "rnn",
                                   "--zoneout", "0.1", "-o", str(tmp_path / "r.npz")])
    assert refused.exit_code == 2 and refused.output.startswith("Error: zoneout applies to cells 'lstm' and 'gru'")
    assert not (tmp_path / "r.npz").exists()


def test_the_overhead_benchmark_runs(capsys):
    """python -m bench.regularisation with one tiny round (a smoke test: no timing is checked)."""
    from bench.regularisation import VARIANTS, main

    main(["--config", "tiny", "--rounds", "1", "--updates", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == list(VARIANTS)
    assert lines[1].endswith("x1.000")


@pytest.mark.parametrize("bidirectional", [False, True], ids=["one-direction", "bidirectional"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("rates", [dict(dropout=0.1), dict(recurrent_dropout=0.1), dict(zoneout=0.1),
                                   dict(dropout=0.1, recurrent_dropout=0.1, zoneout=0.1)],
                         ids=["dropout", "recurrent", "zoneout", "all"])
def test_the_memory_estimate_counts_the_mask_buffers(cell, rates, bidirectional):
    """The estimate equals the workspace allocated, each direction's masks included."""
    from engine import footprint
    from engine.workspace import Workspace

    if cell == "rnn":
        if set(rates) == {"zoneout"}:
            pytest.skip("zoneout does not apply to the RNN")
        rates = dict(rates, zoneout=0.0)
    model = engine.Model(cell=cell, input_size=3, hidden_size=5, output_size=2, num_layers=3, dtype="float64",
                         bidirectional=bidirectional, **rates)
    flags = (model.dropout > 0, model.recurrent_dropout > 0, model.zoneout > 0)
    allocated = Workspace(model, 7, 4).nbytes
    shape = dict(bidirectional=bidirectional, input_size=3)
    assert footprint.workspace_bytes(cell, 5, 2, 3, 7, 4, 8, flags, **shape) == allocated
    assert footprint.workspace_bytes(cell, 5, 2, 3, 7, 4, 8, **shape) < allocated
    assert footprint.chunk_bytes(cell, 3, 5, 2, 3, 7, 4, 1, 8, model.params.nbytes, masks=flags,
                                 bidirectional=bidirectional) == allocated


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_float32_kernels_with_masks_follow_the_reference(cell):
    """The float32 specialisations with every mask (all options, two layers): within float32
    rounding of the float64 reference."""
    case = _masked_case((cell, "tanh"), 2, "all")
    model = engine.Model(cell=cell, input_size=3, hidden_size=4, output_size=2, num_layers=2, dtype="float32",
                         **option_rates((cell, "tanh"), "all"))
    model.load_state_dict(case["params"])
    masks = ChunkMasks(*(None if mask is None else mask.astype(np.float32) for mask in case["masks"]))
    x, y = case["x"].astype(np.float32), case["y"].astype(np.float32)
    parts = tuple(part.astype(np.float32) for part in _parts(case["state"]))
    state = parts if cell == "lstm" else parts[0]
    loss, grads = engine.loss_and_grad(model, x, y, "mse", state, case["resets"], masks=masks)
    expected_loss, expected = naive.loss_and_grad(model.state_dict(), x, y, cell, "mse", state, "tanh",
                                                  case["resets"], masks=SimpleNamespace(**_naive_masks(masks)))
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    for name, value in expected.items():
        assert grads[name].dtype == np.float32
        assert_close(grads[name], value, 1e-4, name)
