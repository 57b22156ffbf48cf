"""Forward-mode gradients (docs/training.md, Learning without a window): exact RTRL against
full BPTT, the kernels against the plain NumPy RTRL of tests/naive.py."""
import numpy as np
import pytest

import engine
import naive
from conftest import VARIANTS, make_case_impl
from conftest import assert_close_impl as assert_close

REL = 1e-10  # float64 on both sides, relative to each tensor's largest entry


def variant_id(variant):
    return f"{variant[0]}-{variant[1]}" if variant[0] == "rnn" else variant[0]


def make_problem(cell, nonlinearity, num_layers, loss="mse", T=9, B=3, seed=0, skip=False):
    """A float64 model, x, y with about a third of the targets missing, and resets at two
    steps of some streams (the second stream twice). skip: the model has the linear path
    (its weight drawn at random)."""
    case = make_case_impl(cell=cell, nonlinearity=nonlinearity, num_layers=num_layers, loss=loss,
                          masked=True, T=T, B=B, I=2, H=3, O=2, dtype="float64", seed=seed,
                          random_state=False, skip=skip)
    resets = np.zeros((T, B), dtype=bool)
    resets[3, 1] = resets[6, 1] = resets[5, 2] = True
    return case["model"], case["x"], case["y"], resets


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_naive_rtrl_equals_full_bptt(variant, num_layers, loss):
    """The NumPy RTRL's gradient (one update at the end of the sequence) equals
    engine.loss_and_grad's full-BPTT gradient, with resets and missing targets."""
    model, x, y, resets = make_problem(*variant, num_layers, loss)
    value, grads = naive.rtrl_gradient(model.state_dict(), x, y, variant[0], loss, variant[1], resets)
    expected_value, expected = engine.loss_and_grad(model, x, y, loss, resets=resets)
    assert_close(value, expected_value, REL, "loss")
    for name in model.views:
        assert_close(grads[name], expected[name], REL, name)


def flat(model, grads):
    return np.concatenate([np.asarray(grads[name]).ravel() for name in model.layout.shapes])


def kernel_chunks(model, x, y, loss, resets, k1, shards=1):
    """engine.online.Rtrl over x in chunks of k1 steps from a zero state, the parameters
    fixed, its streams in `shards` threads: the count-weighted sum of the chunks' gradients
    (the whole sequence's mean)."""
    from engine.online import online_gradient
    B = x.shape[1]
    grad = np.zeros_like(model.params)
    rtrl = online_gradient("rtrl", model, B, grad, k1, None, shards)
    total, values, counts, state = np.zeros(model.params.shape), [], [], model.init_state(B)
    for start in range(0, len(x), k1):
        end = min(start + k1, len(x))
        value, count = rtrl.run(x[start:end], y[start:end], loss, state, resets[start:end])
        state = rtrl.state_after(end - start)
        total += count * grad.astype(np.float64)
        values.append(value)
        counts.append(count)
    return float(np.dot(values, counts) / sum(counts)), total / sum(counts), rtrl


