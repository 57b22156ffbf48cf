"""Smoke test of the benchmark harness: run_bench keeps working (not its timings)."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import engine.blas

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
    blas = records[0]["blas"]  # the backend, named under the table
    assert blas == engine.blas.backend() and "engine BLAS: " in table
    assert (f"Intel MKL {blas['version']}" if blas["name"] == "mkl" else "SciPy's OpenBLAS") in table
    assert core is None or f"{core} kernels" in table


@pytest.mark.parametrize("forced", ["Sandybridge", None])
def test_blas_core_names_the_kernels_and_what_forced_them(forced):
    """OPENBLAS_CORETYPE picks OpenBLAS's kernels at load: blas_core() reports it, and the
    bench table says whether it was forced (in a fresh process: the library is loaded once)."""
    env = {key: value for key, value in os.environ.items() if key != "OPENBLAS_CORETYPE"}
    env["BPTT_BLAS"] = "openblas"  # the OpenBLAS backend, whatever else is installed
    if forced:
        env["OPENBLAS_CORETYPE"] = forced
    script = ("import os; from engine.blas import backend, blas_core; from bench.report import _blas_line; "
              "print(blas_core()); print(_blas_line([{'blas': backend(), 'blas_core': blas_core(), "
              "'openblas_coretype': os.environ.get('OPENBLAS_CORETYPE'), 'blas_forced': 'openblas'}]).strip())")
    core, line = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                check=True).stdout.splitlines()
    if forced:
        assert core == forced and line.endswith(f"(forced by OPENBLAS_CORETYPE={forced}; unset, "
                                                "OpenBLAS picks the kernels for this CPU), forced by BPTT_BLAS=openblas")
    else:
        assert core and line.endswith("(OpenBLAS's own pick for this CPU), forced by BPTT_BLAS=openblas")


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


def test_quality_quick_table_and_json(tmp_path):
    """bench.quality --quick: one row per member with every method's MASE (the oracle's
    only where known), and the same results as JSON (structure, not figures)."""
    pytest.importorskip("statsmodels")
    path = tmp_path / "quality.json"
    completed = subprocess.run([sys.executable, "-m", "bench.quality", "--quick", "-o", str(path)],
                               capture_output=True, text=True, check=True)
    table, first_steps, settings = completed.stdout.split("\n\n")
    table = table.splitlines()
    assert table[0] == ("| member | H | season | origins | defaults | sweep | ETS | ARIMA | oracle "
                        "| naive MAE |")
    rows = {line.split(" | ")[0].lstrip("| "): line.strip("| ").split(" | ") for line in table[2:]}
    assert list(rows) == ["hourly", "realgdp"]
    assert rows["hourly"][1:3] == ["24", "24"] and rows["realgdp"][1:3] == ["4", "4"]
    assert int(rows["hourly"][3]) >= 20 and int(rows["realgdp"][3]) >= 20   # origins
    assert rows["realgdp"][8] == "-"   # no oracle for a real series
    for name, cells in rows.items():
        figures = [float(cell) for cell in cells[4:] if cell != "-"]
        assert len(figures) == (6 if name == "hourly" else 5) and all(value > 0 for value in figures), cells
    result = json.loads(path.read_text())
    assert result["quick"] and set(result["members"]) == {"hourly", "realgdp"}
    hourly = result["members"]["hourly"]
    assert set(hourly["mase"]) == {"defaults", "sweep", "ets", "arima", "oracle"}
    assert hourly["options"] == {"horizon": 24, "targets": "value", "known": "driver"}
    assert set(hourly["sweep_best"]["values"]) == {"lr", "hidden", "layers", "dropout", "k1"}   # the default space
    assert set(hourly["step_mase"]) == set(hourly["mase"])
    assert all(len(steps) == 24 for steps in hourly["step_mase"].values())
    first_steps = first_steps.splitlines()
    assert first_steps[0] == ("| member | step 1: defaults | sweep | ETS | ARIMA | oracle | defaults / oracle "
                              "| sweep / oracle |")
    cells = first_steps[2].strip("| ").split(" | ")   # hourly, from the JSON's figures
    steps = hourly["step_mase"]
    assert cells == ["hourly", *(f"{steps[method][0]:.3f}" for method in ("defaults", "sweep", "ets", "arima",
                                                                          "oracle")),
                     f"{steps['defaults'][0] / steps['oracle'][0]:.2f}",
                     f"{steps['sweep'][0] / steps['oracle'][0]:.2f}"]
    assert first_steps[3].endswith("| - | - | - |")   # realgdp: no oracle, no ratios
    assert settings.startswith("hourly: lr ")   # the best settings


def test_quality_mase_per_step_scores_each_step_on_its_own_rows():
    """Rows.mase(step=h): per series, the MAE of step h's rows over the naive's MAE on
    those rows, then the mean over series; step_mase lists steps 1..H."""
    import pyarrow as pa
    from bench.quality import Rows
    from engine.panel import Panel
    from engine.series import Series

    panel = Panel(("a", "b"), (Series(np.zeros((10, 1)), ("value",), "t"),) * 2, (None, None), "t", None)
    actual = np.array([1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0])
    table = pa.table({"origin": [0, 0, 1, 1, 0, 0, 1, 1], "id": ["a"] * 4 + ["b"] * 4,
                      "step": [1, 2, 1, 2, 1, 2, 1, 2], "actual": actual, "naive": actual + 1.0})
    rows = Rows(panel, table)
    forecast = actual + np.array([0.5, 2.0, 0.5, 2.0, 0.25, 1.0, 0.25, 1.0])
    assert rows.step_mase(forecast) == [pytest.approx((0.5 + 0.25) / 2), pytest.approx((2.0 + 1.0) / 2)]
    assert rows.mase(forecast) == pytest.approx((1.25 + 0.625) / 2)


def test_quality_rejects_bad_input_before_any_work(tmp_path):
    for arguments, message in ((["--members", "nope"], "unknown member 'nope'"),
                               (["-o", str(tmp_path)], "")):
        completed = subprocess.run([sys.executable, "-m", "bench.quality", *arguments], capture_output=True, text=True)
        assert completed.returncode == 2 and message in completed.stderr and completed.stdout == ""


def test_state_space_forecasts_are_statsmodels_own():
    """forecasts_from_states (every origin from one filtered pass) gives what statsmodels
    forecasts from results extended to each origin (trend, exog and differencing included)."""
    pytest.importorskip("statsmodels")
    from statsmodels.tsa.statespace.sarimax import SARIMAX
    from bench.quality_baselines import forecasts_from_states, fourier_terms

    rng = np.random.default_rng(0)
    rows = np.arange(300)
    exog = np.column_stack([fourier_terms(rows, (7,)), rng.normal(size=300)])
    y = np.cumsum(rng.normal(size=300)) + exog @ rng.normal(size=7)
    fitted = SARIMAX(y[:200], exog=exog[:200], order=(2, 1, 1), trend="c").fit(disp=False)
    extended = fitted.extend(y[200:], exog=exog[200:])
    origins = np.array([0, 13, 50])   # positions in the extension: rows 200, 213, 250
    ours = forecasts_from_states(extended, origins, 5)
    for origin, forecast in zip(origins, ours):
        end = 201 + origin
        theirs = fitted.extend(y[200:end], exog=exog[200:end]).forecast(5, exog=exog[end:end + 5])
        np.testing.assert_allclose(forecast, theirs, rtol=1e-9, atol=1e-9)


def test_ets_forecasts_from_the_training_end_are_the_fitted_models():
    pytest.importorskip("statsmodels")
    from statsmodels.tsa.holtwinters import ExponentialSmoothing
    from bench.quality_baselines import Standard, ets_forecasts

    rng = np.random.default_rng(1)
    y = 5 + 0.02 * np.arange(240) + np.sin(2 * np.pi * np.arange(240) / 12) + 0.2 * rng.normal(size=240)
    ours = ets_forecasts(y, 200, np.array([199]), 6, 12, trending=True)[0]
    scale = Standard(y[:200])
    fitted = ExponentialSmoothing(scale(y[:200]), trend="add", damped_trend=True, seasonal="add",
                                  seasonal_periods=12, initialization_method="heuristic").fit()
    np.testing.assert_allclose(ours, scale.back(fitted.forecast(6)), rtol=1e-6)


@pytest.mark.parametrize("name, innovation_sd", [("daily", 0.5), ("hourly", 0.3), ("sine", 0.2)])
def test_oracles_leave_only_the_innovations(name, innovation_sd):
    """The exact one-step forecast errs by the generator's innovation alone: its errors
    over each series have that sd (in the series' scale)."""
    from bench import quality_suite as suite
    from bench.quality import series_of

    scales = {"daily": lambda: [part.scale for part in suite.daily_parts()],
              "hourly": lambda: [part.scale for part in suite.hourly_parts()], "sine": lambda: [1.0]}[name]()
    member = next(member for member in suite.MEMBERS if member.name == name)
    data = member.make()
    for (series_id, one, _), scale in zip(series_of(data), scales, strict=True):
        origins = np.arange(1, len(one.values) - 1)
        forecast = member.oracle(data, np.full(len(origins), series_id), origins, np.ones(len(origins), dtype=int))
        errors = one.values[origins + 1, 0] - forecast
        assert abs(np.std(errors) / (scale * innovation_sd) - 1) < 0.15, (series_id, np.std(errors), scale)


def test_bidirectional_record():
    from bench.bidirectional import measure

    record = measure(get_config("tiny"), rounds=1, round_s=0.001)
    assert record["config"] == "tiny" and record["rounds"] == 1
    assert record["seconds_per_update_bidirectional"] > 0 and record["seconds_per_update"] > 0
    assert record["ratio"] == record["seconds_per_update_bidirectional"] / record["seconds_per_update"]
