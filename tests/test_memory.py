"""Memory-bounded BPTT (Trainer(memory=...)): same updates as storing every step, less memory."""
import numpy as np
import pytest

import engine
from engine.passes import segment_length
from engine.trainer import Trainer

CELLS = [("lstm", "tanh"), ("gru", "tanh"), ("rnn", "relu")]


def _data(loss, T=61, B=3, rng=None):
    rng = rng or np.random.default_rng(0)
    x = rng.standard_normal((T, B, 2))
    if loss == "mse":
        y = rng.standard_normal((T, B, 3))
        y[rng.random(y.shape) < 0.2] = np.nan  # missing targets stay masked per segment
    else:
        y = rng.integers(-1, 3, (T, B))
    return x, y


def _train(cell, nonlinearity, loss, memory, k1, k2, shards=1):
    model = engine.Model(cell, 2, 5, 3, num_layers=2, nonlinearity=nonlinearity, dtype="float64", seed=3)
    trainer = Trainer(model, loss=loss, optimizer=engine.optim.SGD(lr=0.05), k1=k1, k2=k2,
                      clip_norm=None, memory=memory, shards=shards, diagnostics=True)
    trainer.fit(*_data(loss), epochs=2)
    return model, trainer


@pytest.mark.parametrize("cell,nonlinearity", CELLS)
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("k1,k2", [(None, None), (20, 33)])
@pytest.mark.parametrize("memory", ["sqrt", 40_000])
def test_recomputation_gives_the_same_training(cell, nonlinearity, loss, k1, k2, memory):
    stored, stored_trainer = _train(cell, nonlinearity, loss, None, k1, k2)
    bounded, bounded_trainer = _train(cell, nonlinearity, loss, memory, k1, k2)
    # Only the order of the weight-gradient sums differs between the two.
    np.testing.assert_allclose(bounded.params, stored.params, rtol=0, atol=1e-12)
    for a, b in zip(stored_trainer.history.updates, bounded_trainer.history.updates):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-12)
        np.testing.assert_allclose(a["dh_norms"], b["dh_norms"], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np.asarray(bounded_trainer.state), np.asarray(stored_trainer.state), atol=1e-12)


def test_recomputation_with_shards_matches():
    stored, _ = _train("lstm", "tanh", "mse", None, None, None, shards=2)
    bounded, _ = _train("lstm", "tanh", "mse", "sqrt", None, None, shards=2)
    np.testing.assert_allclose(bounded.params, stored.params, rtol=0, atol=1e-12)


def test_memory_grows_like_sqrt_of_the_sequence():
    model = engine.Model("lstm", 1, 16, 1)
    sizes = {}
    for T in (1_000, 16_000):
        x = np.zeros((T, 2, 1), np.float32)
        for memory in (None, "sqrt"):
            trainer = Trainer(model, k1=None, memory=memory, shards=1)
            trainer.fit(x, x, epochs=1)
            sizes[T, memory] = trainer._chunks[T, 2].nbytes
    assert sizes[1_000, "sqrt"] < 0.1 * sizes[1_000, None]
    assert 12 < sizes[16_000, None] / sizes[1_000, None] <= 16.5  # linear in T
    assert sizes[16_000, "sqrt"] / sizes[1_000, "sqrt"] < 5  # about sqrt(16) = 4


def test_byte_budget_is_respected_and_too_small_budget_is_an_error():
    model = engine.Model("gru", 1, 8, 1)
    segment = segment_length(model, 1000, 4, 200_000)
    assert 1 <= segment < 1000
    trainer = Trainer(model, k1=None, memory=200_000, shards=1)
    trainer.fit(np.zeros((1000, 4, 1), np.float32), np.zeros((1000, 4, 1), np.float32))
    assert trainer._chunks[1000, 4].nbytes <= 200_000
    with pytest.raises(ValueError, match="memory=100 bytes is too small"):
        Trainer(model, k1=None, memory=100).fit(np.zeros((50, 4, 1)), np.zeros((50, 4, 1)))


@pytest.mark.parametrize("memory", ["lots", -5, 1.5])
def test_bad_memory_option(memory):
    with pytest.raises((ValueError, TypeError), match="memory"):
        Trainer(engine.Model("rnn", 1, 4, 1), memory=memory)
