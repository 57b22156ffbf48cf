"""Fixtures of the pytest-benchmark suites (`pytest bench/`)."""
import pytest

from bench.configs import CONFIGS
from bench.runner import check_losses
from bench.workloads import available, make_workload

ROUNDS = 10  # timed rounds of one step (or phase) each, after the warm-up


@pytest.fixture(params=list(CONFIGS))
def config(request):
    return CONFIGS[request.param]


def warmed_up(impl, config):
    """The workload of `impl` for `config` after its first step: that step is the warm-up
    round (compilation) and the correctness check, its loss equal to the engine's and,
    when torch is installed, to torch's on the same weights and data."""
    if impl not in available():
        pytest.skip(f"{impl} is not installed")
    impls = {"engine", impl} | ({"torch"} & set(available()))
    workloads = {name: make_workload(name, config) for name in sorted(impls)}
    check_losses(config, {name: workload.step() for name, workload in workloads.items()})
    return workloads[impl]
