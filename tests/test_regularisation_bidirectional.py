"""Dropout, recurrent dropout and zoneout in bidirectional layers (docs/training.md,
"Regularisation" and "Bidirectional layers"; every rate 0 reproducing the bidirectional
engine of before them: test_rate0_recordings.py): dropout on each layer's 2H output but the
top one's, recurrent dropout and zoneout per direction with each direction's own masks.
The kernels against tests/naive.py's bidirectional_forward with the same masks, float64
central differences with the masks fixed, zoneout's expectation at inference, the drawn
masks' shapes and training with them (reproducible, the same across batch shards)."""
from types import SimpleNamespace

import numpy as np
import pytest

import engine
import naive
from conftest import RATE, VARIANTS, option_cases, option_rates
from conftest import assert_close_impl as assert_close
from conftest import assert_equals_stacked_torch, make_case_impl
from engine.bptt import forward_chunk, state_after
from engine.masks import ChunkMasks, draw_masks
from engine.workspace import Workspace
from test_gradcheck import assert_matches_central_differences


def _parts(state):
    return state if isinstance(state, tuple) else (state,)


def _masked_case(variant, num_layers, option, loss="mse", seed=0, T=5, B=3, H=4, O=2):
    """A bidirectional float64 model with the option's rates, data with resets, and masks
    drawn for it (one entry per layer and direction)."""
    cell, nonlinearity = variant
    case = make_case_impl(cell=cell, nonlinearity=nonlinearity, num_layers=num_layers, loss=loss, T=T, B=B, I=3,
                          H=H, O=O, seed=seed, bidirectional=True)
    model = engine.Model(cell=cell, input_size=3, hidden_size=H, output_size=O, num_layers=num_layers,
                         nonlinearity=nonlinearity, dtype="float64", bidirectional=True, **option_rates((cell,), option))
    model.load_state_dict(case["params"])
    rng = np.random.default_rng(seed + 7)
    case.update(model=model, resets=rng.random((T, B)) < 0.2, masks=draw_masks(model, T, B, rng))
    return case


def _naive_masks(masks):
    return SimpleNamespace(**masks._asdict())


@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("variant, option", list(option_cases(VARIANTS)),
                         ids=[f"{v[0]}-{v[1]}-{o}" for v, o in option_cases(VARIANTS)])
def test_kernels_with_masks_equal_the_naive_reference(variant, option, num_layers):
    """Both directions' kernels with the masks (and resets) against the NumPy reference:
    every step's output and the final state (2L, B, H)."""
    case = _masked_case(variant, num_layers, option)
    model, masks, x = case["model"], case["masks"], case["x"]
    acting = any(mask is not None and mask.size and (mask == 0).any() for mask in masks)
    assert acting or (option == "dropout" and num_layers == 1)  # one layer: no output below another
    T, B, _ = x.shape
    workspace = Workspace(model, T, B)
    forward_chunk(model, workspace, x, case["state"], case["resets"], masks=masks)
    expected, expected_final = naive.bidirectional_forward(case["params"], x, variant[0], case["state"], variant[1],
                                                           case["resets"], masks=_naive_masks(masks))
    assert_close(workspace.y_hat, expected, 1e-12, "y_hat")
    for part, wanted in zip(_parts(state_after(model, workspace, T)), _parts(expected_final)):
        assert part.shape == (2 * num_layers, B, 4)
        assert_close(part, wanted, 1e-12, "final state")


def test_each_direction_reads_its_own_masks():
    """Zeroing one direction's recurrent-dropout mask changes that direction's output half
    only (layer 0, read by the head through an identity-like split)."""
    case = _masked_case(("gru", "tanh"), 1, "recurrent", seed=1)
    model, x, T, B = case["model"], case["x"], 5, 3
    masks = case["masks"]
    outputs = []
    for direction in (None, 0, 1):
        keep_prev = masks.keep_prev.copy()
        if direction is not None:
            keep_prev[direction] = 0
        workspace = Workspace(model, T, B)
        forward_chunk(model, workspace, x, case["state"], masks=ChunkMasks(keep_prev=keep_prev))
        outputs.append(workspace.pairs[0].output.copy())
    base, forward_zeroed, reverse_zeroed = outputs
    H = model.hidden_size
    assert np.array_equal(forward_zeroed[:, :, H:], base[:, :, H:])
    assert not np.allclose(forward_zeroed[:, :, :H], base[:, :, :H])
    assert np.array_equal(reverse_zeroed[:, :, :H], base[:, :, :H])
    assert not np.allclose(reverse_zeroed[:, :, H:], base[:, :, H:])


