"""Smoke test of the benchmark harness: run_bench keeps working (not its timings)."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import format_table, run_bench
from bench.configs import CONFIGS, get_config
from bench.runner import growth_records

TRAIN_KEYS = ("steps_per_s", "gflops", "seconds_per_step", "peak_mb", "first_step_s",
              "forward_s", "backward_s", "clip_s", "optimize_s", "workspace_bytes",
              "min_activation_bytes", "workspace_ratio")


def test_run_bench_tiny_engine(tmp_path):
    path = tmp_path / "bench.json"
    records = run_bench(configs=["tiny"], quick=True, json_path=path, echo=lambda line: None,
                        rounds=1, profiles=False)
    assert [(r["kind"], r["config"], r["impl"]) for r in records] == [("train", "tiny", "engine")]
    for key in TRAIN_KEYS:
        assert math.isfinite(records[0][key]) and records[0][key] > 0, key
    assert json.loads(path.read_text()) == records
    table = format_table(records)
    assert "tiny" in table and "engine" in table
    plan = records[0]["plan"]  # the thread plan the Trainer chose, shown as shards x streams
    assert f"{plan['shards']}x{plan['rows_per_shard']}" in table
    core = records[0]["blas_core"]  # the OpenBLAS kernels the GEMMs ran, named under the table
    assert records[0]["openblas_coretype"] == os.environ.get("OPENBLAS_CORETYPE")
    assert core is None or f"SciPy's OpenBLAS, {core} kernels" in table


@pytest.mark.parametrize("forced", ["Sandybridge", None])
def test_blas_core_names_the_kernels_and_what_forced_them(forced):
    """OPENBLAS_CORETYPE picks OpenBLAS's kernels at load: blas_core() reports it, and the
    bench table says whether it was forced (in a fresh process: the library is loaded once)."""
    env = {key: value for key, value in os.environ.items() if key != "OPENBLAS_CORETYPE"}
    if forced:
        env["OPENBLAS_CORETYPE"] = forced
    script = ("import os; from engine.blas import blas_core; from bench.report import _blas_line; "
              "print(blas_core()); print(_blas_line([{'blas_core': blas_core(), "
              "'openblas_coretype': os.environ.get('OPENBLAS_CORETYPE')}]).strip())")
    core, line = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                check=True).stdout.splitlines()
    if forced:
        assert core == forced and line.endswith(f"(forced by OPENBLAS_CORETYPE={forced}; unset, "
                                                "OpenBLAS picks the kernels for this CPU)")
    else:
        assert core and line.endswith("(OpenBLAS's own pick for this CPU)")


def test_full_bptt_memory_growth():
    records = growth_records(get_config("tiny"), ["engine"], (20, 200))
    assert [r["T"] for r in records] == [20, 200]
    assert all(r["peak_mb"] > r["baseline_mb"] > 0 for r in records)
    assert records[1]["workspace_bytes"] > records[1]["min_activation_bytes"] > 0
    assert "growth_bytes_per_step" in records[1]


def test_configs():
    assert len(CONFIGS) == 10
    large = get_config("large")  # 6 * 4 * 512 * (256 + 512)
    assert large.flops_per_step() == 9_437_184
    assert get_config("deep").min_activation_bytes() == 100 * 6 * 128 * 32 * 2 * 4
    with pytest.raises(ValueError, match="unknown benchmark configuration"):
        get_config("huge")


def test_resets_record():
    from bench.resets import RESET_PERIOD, reset_masks
    from bench.runner import resets_record

    masks = reset_masks(100, 32)
    assert len(masks) == RESET_PERIOD
    stream = np.concatenate(masks)[:, 5]  # 37 chunks of one stream, end to end
    assert np.all(np.diff(np.flatnonzero(stream)) == RESET_PERIOD)
    record = resets_record(rounds=1, round_s=0.01)
    assert record["kind"] == "resets" and record["seconds_per_step_resets"] > 0
    assert "a reset every 37 steps per stream" in format_table([record])


def test_plans_measure_times_every_plan_without_pauses(monkeypatch):
    """bench.plans --measure times the engine alone: no pause for peers' thread pools
    between its rounds (after one, small models ran up to 1.5x slower here)."""
    import bench.runner
    from bench.plans import measured_table
    from engine.thread_plan import available_cores

    pauses = []
    monkeypatch.setattr(bench.runner.time, "sleep", lambda seconds: pauses.append(seconds))
    table = measured_table(["tiny"], rounds=1, round_s=0.001)
    rows = [line for line in table.splitlines() if line.startswith("| tiny |")]
    assert len(rows) == min(16, available_cores())  # one row per shard count; H = 32 has no split
    assert all(seconds == 0 for seconds in pauses), pauses
