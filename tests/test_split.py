"""The hidden-block plan (engine/split.py, kernels/blocks.py): the split kernels against the
serial ones (which tests/test_kernels.py checks against the NumPy reference), float64
central differences through them, the Trainer's explicit `split`, and its threads'
barrier (kernels/sync.py) when a worker fails."""
import threading

import numba
import numpy as np
import pytest

import engine
from conftest import assert_close_impl as assert_close
from conftest import make_case_impl
from engine.bptt import SERIAL
from engine.passes import RecomputePass, StoredPass
from engine.split import SplitLayers, block_order, check_split
from kernels.sync import wait

REL = 1e-12  # float64: the two plans differ only in the order of their sums


def _problem(variant, num_layers, T=7, B=5, H=8, seed=0, resets=True, skip=False):
    cell, nonlinearity = variant
    case = make_case_impl(cell=cell, nonlinearity=nonlinearity, num_layers=num_layers, loss="mse",
                          masked=True, T=T, B=B, I=3, H=H, O=2, seed=seed, skip=skip)
    rng = np.random.default_rng(seed)
    case["resets"] = rng.random((T, B)) < 0.25 if resets else None
    return case


def _run(case, layers, memory_segment=None, first_step=2):
    model, x = case["model"], case["x"]
    T, B, _ = x.shape
    grad = np.zeros_like(model.params)
    if memory_segment is None:
        shard_pass = StoredPass(model, T, B, grad, layers)
    else:
        shard_pass = RecomputePass(model, T, B, grad, memory_segment, layers)
    loss, count = shard_pass.run(x, case["y"], "mse", case["state"], first_step, case["resets"])
    return shard_pass, grad, loss, count


