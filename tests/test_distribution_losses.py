"""Distribution losses (issue 29): "gaussian" (a mean and a raw scale per target) and
"quantile" (one output per target and level). Float64 central differences through
loss_and_grad with missing targets, the values against direct NumPy formulas (and torch's
GaussianNLLLoss when torch is installed), every gradient path of the Trainer against full
BPTT, training on a toy series, the checks of quantiles and shapes, checkpoints."""
import os

import numpy as np
import pytest

import engine
import naive
from conftest import assert_close_impl as assert_close
from engine.losses import MIN_SCALE, gaussian_scale, mean_loss, parameter_count, split_parameters
from kernels.head import gaussian_gradient, pinball_gradient
from test_gradcheck import assert_matches_central_differences

LEVELS = (0.1, 0.5, 0.9)
KINK_MARGIN = 1e-4  # pinball cases keep every |y - f| this far from the kink (EPS moves f ~1e-6)
CELLS = ["rnn", "lstm", "gru"]
# Read by Ray when it is imported (tests/test_distributed.py): keep its cluster on loopback.
os.environ.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"})


def settings(loss):
    """Keyword arguments of loss_and_grad / Trainer for `loss`."""
    return {"loss": loss, "quantiles": LEVELS if loss == "quantile" else None}


def make_problem(cell, loss, K=2, T=5, B=2, H=3, dtype="float64", seed=0, state=True):
    """A model with parameter_count(loss) * K outputs, x (T, B, 2), y (T, B, K) with about a
    quarter of the targets missing (never all) and a random initial state (or None)."""
    rng = np.random.default_rng(seed)
    P = parameter_count(loss, LEVELS)
    model = engine.Model(cell=cell, input_size=2, hidden_size=H, output_size=P * K, dtype=dtype, seed=seed)
    x = rng.standard_normal((T, B, 2)).astype(dtype)
    y = rng.standard_normal((T, B, K)).astype(dtype)
    y[rng.random(y.shape) < 0.25] = np.nan
    y[-1, 0, 0] = 0.5
    initial = None
    if state:
        h = 0.5 * rng.standard_normal((1, B, H))
        initial = (h, 0.5 * rng.standard_normal((1, B, H))) if cell == "lstm" else h
    return model, x, y, initial


def pinball_case(cell, seed=0):
    """A quantile problem whose every forecast is KINK_MARGIN away from its target."""
    for attempt in range(50):
        model, x, y, state = make_problem(cell, "quantile", seed=seed + attempt)
        y_hat, _ = model.forward(x, state)
        forecasts = y_hat.reshape(y.shape[:2] + (len(LEVELS), y.shape[2]))
        distance = np.abs(forecasts - y[:, :, None, :])
        if np.nanmin(distance) > KINK_MARGIN:
            return model, x, y, state
    pytest.fail("no pinball case away from the kinks in 50 seeds")


def flat(model, grads):
    """The parameter gradients of loss_and_grad in the flat buffer's layout."""
    return np.concatenate([np.asarray(grads[name]).ravel() for name in model.layout.shapes])


# ------------------------------------------------------------------ gradients

@pytest.mark.parametrize("loss", ["gaussian", "quantile"])
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_central_differences(cell, loss):
    model, x, y, state = pinball_case(cell) if loss == "quantile" else make_problem(cell, loss)
    assert np.isnan(y).any() and not np.isnan(y).all()
    value, analytic = engine.loss_and_grad(model, x, y, state=state, **settings(loss))
    assert np.isfinite(value)

    def loss_of():
        return engine.loss_and_grad(model, x, y, state=state, **settings(loss))[0]

    assert_matches_central_differences(model, state, loss_of, analytic, min_scale=1e-3)


def kernel_loss(loss, y_hat, y):
    """(loss, dL/dy_hat, count) of the training kernel over every row."""
    rows = y.shape[0] * y.shape[1]
    dy = np.full((rows, y_hat.shape[-1]), np.nan)
    arguments = (dy, y_hat.reshape(rows, -1), y.reshape(rows, -1), 0, 0)
    value, count = (gaussian_gradient(*arguments) if loss == "gaussian"
                    else pinball_gradient(*arguments, np.array(LEVELS)))
    return value, dy.reshape(y_hat.shape), count


