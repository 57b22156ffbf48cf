"""The engine's training step phase by phase: forward, backward (incl. the loss), clip,
optimizer step. Each phase runs on the state its predecessors leave (setup, not timed)."""
import numpy as np

from bench.conftest import ROUNDS, warmed_up


def _engine(benchmark, config, phase):
    engine = warmed_up("engine", config)
    engine.phase_step()  # warm-up of the phase path; fills the workspace and gradient
    benchmark.group = f"phases {config.name}"
    benchmark.extra_info["phase"] = phase
    return engine


def test_forward(benchmark, config):
    engine = _engine(benchmark, config, "forward")
    benchmark.pedantic(engine.forward, rounds=ROUNDS, warmup_rounds=1)


def test_backward(benchmark, config):
    engine = _engine(benchmark, config, "backward")
    # backward overwrites the gate cache with its gradients: a fresh forward before each round
    loss = benchmark.pedantic(engine.backward, setup=engine.forward, rounds=ROUNDS, warmup_rounds=1)
    assert np.isfinite(loss)


def test_clip(benchmark, config):
    engine = _engine(benchmark, config, "clip")
    grad = engine.grad
    unclipped = grad.copy()

    def restore():  # clipping scales in place: each round clips the same gradient
        grad[...] = unclipped

    norm = benchmark.pedantic(engine.clip, setup=restore, rounds=ROUNDS, warmup_rounds=1)
    assert np.isclose(norm, np.linalg.norm(unclipped.astype(np.float64)), rtol=1e-5)


def test_optimize(benchmark, config):
    engine = _engine(benchmark, config, "optimize")
    benchmark.pedantic(engine.optimize, rounds=ROUNDS, warmup_rounds=1)
