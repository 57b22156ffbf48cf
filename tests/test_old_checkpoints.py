"""Checkpoints of the version before forecasting recipes (tests/data/v1: one horizon step,
point forecasts) load, forecast and evaluate exactly as that version did."""
import json
import pathlib

import pytest
from click.testing import CliRunner

from cli import main

OLD = pathlib.Path(__file__).parent / "data" / "v1"
CASES = [("single_h2.npz", "daily.csv", ["--steps", "2"], "single_h2_forecast.csv"),
         ("single_h1.npz", "daily.csv", ["--steps", "5"], "single_h1_forecast.csv"),
         ("panel_h1.npz", "panel.csv", ["--steps", "3"], "panel_h1_forecast.csv")]


@pytest.mark.parametrize("checkpoint, data, options, expected", CASES)
def test_old_forecasts_are_unchanged(checkpoint, data, options, expected):
    result = CliRunner().invoke(main, ["forecast", str(OLD / checkpoint), str(OLD / data), *options])
    assert result.exit_code == 0, result.output
    assert result.stdout == (OLD / expected).read_text()


@pytest.mark.parametrize("checkpoint, data, options, expected", [
    ("single_h2.npz", "daily.csv", [], "single_h2_evaluate.json"),
    ("panel_h1.npz", "panel.csv", ["--season", "7"], "panel_h1_evaluate.json")])
def test_old_evaluations_are_unchanged(checkpoint, data, options, expected):
    result = CliRunner().invoke(main, ["evaluate", str(OLD / checkpoint), str(OLD / data), "--json", *options])
    assert result.exit_code == 0, result.output
    assert_close(json.loads(result.stdout), json.loads((OLD / expected).read_text()))


def assert_close(found, expected, path="metrics"):
    """Equal JSON structures, numbers within 1e-12 relative."""
    if isinstance(expected, dict):
        assert sorted(found) == sorted(expected), path
        for key in expected:
            assert_close(found[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(found) == len(expected), path
        for index, (one, other) in enumerate(zip(found, expected)):
            assert_close(one, other, f"{path}[{index}]")
    elif isinstance(expected, float):
        assert found == pytest.approx(expected, rel=1e-12), path
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
