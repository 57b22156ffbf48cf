"""Forecasting outputs (issue 29): interval levels and bounds, split-conformal calibration,
interval / quantile / Gaussian scores, metrics per horizon step, the backtest plot and the
load demo (engine/forecasting/, engine/plots.py, engine/demos.py)."""
import json
import math
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import integrate
from scipy.stats import norm

from cli import main
from engine.demos import DEMOS, electricity_load, load_demo, load_oracle
from engine.forecasting.intervals import (GRID, Conformal, available_levels, bound_names, gaussian_bounds,
                                          parse_levels, quantile_bounds, quantile_name)
from engine.forecasting.scores import (coverage, crps_gaussian, crps_quantiles, interval_score, mean_width,
                                       pinball, step_metrics)
from engine.plots import PlotUnavailable, plot_backtest_errors
from engine.series import DataError, read_file
from engine.series.times import infer_frequency

# ---------------------------------------------------------------- --intervals levels


@pytest.mark.parametrize("spec, levels", [("80,95", (80.0, 95.0)), (" 95, 80 ", (80.0, 95.0)),
                                          ([99.5, 80], (80.0, 99.5)), ("50", (50.0,)),
                                          ("none", ()), ("None", ())])
def test_parse_levels(spec, levels):
    parsed = parse_levels(spec)
    assert parsed == levels and all(type(level) is float for level in parsed)


@pytest.mark.parametrize("spec, message", [
    ("80,80", "--intervals: the level 80 is given twice"),
    ([95, 95.0], "--intervals: the level 95 is given twice"),
    ("0", "strictly between 0 and 100; got 0"),
    ("80,100", "strictly between 0 and 100; got 100"),
    ("nan", "strictly between 0 and 100; got nan"),
    ("80,,95", "--intervals: '' is not a number"),
    ("eighty", "--intervals: 'eighty' is not a number"),
    ([True], "--intervals: True is not a number"),
    ([], "--intervals: no level given")])
def test_parse_levels_refuses(spec, message):
    with pytest.raises(DataError) as error:
        parse_levels(spec)
    assert message in str(error.value) and "\n" not in str(error.value)


# ---------------------------------------------------------------- bounds

def test_gaussian_bounds_are_the_central_normal_interval():
    mean, scale = np.array([0.0, 10.0, -3.0]), np.array([1.0, 2.0, 0.5])
    for level in (50, 80, 95, 99.5):
        lo, hi = gaussian_bounds(mean, scale, level)
        expected = norm.interval(level / 100, loc=mean, scale=scale)
        np.testing.assert_allclose(lo, expected[0], rtol=1e-12)
        np.testing.assert_allclose(hi, expected[1], rtol=1e-12)
    lo, hi = gaussian_bounds(0.0, 1.0, 95)
    assert hi == pytest.approx(1.959964, abs=1e-6) and lo == -hi


def test_quantile_bounds_pick_the_symmetric_pair():
    levels = [0.025, 0.1, 0.5, 0.9, 0.975]
    quantiles = np.arange(5 * 2 * 3, dtype=float).reshape(5, 2, 3)   # (Q, N, K)
    lo, hi = quantile_bounds(quantiles, levels, 80)
    np.testing.assert_array_equal(lo, quantiles[1])
    np.testing.assert_array_equal(hi, quantiles[3])
    lo, hi = quantile_bounds(quantiles, levels, 95)                 # 1 - 0.025 is within the tolerance
    np.testing.assert_array_equal(lo, quantiles[0])
    np.testing.assert_array_equal(hi, quantiles[4])
    lo, hi = quantile_bounds(quantiles, [0.1 + 5e-10, 0.2, 0.5, 0.7, 0.9 - 5e-10], 80)
    np.testing.assert_array_equal(lo, quantiles[0])
    np.testing.assert_array_equal(hi, quantiles[4])
    assert available_levels(levels) == pytest.approx([80, 95])


def test_quantile_bounds_name_the_intervals_available():
    quantiles = np.zeros((3, 4))
    with pytest.raises(DataError) as error:
        quantile_bounds(quantiles, [0.1, 0.5, 0.9], 95)
    assert str(error.value) == ("the interval 95 needs the quantiles 0.025 and 0.975; the model's "
                                "quantiles 0.1, 0.5, 0.9 give the intervals 80")
    with pytest.raises(DataError, match="quantiles 0.1, 0.5, 0.8 give no central interval"):
        quantile_bounds(quantiles, [0.1, 0.5, 0.8], 80)
    with pytest.raises(DataError, match="needs the quantiles 0.1 and 0.9"):
        quantile_bounds(quantiles, [0.1 + 1e-8, 0.5, 0.9], 80)      # beyond the tolerance