TANH_VARIANTS = [("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh")]  # relu's kinks would need a margin


def _well_conditioned(variant, option, loss):
    """A 2-layer case whose every gradient tensor is clearly non-zero with its masks."""
    for seed in range(30):
        case = _masked_case(variant, 2, option, loss=loss, seed=seed, T=4, B=2, H=3, O=3)
        if loss == "cross_entropy":  # the label at the last step only: classification of the sequence
            case["y"][:-1] = -1
        _, grads = engine.loss_and_grad(case["model"], case["x"], case["y"], loss, case["state"], case["resets"],
                                        masks=case["masks"])
        if min(np.abs(g).max() for g in grads.values()) >= 1e-4:
            return case
    pytest.fail("no well-conditioned case in 30 seeds")


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"], ids=["every-step", "last-step"])
@pytest.mark.parametrize("variant, option", list(option_cases(TANH_VARIANTS)),
                         ids=[f"{v[0]}-{o}" for v, o in option_cases(TANH_VARIANTS)])
def test_masked_gradients_match_central_differences(variant, option, loss):
    """float64 central differences of the loss of a 2-layer bidirectional model with the
    masks fixed (and resets): every parameter, both directions', and the initial state."""
    case = _well_conditioned(variant, option, loss)
    model, x, y, state, resets, masks = (case[key] for key in ("model", "x", "y", "state", "resets", "masks"))
    _, analytic = engine.loss_and_grad(model, x, y, loss, state, resets, masks=masks)
    assert_matches_central_differences(
        model, state, lambda: engine.loss_and_grad(model, x, y, loss, state, resets, masks=masks)[0], analytic,
        min_scale=1e-4)


@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_zoneout_at_inference_is_its_expectation(cell, num_layers):
    """Model.forward of a bidirectional zoneout model: every unit of both directions keeps
    its previous value with weight p (the NumPy reference with keep arrays all p); its
    gradient without masks (the expectation's) passes central differences."""
    case = _masked_case((cell, "tanh"), num_layers, "zoneout")
    model, x, state, resets = case["model"], case["x"], case["state"], case["resets"]
    keep = np.full((2 * num_layers, 5, 3, 4), RATE)
    expectation = SimpleNamespace(zone_h=keep, zone_c=keep)
    y_hat, final = model.forward(x, state, resets)
    expected, expected_final = naive.bidirectional_forward(case["params"], x, cell, state, resets=resets,
                                                           masks=expectation)
    assert_close(y_hat, expected, 1e-12, "y_hat")
    for part, wanted in zip(_parts(final), _parts(expected_final)):
        assert_close(part, wanted, 1e-12, "final state")
    plain = engine.Model(cell=cell, input_size=3, hidden_size=4, output_size=2, num_layers=num_layers,
                         dtype="float64", bidirectional=True)
    plain.load_state_dict(case["params"])
    assert not np.allclose(plain.forward(x, state, resets)[0], y_hat)  # zoneout acts
    y = np.nan_to_num(case["y"])
    _, analytic = engine.loss_and_grad(model, x, y, "mse", state, resets)
    assert_matches_central_differences(model, state, lambda: engine.loss_and_grad(model, x, y, "mse", state,
                                                                                  resets)[0], analytic)


def test_drawn_masks_are_per_layer_and_direction():
    model = engine.Model(cell="lstm", hidden_size=5, num_layers=3, dtype="float64", bidirectional=True,
                         dropout=0.3, recurrent_dropout=0.2, zoneout=0.1)
    masks = draw_masks(model, 7, 4, np.random.default_rng(0))
    assert masks.drop.shape == (4, 7, 4, 5) and masks.keep_prev.shape == (6, 4, 5)
    assert masks.zone_h.shape == masks.zone_c.shape == (6, 7, 4, 5)
    assert draw_masks(engine.Model(cell="gru", num_layers=2, bidirectional=True), 5, 2,
                      np.random.default_rng(0)) is None
    x, y = np.zeros((7, 4, 1)), np.zeros((7, 4, 1))
    one_way = draw_masks(engine.Model(cell="lstm", hidden_size=5, num_layers=3, dtype="float64", dropout=0.3,
                                      recurrent_dropout=0.2, zoneout=0.1), 7, 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"masks.drop must have shape \(4, 7, 4, 5\)"):
        engine.loss_and_grad(model, x, y, masks=one_way)