@pytest.mark.parametrize("loss", ["gaussian", "quantile"])
def test_loss_and_gradient_equal_the_formulas(loss):
    """The kernel and mean_loss (evaluation) give the written-out loss of tests/naive.py;
    the kernel's dL/dy_hat is the formula's, zero where a target is missing."""
    model, x, y, state = make_problem("gru", loss, K=3, T=6, B=3)
    y_hat, _ = model.forward(x, state)
    y_hat[..., -1] = [[-40.0, 0.0, 35.0]] * 6  # raw scales far out on both sides (gaussian)
    expected, expected_grad = naive.loss_value_and_dy(loss, y_hat, y, LEVELS)
    value, dy, count = kernel_loss(loss, y_hat, y)
    assert count == np.isfinite(y).sum()
    assert_close(value, expected, 1e-13, "kernel loss")
    assert_close(dy, expected_grad, 1e-13, "kernel dL/dy_hat")
    assert_close(mean_loss(loss, y_hat, y, settings(loss)["quantiles"]), expected, 1e-13, "mean_loss")


@pytest.mark.parametrize("loss", ["gaussian", "quantile"])
@pytest.mark.parametrize("cell", CELLS)
def test_loss_and_grad_equals_the_numpy_reference(cell, loss):
    model, x, y, state = make_problem(cell, loss, K=2, T=6, B=3)
    value, grads = engine.loss_and_grad(model, x, y, state=state, **settings(loss))
    expected_value, expected = naive.loss_and_grad(model.state_dict(), x, y, cell, loss, state, quantiles=LEVELS)
    assert_close(value, expected_value, 1e-12, "loss")
    for name, grad in expected.items():
        assert_close(grads[name], grad, 1e-10, name)


def test_gaussian_equals_torch_gaussian_nll():
    torch = pytest.importorskip("torch")
    model, x, y, state = make_problem("lstm", "gaussian", K=2, T=6, B=3)
    value, _ = engine.loss_and_grad(model, x, y, loss="gaussian", state=state)
    y_hat, _ = model.forward(x, state)
    mask = np.isfinite(y)
    parts = split_parameters(y_hat, "gaussian")
    nll = torch.nn.GaussianNLLLoss(full=False, reduction="mean")
    expected = nll(torch.from_numpy(parts["mean"][mask]), torch.from_numpy(y[mask]),
                   torch.from_numpy(parts["scale"][mask] ** 2)).item()
    assert_close(value, expected, 1e-13, "loss")


def test_gaussian_is_stable_for_large_raw_scales():
    """softplus(r) for |r| in the hundreds: no overflow, sigma = r + MIN_SCALE above and
    MIN_SCALE below, and the gradient finite."""
    raw = np.array([[-800.0, -40.0, 40.0, 800.0]])
    np.testing.assert_allclose(gaussian_scale(raw), [[MIN_SCALE, MIN_SCALE + np.exp(-40.0), 40.0 + MIN_SCALE,
                                                      800.0 + MIN_SCALE]], rtol=1e-15)
    y_hat = np.concatenate([np.zeros((1, 4)), raw], axis=1)[None]  # (1, 1, 8): K = 4
    value, dy, count = kernel_loss("gaussian", y_hat, np.full((1, 1, 4), 0.5))
    sigma = gaussian_scale(raw)
    assert count == 4 and np.isfinite(value) and np.isfinite(dy).all()
    assert_close(value, np.mean(np.log(sigma) + 0.125 / sigma ** 2), 1e-14, "loss")
    assert dy[0, 0, 4] == 0.0 and dy[0, 0, 7] > 0  # the raw scale's gradient: sigmoid(r) dL/dsigma


def test_pinball_subgradient_at_the_target_is_minus_q():
    """At y == f the kernel takes q - 1{y < f} = q: dL/df = -q / (Q * count)."""
    y = np.array([[[0.25, -1.0]]])
    y_hat = np.tile(y, (1, 1, len(LEVELS)))  # every level forecasts its target exactly
    value, dy, count = kernel_loss("quantile", y_hat, y)
    assert value == 0.0 and count == 2
    np.testing.assert_array_equal(dy[0, 0], -np.repeat(LEVELS, 2) / (len(LEVELS) * 2))


# ------------------------------------------------------------------ the Trainer

def one_update(model, x, y, loss, **options):
    """The parameters after one SGD step (lr 0.5, no clipping) of full BPTT over x, y."""
    trainer = engine.Trainer(model, optimizer=engine.optim.SGD(lr=0.5), clip_norm=None, k1=None,
                             **settings(loss), **options)
    trainer.fit(x, y)
    assert trainer.step == 1
    return model.params


@pytest.mark.parametrize("options", [dict(shards=2), dict(memory="sqrt"), dict(split=2), dict(gradient="rtrl"),
                                     dict(diagnostics=True)],
                         ids=["shards", "recompute", "split", "rtrl", "diagnostics"])