def test_column_names():
    assert bound_names("load", (80, 95.0, 99.5)) == ["load_lo80", "load_hi80", "load_lo95", "load_hi95",
                                                   "load_lo99.5", "load_hi99.5"]
    assert bound_names("load", ()) == []
    assert [quantile_name("y", q) for q in (0.1, 0.5, 0.025, 0.975)] == ["y_q0.1", "y_q0.5", "y_q0.025",
                                                                      "y_q0.975"]


# ---------------------------------------------------------------- conformal

def test_conformal_record_holds_the_residual_quantiles_per_entry():
    residuals = np.full((99, 3), np.nan)
    residuals[:, 0] = np.arange(1, 100)[::-1]          # 1..99, in any order
    residuals[:10, 2] = np.arange(10) * 0.5           # 10 residuals, then missing; column 1 empty
    conformal = Conformal.fit(residuals)
    assert conformal.n.tolist() == [99, 0, 10]
    assert len(GRID) == 199 and GRID[0] == 0.005 and GRID[-1] == 0.995
    np.testing.assert_allclose(np.diff(GRID), 0.005)
    # the ceil(p n)-th smallest residual at each p of the grid
    np.testing.assert_array_equal(conformal.quantiles[0], np.ceil(np.round(GRID * 99, 9)))
    assert np.isnan(conformal.quantiles[1]).all()


def test_conformal_half_width_is_the_finite_sample_quantile():
    residuals = np.arange(1.0, 100.0)[:, None]         # n = 99: residuals 1..99
    conformal = Conformal.fit(residuals)
    # ceil((99 + 1) 0.8) = 80: p = 80/99 between the grid's 0.805 (80th smallest) and 0.810 (81st)
    p = 80 / 99
    assert conformal.half_width(80)[0] == pytest.approx(80 + (p - 0.805) / 0.005)
    assert 80 <= conformal.half_width(80)[0] <= 81
    # ceil(100 * 0.5) = 50 -> p = 50/99 = 0.50505 between 0.505 (50th) and 0.51 (51st)
    assert conformal.half_width(50)[0] == pytest.approx(50 + (50 / 99 - 0.505) / 0.005)


def test_conformal_half_width_clips_to_the_top_of_the_grid_and_skips_empty_entries():
    residuals = np.full((9, 2), np.nan)
    residuals[:, 0] = [3, 1, 4, 1, 5, 9, 2, 6, 5]
    conformal = Conformal.fit(residuals)
    widths = conformal.half_width(95)                  # ceil(10 * 0.95) / 9 > 1: p = 1, the grid's top
    assert widths[0] == 9 and np.isnan(widths[1])


def test_conformal_intervals_cover_new_exchangeable_residuals():
    rng = np.random.default_rng(3)
    conformal = Conformal.fit(np.abs(rng.standard_normal((500, 2)) * [1.0, 4.0]))
    fresh = np.abs(rng.standard_normal((200_000, 2)) * [1.0, 4.0])
    for level in (50, 80, 95):
        widths = conformal.half_width(level)
        assert widths[1] / widths[0] == pytest.approx(4, rel=0.15)
        covered = (fresh <= widths).mean(axis=0)
        assert np.all(np.abs(covered - level / 100) < 0.03), (level, covered)


def test_conformal_record_round_trips_through_json():
    residuals = np.abs(np.random.default_rng(0).standard_normal((40, 3)))
    residuals[:, 1] = np.nan
    residuals[::3, 2] = np.nan
    conformal = Conformal.fit(residuals)
    record = conformal.to_dict()
    assert set(record) == {"n", "probabilities", "quantiles"}
    text = json.dumps(record, allow_nan=False)        # plain JSON: no NaN
    again = Conformal.from_dict(json.loads(text), entries=3)
    np.testing.assert_array_equal(again.n, conformal.n)
    np.testing.assert_array_equal(again.probabilities, GRID)
    np.testing.assert_array_equal(again.quantiles, conformal.quantiles)   # NaN rows equal too
    np.testing.assert_array_equal(again.half_width(90), conformal.half_width(90))