def _train(model_options, trainer_options=None, T=12, B=4):
    """A bidirectional classifier (labels at every step) trained on whole sequences."""
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((T, B, 2)), rng.integers(0, 2, size=(T, B))
    model = engine.Model(input_size=2, hidden_size=4, output_size=2, dtype="float64", seed=1, bidirectional=True,
                         **model_options)
    trainer = engine.Trainer(model, loss="cross_entropy", k1=None, lr=0.05, seed=3, **(trainer_options or {}))
    trainer.fit(x, y, epochs=3)
    return model


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_training_with_masks_is_reproducible_and_shards_agree(cell):
    options = dict(cell=cell, num_layers=2, dropout=0.3, recurrent_dropout=0.3, zoneout=0.0 if cell == "rnn" else 0.2)
    serial = _train(options, dict(shards=1))
    assert np.array_equal(serial.params, _train(options, dict(shards=1)).params)
    plain = _train(dict(options, dropout=0.0, recurrent_dropout=0.0, zoneout=0.0), dict(shards=1))
    assert not np.allclose(plain.params, serial.params, rtol=1e-4)
    sharded = _train(options, dict(shards=2))  # the same masks, sliced by streams
    assert_close(sharded.params, serial.params, 1e-9, "shards=2")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_inter_layer_dropout_equals_torch_with_the_same_mask(cell):
    """torch.nn.LSTM(num_layers=2, dropout=p, bidirectional=True) multiplies layer 0's 2H
    output by a mask before layer 1 reads it; with our two directions' masks side by side
    as that mask, two stacked bidirectional single-layer modules compute it. Loss and every
    gradient (both directions', the initial state's) equal ours in float64."""
    torch = pytest.importorskip("torch")
    case = _masked_case((cell, "tanh"), 2, "dropout", T=6, B=3, H=4)
    model, x, y, masks, state = case["model"], case["x"], case["y"], case["masks"], case["state"]
    loss, grads = engine.loss_and_grad(model, x, y, "mse", state, masks=masks)
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    layers = [module(3 if k == 0 else 8, 4, bidirectional=True, dtype=torch.float64) for k in range(2)]
    for k, layer in enumerate(layers):
        layer.load_state_dict({f"{kind}_l0{suffix}": torch.tensor(case["params"][f"{kind}_l{k}{suffix}"])
                               for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                               for suffix in ("", "_reverse")})
    head = torch.nn.Linear(8, 2, dtype=torch.float64)
    head.load_state_dict({"weight": torch.tensor(case["params"]["head.weight"]),
                          "bias": torch.tensor(case["params"]["head.bias"])})
    parts = [torch.tensor(part, requires_grad=True) for part in _parts(state)]

    def rows(k):  # layer k's two directions' initial state
        return tuple(part[2 * k:2 * k + 2] for part in parts) if cell == "lstm" else parts[0][2 * k:2 * k + 2]

    below, _ = layers[0](torch.tensor(x), rows(0))
    mask = torch.tensor(np.concatenate([masks.drop[0], masks.drop[1]], axis=2))  # (T, B, 2H)
    above, _ = layers[1](below * mask, rows(1))
    torch_loss = torch.nn.functional.mse_loss(head(above), torch.tensor(y))
    torch_loss.backward()
    assert (masks.drop == 0).any()
    assert_equals_stacked_torch(loss, grads, torch_loss, layers, head, parts)


def test_a_resumed_bidirectional_checkpoint_continues_bit_exactly(tmp_path):
    """The rates and the generator's state travel in the checkpoint: one epoch, save,
    load, one more epoch equals two epochs straight."""
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((8, 3, 2)), rng.integers(0, 2, size=(8, 3))
    options = dict(cell="lstm", input_size=2, hidden_size=4, output_size=2, num_layers=2, dtype="float64",
                   bidirectional=True, dropout=0.3, recurrent_dropout=0.2, zoneout=0.1)

    def fitted(epochs):
        model = engine.Model(**options)
        trainer = engine.Trainer(model, loss="cross_entropy", k1=None, lr=0.05, seed=6)
        trainer.fit(x, y, epochs=epochs)
        return model, trainer

    straight, _ = fitted(2)
    engine.save(tmp_path / "run.npz", *fitted(1))
    model, trainer = engine.load(tmp_path / "run.npz")
    assert model.config == straight.config
    trainer.fit(x, y, epochs=1)
    assert np.array_equal(model.params, straight.params)
    assert not np.array_equal(model.params, fitted(1)[0].params)