@pytest.mark.parametrize("loss", ["gaussian", "quantile"])
def test_every_gradient_path_gives_full_bptt(loss, options):
    """Batch shards, recomputation, hidden blocks and RTRL make the same update as
    loss_and_grad's gradient (each combines or divides by the counts its own way)."""
    model, x, y, _ = make_problem("lstm", loss, K=2, T=8, B=4, H=4, state=False)
    _, grads = engine.loss_and_grad(model, x, y, **settings(loss))
    expected = model.params - 0.5 * flat(model, grads)
    assert_close(one_update(model, x, y, loss, **options), expected, 1e-12, "parameters")


@pytest.mark.parametrize("loss", ["gaussian", "quantile"])
def test_fit_lowers_the_loss_on_a_toy_series(loss):
    """A noisy sine, one step ahead: the loss on the series falls with training, and the
    evaluation is the loss the trainer computes."""
    rng = np.random.default_rng(0)
    series = np.sin(np.arange(81) / 3) + 0.1 * rng.standard_normal(81)
    x, y = series[:-1].reshape(40, 2, 1, order="F"), series[1:].reshape(40, 2, 1, order="F")
    model = engine.Model(cell="gru", input_size=1, hidden_size=4, output_size=parameter_count(loss, LEVELS), seed=0)
    trainer = engine.Trainer(model, optimizer="adam", lr=0.05, k1=10, **settings(loss))
    before = trainer.evaluate(x, y)
    history = trainer.fit(x, y, epochs=8)
    after = trainer.evaluate(x, y)
    assert after < before - 0.15, (before, after)  # (a gaussian NLL may go below 0)
    assert history.epochs[-1]["loss"] < history.epochs[0]["loss"]
    y_hat, _ = model.forward(x.astype(np.float32))
    assert after == mean_loss(loss, y_hat, y.astype(np.float32), settings(loss)["quantiles"])


def test_quantile_outputs_learn_their_levels():
    """Trained (full batch) on noise with no signal in the inputs, the three outputs settle
    on the noise's empirical quantiles, each level in its own block."""
    rng = np.random.default_rng(1)
    y = rng.standard_normal((200, 2, 1))
    model = engine.Model(cell="rnn", input_size=1, hidden_size=4, output_size=3, seed=0)
    trainer = engine.Trainer(model, loss="quantile", quantiles=LEVELS, optimizer="adam", lr=0.05, k1=None,
                             clip_norm=None)
    trainer.fit(np.zeros_like(y), y, epochs=100)
    y_hat, _ = model.forward(np.zeros_like(y, dtype=np.float32))
    np.testing.assert_allclose(y_hat[-1, 0], np.quantile(y, LEVELS), atol=0.05)  # the state's fixed point


# ------------------------------------------------------------------ checks

@pytest.mark.parametrize("quantiles, fragment", [
    (None, "loss 'quantile' needs quantiles"),
    ([], "non-empty"),
    ([[0.1, 0.9]], "non-empty list"),
    ([0.0, 0.5], "in (0, 1)"),
    ([0.5, 1.0], "in (0, 1)"),
    ([0.5, float("nan")], "in (0, 1)"),
    ([0.9, 0.1], "increasing order"),
    ([0.5, 0.5], "not repeat"),
    (["a"], "real numbers"),
    ([True, False], "real numbers"),
])
def test_bad_quantiles_are_refused(quantiles, fragment):
    model = engine.Model(cell="gru", input_size=1, hidden_size=4, output_size=2)
    with pytest.raises((ValueError, TypeError), match="quantiles") as caught:
        engine.Trainer(model, loss="quantile", quantiles=quantiles)
    assert fragment in str(caught.value)


def test_quantiles_refused_for_other_losses_and_outputs_checked():
    model = engine.Model(cell="gru", input_size=1, hidden_size=4, output_size=3)
    for loss in ("mse", "gaussian", "cross_entropy"):
        with pytest.raises(ValueError, match="quantiles apply to loss 'quantile' only"):
            engine.Trainer(model, loss=loss, quantiles=LEVELS[:1])
    with pytest.raises(ValueError, match="needs a model with 2 outputs per target .* multiple of 2; got 3"):
        engine.Trainer(model, loss="gaussian")
    with pytest.raises(ValueError, match="needs a model with 2 outputs per target .* multiple of 2; got 3"):
        engine.Trainer(model, loss="quantile", quantiles=(0.25, 0.75))
    with pytest.raises(ValueError, match="loss gaussian needs a model with 2 outputs per target "
                                         r"\(a mean and a scale\): y has 3 target columns, so output_size must be 6"):
        engine.loss_and_grad(engine.Model(cell="gru", input_size=1, hidden_size=4, output_size=4),
                             np.zeros((3, 1, 1)), np.zeros((3, 1, 3)), loss="gaussian")
    with pytest.raises(ValueError, match=r"y must have shape \(3, 1, 2\) \(T, B, output_size / 2\)"):
        engine.loss_and_grad(engine.Model(cell="gru", input_size=1, hidden_size=4, output_size=4),
                             np.zeros((3, 1, 1)), np.zeros((3, 1)), loss="gaussian")