def _record():
    return Conformal.fit(np.arange(1.0, 21.0).reshape(10, 2)).to_dict()


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("n"), "must be a dict of 'n', 'probabilities' and 'quantiles'"),
    (lambda r: r.update(n=[10, True]), "'n' must be a list of counts"),
    (lambda r: r.update(n=[10, -1]), "'n' must be a list of counts"),
    (lambda r: r.update(probabilities=[]), "'probabilities' must be a non-empty list of numbers"),
    (lambda r: r["probabilities"].reverse(), "'probabilities' must increase strictly within (0, 1)"),
    (lambda r: r["probabilities"].__setitem__(-1, 1.0), "'probabilities' must increase strictly"),
    (lambda r: r["quantiles"].pop(), "'quantiles' must be a list of 2 rows"),
    (lambda r: r["quantiles"][1].pop(), "'quantiles' row 1 must be a list of 199 numbers"),
    (lambda r: r["quantiles"][0].reverse(), "row 0 must be finite, >= 0 and non-decreasing"),
    (lambda r: r["quantiles"][0].__setitem__(5, None), "row 0 must hold numbers only"),
    (lambda r: r.update(n=[10, 0]), "row 1 must be all null"),
])
def test_conformal_record_is_checked(change, message):
    record = _record()
    Conformal.from_dict(record, entries=2)            # the unchanged record is accepted
    change(record)
    with pytest.raises(DataError) as error:
        Conformal.from_dict(record)
    assert message in str(error.value)
    with pytest.raises(DataError, match="2 entries; the model forecasts 3"):
        Conformal.from_dict(_record(), entries=3)


def test_conformal_fit_refuses_signed_or_infinite_residuals():
    with pytest.raises(ValueError, match="finite and >= 0"):
        Conformal.fit([[1.0], [-0.5]])
    with pytest.raises(ValueError, match="finite and >= 0"):
        Conformal.fit([[1.0], [np.inf]])
    with pytest.raises(ValueError, match=r"must be \(rows, K\)"):
        Conformal.fit([1.0, 2.0])


# ---------------------------------------------------------------- interval and quantile scores

ACTUAL = np.array([1.0, 2.0, 3.0, np.nan, 5.0])
LO = np.array([1.0, 0.0, 3.5, 0.0, 0.0])
HI = np.array([2.0, 1.0, 4.0, 10.0, 5.0])


def test_coverage_and_width_over_scored_entries():
    assert coverage(ACTUAL, LO, HI) == 0.5                 # 1 (on lo) and 5 (on hi) of 4 scored
    assert mean_width(ACTUAL, LO, HI) == (1 + 1 + 0.5 + 5) / 4
    assert math.isnan(coverage([np.nan], [0.0], [1.0])) and math.isnan(mean_width([np.nan], [0.0], [1.0]))
    assert coverage(ACTUAL.reshape(5, 1), LO.reshape(5, 1), HI.reshape(5, 1)) == 0.5


def test_interval_score_is_the_winkler_score():
    # level 80: alpha 0.2, penalty 2 / alpha = 10 per unit outside
    assert interval_score(ACTUAL, LO, HI, 80) == pytest.approx((1 + (1 + 10 * 1) + (0.5 + 10 * 0.5) + 5) / 4)
    rng = np.random.default_rng(1)
    y, lo = rng.normal(size=(50, 3)), rng.normal(-1, 0.5, size=(50, 3))
    hi = lo + rng.uniform(0, 2, size=(50, 3))
    alpha = 1 - 95 / 100
    direct = [(h - l) + 2 / alpha * (l - a) * (a < l) + 2 / alpha * (a - h) * (a > h)
              for a, l, h in zip(y.ravel(), lo.ravel(), hi.ravel())]
    assert interval_score(y, lo, hi, 95) == pytest.approx(np.mean(direct), rel=1e-12)


def test_pinball_against_the_direct_formula():
    rng = np.random.default_rng(2)
    levels = np.array([0.1, 0.5, 0.9])
    y = rng.normal(size=(20, 4))
    y[3, 1] = y[7, 2] = np.nan
    quantiles = rng.normal(size=(3, 20, 4))
    terms = [max(q * (a - f), (q - 1) * (a - f))
             for j, q in enumerate(levels) for a, f in zip(y.ravel(), quantiles[j].ravel()) if not np.isnan(a)]
    assert len(terms) == 3 * 78
    assert pinball(y, quantiles, levels) == pytest.approx(np.mean(terms), rel=1e-12)
    # the median's pinball loss is half its absolute error
    assert pinball(y, quantiles[1:2], [0.5]) == pytest.approx(np.nanmean(np.abs(y - quantiles[1])) / 2)
    assert crps_quantiles(y, quantiles, levels) == 2 * pinball(y, quantiles, levels)
    with pytest.raises(ValueError, match="2 levels for 3 quantile forecasts"):
        pinball(y, quantiles, [0.1, 0.9])


