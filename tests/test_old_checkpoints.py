"""Checkpoints of the version before forecasting recipes (tests/data/v1: one horizon step,
point forecasts) load, forecast and evaluate exactly as that version did, on the BLAS
backend it ran (SciPy's OpenBLAS); on MKL (where installed) to float32 rounding. Each
backend runs the command in a process of its own (BPTT_BLAS: a process binds one)."""
import csv
import io
import json
import os
import pathlib
import subprocess
import sys

import pytest
from click.testing import CliRunner

import kernels.blas as blas
from cli import main

OLD = pathlib.Path(__file__).parent / "data" / "v1"
ROOT = pathlib.Path(__file__).resolve().parent.parent
# relative tolerance per backend: the stored outputs are OpenBLAS's own
TOLERANCE = {"openblas": 1e-12, "mkl": 1e-5}
BACKENDS = [pytest.param("openblas"),
            pytest.param("mkl", marks=pytest.mark.skipif(blas.mkl_path() is None, reason="the mkl extra is absent"))]


def run_on(backend, *arguments):
    """`bptt ARGUMENTS` in a fresh process on `backend`; its stdout (exit status 0 asserted)."""
    env = {**os.environ, "BPTT_BLAS": backend, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", "from cli import main; main()", *map(str, arguments)],
                          env=env, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout
CASES = [("single_h2.npz", "daily.csv", ["--steps", "2"], "single_h2_forecast.csv"),
         ("single_h1.npz", "daily.csv", ["--steps", "5"], "single_h1_forecast.csv"),
         ("panel_h1.npz", "panel.csv", ["--steps", "3"], "panel_h1_forecast.csv")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("checkpoint, data, options, expected", CASES)
def test_old_forecasts_are_unchanged(backend, checkpoint, data, options, expected):
    found = run_on(backend, "forecast", OLD / checkpoint, OLD / data, *options)
    stored = (OLD / expected).read_text()
    if backend == "openblas":
        assert found == stored
    else:  # the same rows and labels, every number within TOLERANCE
        rows, stored_rows = (list(csv.reader(io.StringIO(text))) for text in (found, stored))
        assert len(rows) == len(stored_rows) and rows[0] == stored_rows[0]
        for row, stored_row in zip(rows[1:], stored_rows[1:]):
            assert row[:-1] == stored_row[:-1]
            assert float(row[-1]) == pytest.approx(float(stored_row[-1]), rel=TOLERANCE[backend]), row


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("checkpoint, data, options, expected", [
    ("single_h2.npz", "daily.csv", [], "single_h2_evaluate.json"),
    ("panel_h1.npz", "panel.csv", ["--season", "7"], "panel_h1_evaluate.json")])
def test_old_evaluations_are_unchanged(backend, checkpoint, data, options, expected):
    found = run_on(backend, "evaluate", OLD / checkpoint, OLD / data, "--json", *options)
    assert_close(json.loads(found), json.loads((OLD / expected).read_text()), TOLERANCE[backend])


def assert_close(found, expected, rel, path="metrics"):
    """Equal JSON structures, numbers within `rel` relative."""
    if isinstance(expected, dict):
        assert sorted(found) == sorted(expected), path
        for key in expected:
            assert_close(found[key], expected[key], rel, f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(found) == len(expected), path
        for index, (one, other) in enumerate(zip(found, expected)):
            assert_close(one, other, rel, f"{path}[{index}]")
    elif isinstance(expected, float):
        assert found == pytest.approx(expected, rel=rel), path
    else:
        assert found == expected, path


def test_old_checkpoint_info_shows_no_forecasting_roles():
    result = CliRunner().invoke(main, ["info", str(OLD / "single_h2.npz")])
    assert result.exit_code == 0, result.output
    assert "horizon 2" in result.stdout and "loss" not in result.stdout.split("Data:")[1]


def test_old_checkpoint_cannot_be_backtested():
    result = CliRunner().invoke(main, ["backtest", str(OLD / "single_h1.npz"), str(OLD / "daily.csv")])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error:") and "older" in result.stderr