def narrow_blocks(monkeypatch, width):
    """Rtrl's influence in blocks of `width` parameter columns (the default blocks hold
    most test models whole): blocks that cut through weight rows and a layer's
    parameters."""
    monkeypatch.setattr("engine.online.influence_blocks", lambda parameters, column_bytes:
                        (-(-parameters // width), width))


@pytest.mark.parametrize("width", [None, 7], ids=["default-blocks", "blocks-of-7"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_rtrl_kernel_equals_naive(variant, num_layers, loss, width, monkeypatch):
    """kernels/rtrl.py over one chunk of the whole sequence equals the NumPy RTRL, with the
    influence in the default column blocks or in blocks of 7 (the last one partly past P)."""
    if width is not None:
        narrow_blocks(monkeypatch, width)
    model, x, y, resets = make_problem(*variant, num_layers, loss)
    value, grad, _ = kernel_chunks(model, x, y, loss, resets, len(x))
    expected_value, expected = naive.rtrl_gradient(model.state_dict(), x, y, variant[0], loss, variant[1], resets)
    assert_close(value, expected_value, REL, "loss")
    assert_close(grad, flat(model, expected), REL, "gradient")


@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_rtrl_influence_carried_across_chunks(variant, num_layers):
    """Chunks of 4 steps (the last one short), the influence and state carried between
    them and the parameters fixed: the chunks' gradients add up to full BPTT's (a chunk
    of no counted target included)."""
    model, x, y, resets = make_problem(*variant, num_layers, T=10)
    y[4:8] = np.nan  # the second chunk counts nothing: the influence still moves on
    value, grad, _ = kernel_chunks(model, x, y, "mse", resets, 4)
    expected_value, expected = engine.loss_and_grad(model, x, y, resets=resets)
    assert_close(value, expected_value, REL, "loss")
    assert_close(grad, flat(model, expected), REL, "gradient")


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_rtrl_float32_close_to_float64(variant):
    """float32 kernels (their own tanh and sigmoid) agree with float64 to float32 noise."""
    model, x, y, resets = make_problem(*variant, 2)
    single = engine.Model(**{**model.config, "dtype": "float32"})
    single.load_state_dict(model.state_dict())
    _, expected, _ = kernel_chunks(model, x, y, "mse", resets, 4)
    _, grad, _ = kernel_chunks(single, x.astype(np.float32), y.astype(np.float32), "mse", resets, 4)
    assert_close(grad, expected, 1e-4, "float32 gradient")


@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_rtrl_shards_match_one_thread(variant, num_layers):
    """The streams in 2 and 3 shards (threads): each stream's influence is carried by one
    thread alone, so it is bit-identical to one thread's; the gradient, whose sum over
    the streams is grouped by shard, agrees to rounding and is bit-reproducible."""
    model, x, y, resets = make_problem(*variant, num_layers, T=10)
    value, grad, single = kernel_chunks(model, x, y, "mse", resets, 4)
    for shards in (2, 3):
        sharded_value, sharded_grad, sharded = kernel_chunks(model, x, y, "mse", resets, 4, shards)
        assert sharded.plan["shards"] == shards and sharded_value == value
        assert_close(sharded_grad, grad, REL, f"gradient, {shards} shards")
        for name, array in single.arrays().items():
            assert np.array_equal(sharded.arrays()[name], array), name
        assert np.array_equal(kernel_chunks(model, x, y, "mse", resets, 4, shards)[1], sharded_grad)


@pytest.mark.parametrize("shards", [1, 2])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_rtrl_with_the_linear_path_equals_full_bptt(variant, shards):
    """A model with the linear path: RTRL in chunks of 4 (the parameters fixed), its streams
    in one or two threads, gives full BPTT's gradient, skip.weight's included (immediate,
    like the head's)."""
    model, x, y, resets = make_problem(*variant, 2, T=10, skip=True)
    value, grad, _ = kernel_chunks(model, x, y, "mse", resets, 4, shards)
    expected_value, expected = engine.loss_and_grad(model, x, y, resets=resets)
    assert np.abs(expected["skip.weight"]).max() > 1e-3
    assert_close(value, expected_value, REL, "loss")
    assert_close(grad, flat(model, expected), REL, "gradient")


def test_uoro_linear_path_and_head_gradients_are_exact():
    """UORO estimates the recurrent parameters' gradient only: the head's and the linear
    path's, immediate, are BPTT's exactly."""
    from engine.online import online_gradient
    model, x, y, resets = make_problem("lstm", "tanh", 2, skip=True)
    grad = np.zeros_like(model.params)
    uoro = online_gradient("uoro", model, x.shape[1], grad, len(x), np.random.default_rng(0))
    uoro.run(x, y, "mse", model.init_state(x.shape[1]), resets)
    _, expected = engine.loss_and_grad(model, x, y, resets=resets)
    for name in ("head.weight", "head.bias", "skip.weight"):
        assert_close(model.layout.views(grad)[name], expected[name], REL, name)


# --------------------------------------------------------------------------- the Trainer

def trainer_for(model, gradient="rtrl", **options):
    settings = dict(optimizer=engine.optim.SGD(lr=0.5), clip_norm=None, gradient=gradient)
    return engine.Trainer(model, **{**settings, **options})


@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_trainer_rtrl_one_update_equals_full_bptt(variant, num_layers):
    """Trainer(gradient="rtrl", k1=None): one SGD update at the end of the sequence, with
    full BPTT's gradient (resets and missing targets included)."""
    model, x, y, resets = make_problem(*variant, num_layers)
    _, expected = engine.loss_and_grad(model, x, y, resets=resets)
    expected_params = model.params - 0.5 * flat(model, expected)
    history = trainer_for(model, k1=None).fit(x, y, resets=resets)
    assert len(history.updates) == 1
    assert_close(history.updates[0]["grad_norm"], np.linalg.norm(flat(model, expected)), REL, "grad_norm")
    assert_close(model.params, expected_params, REL, "parameters")


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_trainer_rtrl_partial_fit_carries_influence(variant):
    """Streaming pieces of 4, 3 and 3 steps, an update every 3 steps with the parameters
    held (SGD lr 0): the updates' gradients, weighted by their target counts, add up to
    full BPTT's over the whole stream; the influence crosses the calls like the state."""
    model, x, y, resets = make_problem(*variant, 2, T=10)
    _, expected = engine.loss_and_grad(model, x, y, resets=resets)
    trainer = trainer_for(model, optimizer=engine.optim.SGD(lr=0.0), k1=3)
    grads = []
    original = trainer._update
    trainer._update = lambda value, chunk: (grads.append(trainer.grad.copy()), original(value, chunk))[1]
    for start, end in ((0, 4), (4, 7), (7, 10)):
        trainer.partial_fit(x[start:end], y[start:end], resets=resets[start:end])
    chunks = [(0, 3), (3, 4), (4, 7), (7, 10)]
    counts = [np.count_nonzero(np.isfinite(y[a:b])) for a, b in chunks]
    assert len(grads) == 4 and all(counts)
    total = sum(count * grad for count, grad in zip(counts, grads)) / sum(counts)
    assert_close(total, flat(model, expected), REL, "gradient")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_trainer_rtrl_checkpoint_resumes_bit_exact(tmp_path, cell):
    """Save after one streaming piece (Adam, clipping), load, go on: the same parameters,
    state and influence, bit for bit, as without the interruption."""
    model, x, y, resets = make_problem(cell, "tanh", 2, T=10)
    options = dict(optimizer="adam", lr=0.01, clip_norm=0.5, k1=3)
    trainer = trainer_for(model, **options)
    trainer.partial_fit(x[:5], y[:5], resets=resets[:5])
    engine.checkpoint.save(tmp_path / "run.npz", model, trainer)
    trainer.partial_fit(x[5:], y[5:], resets=resets[5:])
    resumed_model, resumed = engine.checkpoint.load(tmp_path / "run.npz")
    assert resumed.gradient == "rtrl"
    resumed.partial_fit(x[5:], y[5:], resets=resets[5:])
    assert np.array_equal(resumed_model.params, model.params)
    for name, array in trainer._online.arrays().items():
        assert np.array_equal(resumed._online.arrays()[name], array), name
    for got, want in zip(np.atleast_1d(resumed.state), np.atleast_1d(trainer.state)):
        assert np.array_equal(got, want)
    trainer.reset_state()  # no state carried: no influence saved, and the file loads
    engine.checkpoint.save(tmp_path / "fresh.npz", model, trainer)
    assert engine.checkpoint.load(tmp_path / "fresh.npz")[1].state is None


@pytest.mark.parametrize("gradient", ["rtrl", "uoro"])
def test_trainer_online_shards(gradient):
    """Trainer(shards=2) runs the kernels on two threads, as its thread_plan records: the
    same run twice is bit-identical, and one thread's run agrees to rounding; without
    `shards` the plan is the model's (one shard for so small a model)."""
    model, x, y, resets = make_problem("lstm", "tanh", 2, T=10)

    def run(**options):
        copy = engine.Model(**model.config)
        trainer = trainer_for(copy, gradient=gradient, optimizer="adam", lr=0.01, k1=3, seed=1, **options)
        trainer.partial_fit(x, y, resets=resets)
        return copy.params, trainer.thread_plan

    params, plan = run(shards=2)
    assert plan["shards"] == 2 and plan["chosen_by"] == "explicit"
    assert np.array_equal(run(shards=2)[0], params)
    single, plan = run()
    assert plan["shards"] == 1 and plan["chosen_by"] == "model"
    assert_close(params, single, REL, "parameters, 2 shards against 1")


@pytest.mark.parametrize("gradient, hidden, shards", [("uoro", 16, 1), ("uoro", 32, 2), ("rtrl", 16, 2)])
def test_online_plan_takes_a_second_shard_only_where_it_pays(gradient, hidden, shards):
    """On 2 cores, 32 streams, chunks of 10 steps (bench.online's models): UORO's kernel at
    H = 16 is too short for a second thread's cost per chunk (measured on a quiet machine:
    1.04x), at H = 32 it gains (1.21x); RTRL's always does (1.9x)."""
    from engine.online import online_plan
    model = engine.Model("lstm", 1, hidden, 1, dtype="float32")
    plan = online_plan(gradient, model, 32, 10, cores=2)
    assert plan["shards"] == shards and plan["chosen_by"] == "model"
    assert (plan["modelled_speedup"] > 1) == (shards > 1)


@pytest.mark.parametrize("option", [dict(k2=8), dict(memory="sqrt"), dict(diagnostics=True), dict(split=3)],
                         ids=lambda o: next(iter(o)))
def test_trainer_rtrl_refuses_truncation_options(option):
    model, _, _, _ = make_problem("lstm", "tanh", 1)
    name = next(iter(option))
    with pytest.raises(ValueError, match=f"^{name} does not apply to gradient='rtrl'"):
        trainer_for(model, k1=4, **option)


def test_trainer_rtrl_memory_refused_with_advice(monkeypatch):
    """An influence past the memory available is refused before any training, with the
    figure and the advice to use uoro."""
    model, x, y, _ = make_problem("lstm", "tanh", 1)
    trainer = trainer_for(model, k1=4)
    before = model.params.copy()
    monkeypatch.setattr(engine.footprint, "available_bytes", lambda: 1000)
    with pytest.raises(engine.footprint.MemoryEstimateError, match="influence matrices .* needs about .*'uoro'"):
        trainer.fit(x, y)
    assert trainer._online is None and np.array_equal(model.params, before)


def test_cli_train_gradient_rtrl(tmp_path):
    """`bptt train --gradient rtrl` trains and `bptt info` shows the method; --gradient uoro
    with --shards 2 runs on two threads; --k2 with rtrl is refused in one line, exit 2,
    before anything is written."""
    from click.testing import CliRunner
    from cli import main
    steps = np.arange(120)
    (tmp_path / "sine.csv").write_text("value\n" + "\n".join(f"{v:.6f}" for v in np.sin(steps / 5)) + "\n")
    runner = CliRunner()
    common = [str(tmp_path / "sine.csv"), "--hidden", "4", "--epochs", "1", "--k1", "10", "--streams", "2"]
    result = runner.invoke(main, ["train", *common, "--gradient", "rtrl", "--output", str(tmp_path / "m.npz")])
    assert result.exit_code == 0, result.output
    info = runner.invoke(main, ["info", str(tmp_path / "m.npz")])
    assert "gradient rtrl, k1=10 k2=None" in info.output
    sharded = runner.invoke(main, ["train", *common, "--gradient", "uoro", "--shards", "2",
                                   "--output", str(tmp_path / "s.npz")])
    assert sharded.exit_code == 0, sharded.output
    assert engine.checkpoint.load(tmp_path / "s.npz")[1].thread_plan["shards"] == 2
    refused = runner.invoke(main, ["train", *common, "--gradient", "rtrl", "--k2", "20",
                                   "--output", str(tmp_path / "k2.npz")])
    assert refused.exit_code == 2
    assert refused.output.strip().splitlines() == [
        "Error: k2 does not apply to gradient='rtrl' (there is no truncation window); leave it unset"]
    assert not (tmp_path / "k2.npz").exists()


# --------------------------------------------------------------------------- UORO

UORO_BATCHES, UORO_COPIES = 20, 400


@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_uoro_is_unbiased(variant, num_layers):
    """UORO's estimate averages to the exact gradient (full BPTT's, resets and missing
    targets included). Each run holds 400 copies of the 3 streams, each copy with its own
    rank-one pair and signs, so its gradient is the mean of 400 independent estimates;
    20 runs (generator seeds 0..19, fixed) give the mean and its standard error per entry.
    Tolerance: every entry within 6 standard errors of the exact value (Student's t, 19
    degrees of freedom: about 1e-5 per entry), and the mean within 3% of the largest
    entry (relative to the tensor)."""
    from engine.online import online_gradient
    model, x, y, resets = make_problem(*variant, num_layers, T=7)
    _, expected = engine.loss_and_grad(model, x, y, resets=resets)
    expected = flat(model, expected)
    copies = (np.tile(x, (1, UORO_COPIES, 1)), np.tile(y, (1, UORO_COPIES, 1)), np.tile(resets, (1, UORO_COPIES)))
    B = copies[0].shape[1]
    estimates = []
    for seed in range(UORO_BATCHES):
        grad = np.zeros_like(model.params)
        uoro = online_gradient("uoro", model, B, grad, len(x), np.random.default_rng(seed))  # the plan's threads
        uoro.run(copies[0], copies[1], "mse", model.init_state(B), copies[2])
        estimates.append(grad.copy())
    estimates = np.array(estimates)
    mean = estimates.mean(axis=0)
    standard_error = estimates.std(axis=0, ddof=1) / np.sqrt(UORO_BATCHES)
    floor = 1e-9 * np.abs(expected).max()  # entries that are exactly 0 in every estimate
    assert np.all(np.abs(mean - expected) <= 6 * standard_error + floor), \
        f"largest deviation {np.max(np.abs(mean - expected) / (standard_error + floor)):.2f} standard errors"
    assert_close(mean, expected, 0.03, "mean of the estimates")
    assert standard_error.max() > 1e-4 * np.abs(expected).max()  # an estimate, not the exact value


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_trainer_uoro_reproducible_and_resumes_bit_exact(tmp_path, cell):
    """gradient="uoro": the same seed gives the same run bit for bit, another seed another
    run; a checkpoint mid-stream (the pairs and the generator saved) resumes bit-exact."""
    model, x, y, resets = make_problem(cell, "tanh", 2, T=10)

    def run(seed, save_to=None):
        copy = engine.Model(**model.config)
        trainer = trainer_for(copy, gradient="uoro", optimizer="adam", lr=0.01, k1=3, seed=seed)
        trainer.partial_fit(x[:5], y[:5], resets=resets[:5])
        if save_to is not None:
            engine.checkpoint.save(save_to, copy, trainer)
        trainer.partial_fit(x[5:], y[5:], resets=resets[5:])
        return copy.params

    first = run(1, tmp_path / "run.npz")
    assert np.array_equal(first, run(1)) and not np.array_equal(first, run(2))
    resumed_model, resumed = engine.checkpoint.load(tmp_path / "run.npz")
    assert resumed.gradient == "uoro" and resumed.seed == 1
    resumed.partial_fit(x[5:], y[5:], resets=resets[5:])
    assert np.array_equal(resumed_model.params, first)


def test_bench_online_quick_runs(tmp_path):
    """`python -m bench.online --quick` keeps working (not its timings): every figure is
    there and finite, the curves' PNG is written."""
    from bench.online import run
    result = run(quick=True, plot_path=tmp_path / "curves.png")
    (row,) = result["speed"]
    assert set(row["steps_per_s"]) == set(row["by_cpu_time"]["steps_per_s"]) == set(row["memory_bytes"]) == {
        "bptt", "rtrl", "uoro"}
    assert all(np.isfinite(value) and value > 0 for value in row["steps_per_s"].values())
    assert row["memory_bytes"]["rtrl"] > row["memory_bytes"]["uoro"]
    for rates in (row, row["by_cpu_time"]):
        assert 0 < rates["rtrl_gemm_share_of_sgemm_512"] and 0 < rates["rtrl_gemm_share_of_block_gemm"]
        assert rates["rtrl_state_product_share_of_sgemm_512"] == pytest.approx(
            2 * rates["rtrl_gemm_share_of_sgemm_512"])
    assert set(row["plan"]) == {"rtrl", "uoro"}
    assert all(plan["shards"] >= 1 and plan["steps_per_s"] > 0 for plan in row["plan"].values())
    assert set(result["task"]["final_error"]) == set(result["task"]["updates_to_target"])
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("gradient", ["rtrl", "uoro"])
def test_trainer_online_skip_restarts_overflowed_streams(gradient):
    """on_divergence="skip": an identity-initialised ReLU RNN fed huge inputs on stream 0
    overflows its state; that update is dropped, stream 0 restarts from a zero state and
    influence, stream 1 carries on, and the later updates are made."""
    model = engine.Model(cell="rnn", nonlinearity="relu", init="identity", input_size=1, hidden_size=4,
                         output_size=1, seed=0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 2, 1)).astype(np.float32)
    y = rng.standard_normal((16, 2, 1)).astype(np.float32)
    x[4:8, 0] = 3e38
    trainer = engine.Trainer(model, optimizer=engine.optim.SGD(lr=0.1), k1=4, clip_norm=None, gradient=gradient,
                             on_divergence="skip")
    trainer.fit(x, y)
    assert trainer.skipped == 1 and trainer.step == 3
    assert np.isfinite(model.params).all() and np.isfinite(trainer.state).all()
    assert all(np.isfinite(array).all() for array in trainer._online.arrays().values())


@pytest.mark.parametrize("shards", [1, 2])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_memory_estimates_are_the_buffers(cell, num_layers, dtype, shards):
    """engine/footprint.py's rtrl_bytes and uoro_bytes are the bytes Rtrl and Uoro hold,
    with their shards' scratch and gradients (RTRL's state Jacobians and UORO's random
    bits: those of one chunk of 5 steps)."""
    from engine.footprint import rtrl_bytes, uoro_bytes
    from engine.online import online_gradient
    model = engine.Model(cell, 3, 5, 2, num_layers=num_layers, dtype=dtype)
    sizes = (cell, 3, 5, 2, num_layers)
    grad = np.zeros_like(model.params)
    rtrl, uoro = (online_gradient(gradient, model, 4, grad, 5, np.random.default_rng(0), shards)
                  for gradient in ("rtrl", "uoro"))

    def held(online):  # its own arrays, and its shards' scratch and gradients (the first is grad's)
        found = [a for a in vars(online).values() if isinstance(a, np.ndarray)] + online.grads[1:]
        found += [a for arrays in online.scratch + getattr(online, "jacobians", []) for a in arrays]
        return sum(a.nbytes for a in {id(a): a for a in found}.values())

    assert held(rtrl) == rtrl_bytes(*sizes, 4, 5, model.dtype.itemsize, shards)
    bits = 5 * 4 * -(-np.prod(uoro.signs_shape) // 8)
    assert held(uoro) + bits == uoro_bytes(*sizes, 4, 5, model.dtype.itemsize, shards)
