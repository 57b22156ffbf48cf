"""Benchmarks of the engine against PyTorch and JAX: `run_bench` measures, `format_table`
prints. pytest-benchmark suites: `pytest bench/`."""
from bench.report import format_table
from bench.runner import run_bench

__all__ = ["format_table", "run_bench"]