def _crps_by_integration(y, mean, scale):
    """The CRPS as its definition: the integral of (F(x) - 1{x >= y})^2 over x."""
    def below(x):
        return norm.cdf(x, mean, scale) ** 2

    def above(x):
        return (norm.cdf(x, mean, scale) - 1) ** 2
    return integrate.quad(below, -np.inf, y, epsabs=1e-12)[0] + integrate.quad(above, y, np.inf, epsabs=1e-12)[0]


@pytest.mark.parametrize("y, mean, scale", [(0.0, 0.0, 1.0), (1.3, 0.2, 0.7), (-4.0, 2.0, 3.0), (10.0, 9.9, 0.01)])
def test_crps_gaussian_matches_numerical_integration(y, mean, scale):
    assert crps_gaussian(y, mean, scale) == pytest.approx(_crps_by_integration(y, mean, scale), rel=1e-7)


def test_crps_gaussian_means_over_scored_entries_and_quantiles_approximate_it():
    y = np.array([[0.5, np.nan], [-1.0, 2.0]])
    mean, scale = np.array([0.0, 1.0]), np.array([1.0, 2.0])      # broadcast over rows
    expected = np.mean([_crps_by_integration(0.5, 0, 1), _crps_by_integration(-1, 0, 1),
                        _crps_by_integration(2, 1, 2)])
    assert crps_gaussian(y, mean, scale) == pytest.approx(expected, rel=1e-7)
    # many levels of the true Normal quantiles: 2 x mean pinball tends to the CRPS
    levels = np.arange(1, 200) / 200
    quantiles = norm.ppf(levels)[:, None, None] * scale + mean    # (Q, 1, 2)
    assert crps_quantiles(y, quantiles, levels) == pytest.approx(crps_gaussian(y, mean, scale), rel=0.01)


# ---------------------------------------------------------------- metrics per step

def test_step_metrics_per_step_and_overall():
    rng = np.random.default_rng(4)
    actual = rng.normal(5, 2, size=(30, 3, 2))
    forecast = actual + rng.normal(0, 1, size=actual.shape)
    naive = actual + rng.normal(0, 2, size=actual.shape)
    actual[0, 0, 0] = actual[5, 2, 1] = np.nan
    naive[:2, 1] = np.nan                                       # no naive forecast yet: not scored
    records = step_metrics(forecast, actual, naive)
    assert [record["step"] for record in records] == [1, 2, 3, "overall"]
    scored = ~np.isnan(actual) & ~np.isnan(naive)
    for record, where in zip(records, [np.s_[:, 0], np.s_[:, 1], np.s_[:, 2], np.s_[:]]):
        mask = scored[where]
        f, a, n = forecast[where][mask], actual[where][mask], naive[where][mask]
        assert record["count"] == mask.sum()
        assert record["mae"] == pytest.approx(np.mean(np.abs(f - a)), rel=1e-12)
        assert record["rmse"] == pytest.approx(np.sqrt(np.mean((f - a) ** 2)), rel=1e-12)
        assert record["smape"] == pytest.approx(200 * np.mean(np.abs(f - a) / (np.abs(f) + np.abs(a))), rel=1e-12)
        assert record["naive_mae"] == pytest.approx(np.mean(np.abs(n - a)), rel=1e-12)
        assert record["mase"] == pytest.approx(np.mean(np.abs(f - a)) / np.mean(np.abs(n - a)), rel=1e-12)
    assert [record["count"] for record in records] == [59, 56, 59, 174]


def test_step_metrics_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match=r"must be \(N, H, O\) alike"):
        step_metrics(np.zeros((4, 2, 1)), np.zeros((4, 2, 1)), np.zeros((4, 1, 1)))
    with pytest.raises(ValueError, match=r"must be \(N, H, O\) alike"):
        step_metrics(np.zeros((4, 2)), np.zeros((4, 2)), np.zeros((4, 2)))


# ---------------------------------------------------------------- backtest plot

@pytest.mark.filterwarnings("error")   # matplotlib's warnings stay inside the plot function
def test_plot_backtest_errors_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")

    path = tmp_path / "backtest.png"
    plot_backtest_errors(path, [1, 2, 3, 4], [1.0, 1.5, np.nan, 2.5], [2.0, 2.1, 2.2, 2.3], "load, 4 folds")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    assert [entry.name for entry in tmp_path.iterdir()] == ["backtest.png"]   # no temporary left
    with pytest.raises(ValueError, match="equal-length lists"):
        plot_backtest_errors(tmp_path / "bad.png", [1, 2], [1.0], [1.0, 2.0], "x")
    assert not (tmp_path / "bad.png").exists()