def test_split_parameters_reads_the_blocks():
    K = 2
    y_hat = np.arange(6.0).reshape(1, 1, 3 * K)
    quantiles = split_parameters(y_hat[..., ::-1], "quantile", LEVELS)["quantiles"]
    assert quantiles.shape == (1, 1, 3, K)
    np.testing.assert_array_equal(quantiles[0, 0], [[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]])  # sorted along Q
    gaussian = split_parameters(y_hat[..., :4], "gaussian")
    np.testing.assert_array_equal(gaussian["mean"], y_hat[..., :2])
    np.testing.assert_allclose(gaussian["scale"], np.log1p(np.exp(y_hat[..., 2:4])) + MIN_SCALE, rtol=1e-15)
    np.testing.assert_array_equal(split_parameters(y_hat, "mse")["mean"], y_hat)
    with pytest.raises(ValueError, match="needs 3 outputs per target; got 4"):
        split_parameters(y_hat[..., :4], "quantile", LEVELS)


# ------------------------------------------------------------------ checkpoints

@pytest.mark.parametrize("loss", ["gaussian", "quantile"])
def test_checkpoint_round_trip_and_resume_are_bit_exact(tmp_path, loss):
    """Saved after one epoch, reloaded and trained on: the same parameters, optimizer
    state and history as training straight on, and the loss's settings kept."""
    model, x, y, _ = make_problem("gru", loss, K=1, T=20, B=2, H=4, dtype="float32", state=False)
    trainer = engine.Trainer(model, k1=5, shards=2, **settings(loss))
    trainer.fit(x, y)
    trainer.partial_fit(x[:7], y[:7])
    path = tmp_path / "run.npz"
    engine.save(path, model, trainer)
    loaded_model, loaded = engine.load(path)
    assert (loaded.loss, loaded.quantiles) == (loss, settings(loss)["quantiles"])
    assert loaded.config == trainer.config
    for run in (trainer, loaded):
        run.partial_fit(x[7:], y[7:])
        run.fit(x, y)
    np.testing.assert_array_equal(loaded_model.params, model.params)
    for key, value in trainer.optimizer_state.items():
        np.testing.assert_array_equal(loaded.optimizer_state[key], value)
    assert loaded.history.updates == trainer.history.updates


def test_checkpoint_with_bad_quantiles_is_refused(tmp_path):
    model, x, y, _ = make_problem("gru", "quantile", K=1, T=6, B=1, H=4, dtype="float32", state=False)
    trainer = engine.Trainer(model, k1=3, **settings("quantile"))
    trainer.fit(x, y)
    path = tmp_path / "run.npz"
    engine.save(path, model, trainer)
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["metadata"] = np.array(str(arrays["metadata"]).replace('"quantiles": [0.1, 0.5, 0.9]',
                                                                  '"quantiles": [0.5, 0.1, 0.9]'))
    np.savez(path, **arrays)
    with pytest.raises(engine.CheckpointError, match="quantiles must be in increasing order"):
        engine.load(path)


# ------------------------------------------------------------------ Ray

@pytest.fixture(scope="module")
def ray_cluster():
    """One node of two CPUs on 127.0.0.1, this process connected."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args=dict(num_cpus=2, node_ip_address="127.0.0.1",
                                                              include_dashboard=False))
    try:
        ray.init(address=nodes.address, log_to_driver=False)
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()


def test_ray_trainer_is_bit_identical_to_one_machine(ray_cluster):
    """The quantile levels travel to the workers: the same parameters and losses as
    Trainer(shards=2)."""
    from engine.distributed import RayTrainer

    model, x, y, _ = make_problem("gru", "quantile", K=1, T=20, B=3, H=4, dtype="float32", state=False)
    options = dict(k1=5, lr=0.05, **settings("quantile"))
    local = engine.Trainer(engine.Model(**model.config), shards=2, **options)
    local.fit(x, y, epochs=2)
    with RayTrainer(engine.Model(**model.config), workers=2, cpus_per_worker=1, **options) as distributed:
        distributed.fit(x, y, epochs=2)
    assert distributed.step == local.step > 0
    np.testing.assert_array_equal(distributed.model.params, local.model.params)
    assert [r["loss"] for r in distributed.history.updates] == [r["loss"] for r in local.history.updates]