def _parts(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("resets", [False, True], ids=["no-resets", "resets"])
@pytest.mark.parametrize("blocks", [2, 4, 8])
@pytest.mark.parametrize("num_layers", [1, 3], ids=["L1", "L3"])
def test_split_pass_equals_the_serial_pass(variant, num_layers, blocks, resets):
    """Loss, target count, every gradient, the state after each step, dL/dh norms and
    dL/d(initial state): the same, for blocks of 4, 2 and 1 units."""
    case = _problem(variant, num_layers, resets=resets)
    model = case["model"]
    serial, serial_grad, serial_loss, serial_count = _run(case, SERIAL)
    split, split_grad, split_loss, split_count = _run(case, SplitLayers(model, blocks, 5))
    assert split_count == serial_count
    assert split_loss == pytest.approx(serial_loss, rel=REL)
    for name, view in model.layout.views(split_grad).items():
        assert_close(view, model.layout.views(serial_grad)[name], REL, name)
    for step in range(len(case["x"]) + 1):
        for a, b in zip(_parts(split.state_after(step)), _parts(serial.state_after(step))):
            assert_close(a, b, REL, f"state after {step} steps")
    assert_close(split.dh_norm_sq(), serial.dh_norm_sq(), REL, "dh norms")
    for a, b in zip(split.workspace.layers, serial.workspace.layers):
        assert_close(a.dh_state, b.dh_state, REL, "dL/dh_0")
        if model.cell == "lstm":
            assert_close(a.dc_state, b.dc_state, REL, "dL/dc_0")


def test_buffers_reused_across_runs_keep_nothing(variant):
    """A second run on other data equals a fresh serial run (no state left in scratch)."""
    case = _problem(variant, 2)
    layers = SplitLayers(case["model"], 2, 5)
    shard_pass, grad, _, _ = _run(case, layers)
    other = _problem(variant, 2, seed=3)
    other["model"] = case["model"]
    shard_pass.run(other["x"], other["y"], "mse", other["state"], 0, other["resets"])
    _, expected, _, _ = _run(other, SERIAL, first_step=0)
    assert_close(grad, expected, REL, "gradient of the second run")


def test_recomputation_with_split_layers_equals_stored_serial(variant):
    case = _problem(variant, 2)
    _, expected, loss, _ = _run(case, SERIAL)
    _, grad, split_loss, _ = _run(case, SplitLayers(case["model"], 2, 5), memory_segment=3)
    assert split_loss == pytest.approx(loss, rel=REL)
    assert_close(grad, expected, REL, "gradient")


def test_linear_path_split_and_recomputed_equal_serial(variant):
    """A model with the linear path (skip.weight drawn at random): hidden blocks, segments
    recomputed, and both, give the serial stored pass's loss and every gradient."""
    case = _problem(variant, 2, skip=True)
    model = case["model"]
    _, expected, loss, _ = _run(case, SERIAL)
    assert np.abs(model.layout.views(expected)["skip.weight"]).max() > 1e-3
    for layers, segment in ((SplitLayers(model, 4, 5), None), (SERIAL, 3), (SplitLayers(model, 2, 5), 3)):
        _, grad, other_loss, _ = _run(case, layers, memory_segment=segment)
        assert other_loss == pytest.approx(loss, rel=REL)
        for name, view in model.layout.views(grad).items():
            assert_close(view, model.layout.views(expected)[name], REL, f"{name}, {layers}, segment {segment}")


@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
def test_split_gradients_match_central_differences(variant, num_layers):
    """Every parameter entry perturbed by +-1e-6 through the split kernels (2 blocks of 2)."""
    case = _problem(variant, num_layers, T=4, B=2, H=4, resets=False)
    model = case["model"]
    layers = SplitLayers(model, 2, 2)
    _, grad, _, _ = _run(case, layers, first_step=0)
    scratch = np.zeros_like(model.params)
    probe = StoredPass(model, 4, 2, scratch, layers)

    def loss():
        return probe.run(case["x"], case["y"], "mse", case["state"], 0)[0]

    eps = 1e-6
    numerical = np.empty_like(model.params)
    for index in range(model.params.size):
        saved = model.params[index]
        model.params[index] = saved + eps
        up = loss()
        model.params[index] = saved - eps
        down = loss()
        model.params[index] = saved
        numerical[index] = (up - down) / (2 * eps)
    for name, view in model.layout.views(grad).items():
        assert np.abs(view).max() > 1e-4, f"{name}: gradient too small to check"
        assert_close(view, model.layout.views(numerical)[name], 1e-6, name)


def test_block_order_groups_each_blocks_gates():
    """G=4 gates of H=6 units in 3 blocks: block k holds i, f, g, o of units 2k, 2k + 1."""
    order = block_order(4, 6, 3)
    assert sorted(order) == list(range(24))
    first_block = [gate * 6 + unit for gate in range(4) for unit in (0, 1)]
    assert list(order[:8]) == first_block


def test_bad_split_choices_are_refused():
    model = engine.Model("lstm", 2, 6, 1)
    with pytest.raises(ValueError, match="not a multiple"):
        check_split(model, 4)
    with pytest.raises(ValueError, match="cannot be combined"):
        check_split(model, 2, shards=2)
    with pytest.raises(ValueError, match="split"):
        check_split(model, 0)
    with pytest.raises(ValueError, match="not a multiple"):
        engine.Trainer(model, split=4)
    assert check_split(model, 3, shards=1) == 3 and check_split(model, 1, shards=4) == 1


def _train(split, seed=0):
    model = engine.Model("gru", 2, 6, 1, num_layers=2, seed=seed)
    trainer = engine.Trainer(model, k1=4, k2=6, split=split)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((12, 3, 2)).astype(np.float32)
    y = rng.standard_normal((12, 3, 1)).astype(np.float32)
    trainer.fit(x, y, epochs=2)
    return model, trainer


def test_trainer_split_is_explicit_reproducible_and_recorded(tmp_path):
    model_a, trainer = _train(split=3)
    model_b, _ = _train(split=3)
    assert np.array_equal(model_a.params, model_b.params)  # bit for bit, for a given split
    plan = trainer.thread_plan
    assert plan["split"] == 3 and plan["shards"] == 1 and plan["chosen_by"] == "explicit"
    assert trainer.config["split"] == 3
    path = tmp_path / "model.ckpt"
    engine.save(path, model_a, trainer)
    _, loaded = engine.load(path)
    assert loaded.split == 3 and loaded.thread_plan == plan
    model_c, _ = _train(split=1)
    assert np.allclose(model_a.params, model_c.params, rtol=1e-4, atol=1e-5)  # float32 sums reordered


@numba.njit(nogil=True)
def _steps(worker, workers, sync, count, failing):
    """`count` steps meeting at the barrier; worker `failing` raises at its first step."""
    for _ in range(count):
        if worker == failing:
            raise ValueError("worker failed")
        if not wait(sync, workers):
            return


@pytest.mark.parametrize("failing", [0, 1], ids=["calling-thread", "pool-thread"])
def test_a_failing_worker_releases_the_others_and_its_error_is_raised(failing):
    """The others are waiting for the failed worker at their barrier: they must leave it
    (the abort flag), run must raise the error, and the next call must work."""
    layers = SplitLayers(engine.Model("lstm", 2, 4, 1), 2, 3)
    assert layers.workers == 2
    outcome = []

    def call(failing):
        try:
            layers.run(_steps, 10_000, failing)
            outcome.append(None)
        except ValueError as error:
            outcome.append(str(error))

    for expected, worker in (("worker failed", failing), (None, -1)):
        thread = threading.Thread(target=call, args=(worker,), daemon=True)
        thread.start()
        thread.join(timeout=60)
        assert not thread.is_alive(), "a worker is still waiting at the barrier"
        assert outcome.pop() == expected