def test_plot_backtest_errors_without_matplotlib_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(PlotUnavailable, match=r"pip install 'bptt\[plot\]'"):
        plot_backtest_errors(tmp_path / "b.png", [1], [1.0], [1.0], "x")
    assert not (tmp_path / "b.png").exists()


# ---------------------------------------------------------------- the load demo

def test_load_demo_shape_time_column_and_determinism():
    series = load_demo("load")
    assert "load" in DEMOS and series.source == "demo:load"
    assert series.names == ("load", "temperature", "promotion") and series.values.shape == (17_520, 3)
    assert np.isfinite(series.values).all()
    assert series.time.dtype == np.dtype("datetime64[us]") and len(series.time) == 17_520
    assert series.time[0] == np.datetime64("2024-01-01T00:00") and series.time[-1] == np.datetime64("2025-12-30T23:00")
    assert series.time_name == "time" and series.time_zone == "UTC"
    assert infer_frequency(series.time, series.time_zone) == "PT1H"
    np.testing.assert_array_equal(load_demo("load").values, series.values)
    assert not np.array_equal(load_demo("load", seed=1).values, series.values)


def test_load_demo_reads_like_a_csv_with_a_time_column(tmp_path):
    demo = electricity_load(length=48)
    lines = [f"{stamp}Z,{float(load)!r},{float(temperature)!r},{float(promotion)!r}"
             for stamp, (load, temperature, promotion) in zip(demo.time.astype("datetime64[m]"), demo.values)]
    (tmp_path / "load.csv").write_text("time,load,temperature,promotion\n" + "\n".join(lines) + "\n")
    read = read_file(tmp_path / "load.csv")
    assert (read.names, read.time_name, read.time_zone) == (demo.names, demo.time_name, demo.time_zone)
    assert read.time.dtype == demo.time.dtype
    np.testing.assert_array_equal(read.time, demo.time)
    np.testing.assert_array_equal(read.values, demo.values)


def test_load_demo_structure_and_oracle():
    series, oracle = load_demo("load"), load_oracle()
    load, temperature, promotion = series.values.T
    hour = np.arange(len(load)) % 24
    assert set(np.unique(promotion)) == {0.0, 1.0}
    promoted_days = np.unique(np.flatnonzero(promotion) // 24)
    assert len(promoted_days) == 730 // 12 and set(hour[promotion == 1]) == set(range(10, 20))
    assert -10 < temperature.min() and temperature.max() < 35
    # the innovations: load - oracle mean is white noise of sd 15 (the oracle knows the inputs)
    innovations = (load - oracle.mean)[1:]
    assert innovations.std() == pytest.approx(15, rel=0.03) and abs(innovations.mean()) < 0.5
    assert abs(np.corrcoef(innovations[:-1], innovations[1:])[0, 1]) < 0.03
    assert abs(innovations[promotion[1:] == 1].mean()) < 5
    assert oracle.scale[0] == pytest.approx(15 / math.sqrt(1 - 0.81)) and (oracle.scale[1:] == 15).all()
    # a clear jump on promotion hours against the same hours of the other weekdays
    weekday = (np.arange(len(load)) // 24) % 7 < 5
    same_hours = (hour >= 10) & (hour < 20) & weekday
    jump = load[same_hours & (promotion == 1)].mean() - load[same_hours & (promotion == 0)].mean()
    assert jump > 60
    assert not np.array_equal(load_oracle(seed=1).mean, oracle.mean)


def test_bptt_train_on_the_load_demo(tmp_path):
    output = tmp_path / "load.npz"
    result = CliRunner().invoke(main, ["train", "--demo", "load", "--targets", "load", "--inputs",
                                       "load,temperature,promotion", "--hidden", "4", "--k1", "24",
                                       "--epochs", "1", "-q", "-o", str(output)])
    assert result.exit_code == 0, result.output
    info = CliRunner().invoke(main, ["info", str(output)])
    assert info.exit_code == 0 and 'time column "time" 2024-01-01T00:00Z .. 2025-12-30T23:00Z, frequency PT1H' in info.output
    assert "targets ['load'], inputs ['load', 'temperature', 'promotion']" in info.output
