"""The whole training step (forward, MSE, backward, clip, Adam) of every configuration,
for the engine and each installed peer."""
import pytest

from bench.conftest import ROUNDS, warmed_up


@pytest.mark.parametrize("impl", ["engine", "torch", "jax"])
def test_training_step(benchmark, config, impl):
    workload = warmed_up(impl, config)
    benchmark.group = f"step {config.name}"
    benchmark.extra_info["steps_per_update"] = config.steps_per_update
    benchmark.extra_info["flops_per_update"] = config.flops_per_step() * config.steps_per_update
    benchmark.pedantic(workload.step, rounds=ROUNDS, warmup_rounds=1)
