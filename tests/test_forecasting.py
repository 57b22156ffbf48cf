"""Forecasting models (docs/forecasting.md): column roles, calendar features and lags, the
direct multi-horizon framing, distributions and intervals, forecasts past the data with
known inputs, backtests from one pass, panels, and bad input."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pytest
from click.testing import CliRunner

import engine
from cli import main
from engine.forecasting import calendar, frames, roles
from engine.series import DataError, Series
from cli_checks import assert_bad_input, snapshot

TINY = dict(hidden=4, epochs=1, k1=20, streams=2, lr=1e-2)
HOURS = 600


def hourly(length=HOURS, seed=0, future=0):
    """An hourly series: load driven by the hour of day, a temperature and a promotion flag
    (known inputs); the last `future` rows have known inputs and no load."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (2, 2 * HOURS))[:, :length]   # the same values whatever the length
    steps = np.arange(length)
    stamps = np.datetime64("2024-01-01T00:00", "us") + steps * np.timedelta64(1, "h")
    temperature = 10 + 5 * np.sin(2 * np.pi * steps / 200) + 0.5 * noise[0]
    promotion = (steps // 24 % 9 == 4).astype(float)
    load = 100 + 10 * np.sin(2 * np.pi * steps / 24) + 2 * temperature + 15 * promotion + noise[1]
    load[length - future:] = np.nan if future else load[length - future:]
    return Series(np.stack([load, temperature, promotion], axis=1), ("load", "temperature", "promotion"),
                  "hourly", time=stamps, time_name="time", time_zone=None)


def as_table(series):
    return pa.table({"time": series.time, **{name: series.values[:, i] for i, name in enumerate(series.names)}})


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


# ---------------------------------------------------------------- calendar, roles, framing

def test_calendar_features_are_sin_cos_of_the_wall_time():
    stamps = np.array(["2024-01-01T06:00", "2024-01-03T18:00"], dtype="datetime64[us]")   # a Monday, a Wednesday
    encoded = calendar.encode(stamps, None, ["hour", "weekday", "month"])
    np.testing.assert_allclose(encoded[0], [1, 0, 0, 1, 0, 1], atol=1e-12)     # 06:00 = a quarter day
    np.testing.assert_allclose(encoded[1, :2], [-1, 0], atol=1e-12)            # 18:00
    np.testing.assert_allclose(encoded[1, 2:4], [np.sin(4 * np.pi / 7), np.cos(4 * np.pi / 7)], atol=1e-12)
    # in a zone: 23:00 UTC is 06:00 the next day at +07:00
    zoned = calendar.encode(np.array(["2024-01-01T23:00"], dtype="datetime64[us]"), "+07:00", ["hour", "weekday"])
    np.testing.assert_allclose(zoned[0], [1, 0, np.sin(2 * np.pi / 7), np.cos(2 * np.pi / 7)], atol=1e-12)
    assert calendar.names(["hour"]) == ["hour_sin", "hour_cos"]


@pytest.mark.parametrize("frequency, lags", [("PT1H", (24,)), ("PT15M", (96,)), ("PT7M", (1440,)), ("P1D", (7,)),
                                             ("P1D/business", (5,)), ("P7D", (52,)), ("P1M", (12,)),
                                             ("P3M/end", (4,)), ("P1Y", ()), (None, ())])
def test_automatic_lags_follow_the_frequency(frequency, lags):
    assert calendar.suited_lags(frequency) == lags
    # kept when at least the horizon and LAG_SHARE of them fit into the shortest series
    assert roles.parse_lags("auto", 1, frequency, shortest=10 ** 6) == list(lags)
    assert roles.parse_lags("auto", 30, frequency, shortest=10 ** 6) == [lag for lag in lags if lag >= 30]
    assert roles.parse_lags("auto", 1, frequency, shortest=200) == [lag for lag in lags if 3 * lag <= 200]


def test_the_input_row_of_an_origin_follows_feature_names():
    series = hourly(60)
    recipe = {**roles.resolve(series, targets="load", known="promotion", calendar="hour", lags="24",
                              horizon=2, has_time=True),
              "horizon": 2, "fill": None, "difference": False}
    assert frames.feature_names(recipe) == [
        "load", "promotion@t+1", "hour_sin@t+1", "hour_cos@t+1", "load_lag24@t+1",
        "promotion@t+2", "hour_sin@t+2", "hour_cos@t+2", "load_lag24@t+2"]
    framed = frames.frame_series(series, recipe, series.time)
    assert framed.rows[0] == 23 and framed.rows[-1] == 60 - 2 - 1   # the lag reaches back; targets in the data
    load, promotion = series.values[:, 0], series.values[:, 2]
    t = 30
    row = framed.x[t - 23]
    hour = lambda r: [np.sin(2 * np.pi * (r % 24) / 24), np.cos(2 * np.pi * (r % 24) / 24)]
    np.testing.assert_allclose(row, [load[t], promotion[t + 1], *hour(t + 1), load[t + 1 - 24],
                                     promotion[t + 2], *hour(t + 2), load[t + 2 - 24]], atol=1e-12)
    np.testing.assert_array_equal(framed.y[t - 23], load[t + 1:t + 3])
    # with differencing: targets and lags relative to the level at the origin
    changes = frames.frame_series(series, {**recipe, "difference": True}, series.time)
    assert changes.rows[0] == 23
    np.testing.assert_allclose(changes.y[t - 23], load[t + 1:t + 3] - load[t])
    np.testing.assert_allclose(changes.x[t - 23][[0, 4]], [load[t] - load[t - 1], load[t + 1 - 24] - load[t]])


@pytest.mark.parametrize("options, message", [
    (dict(targets="load", known="load"), '"load" is a target'),
    (dict(static="temperature"), "static: per-series values need a panel"),
    (dict(targets="load", calendar="hour,hour"), "calendar: expected distinct features"),
    (dict(targets="load", calendar="moon"), "calendar: expected distinct features"),
    (dict(targets="load", lags="12", horizon=24), "lag 12 is shorter than the horizon 24"),
    (dict(targets="load", lags="0"), "lags: expected whole numbers"),
    (dict(targets="load", lags="24,24"), "listed twice"),
])
def test_roles_that_cannot_work_are_refused(options, message):
    with pytest.raises(DataError, match=message):
        roles.resolve(hourly(50), has_time=True, **options)


def test_calendar_features_need_a_time_column():
    plain = Series(hourly(50).values, ("load", "temperature", "promotion"), "plain")
    with pytest.raises(DataError, match="calendar hour: needs a time column"):
        roles.resolve(plain, targets="load", calendar="hour", has_time=False)
    assert roles.resolve(plain, targets="load", calendar="auto", has_time=False)["calendar"] == []


def test_default_targets_leave_out_known_and_static_columns():
    assert roles.resolve(hourly(50), known="temperature,promotion", has_time=True)["targets"] == ["load"]


# ---------------------------------------------------------------- training, forecasting, backtests

@pytest.fixture(scope="module")
def gaussian_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("gaussian") / "g.npz"
    # levels (the temperature's 200-hour cycle makes the load's level wander for the default rule)
    engine.train_series(as_table(hourly()), path, targets="load", known="temperature,promotion",
                        calendar="hour,weekday", horizon=6, loss="gaussian", difference=False, **TINY)
    return path


def test_a_forecasting_checkpoint_records_its_recipe(gaussian_model):
    recipe = engine.read_metadata(gaussian_model)["user"]["data"]
    assert recipe["version"] == 2 and recipe["horizon"] == 6 and recipe["loss"] == "gaussian"
    assert recipe["known"] == ["temperature", "promotion"] and recipe["calendar"] == ["hour", "weekday"]
    assert recipe["lags"] == [24]   # hourly: a day (the weekday feature carries a week)
    assert recipe["conformal"]["n"] == [recipe["val_steps"]] * 6   # scaled residuals of each step on validation
    model, _ = engine.load(gaussian_model)
    assert model.input_size == len(recipe["features"]) == 1 + 6 * (2 + 4 + 1)
    assert model.output_size == 2 * 6
    info = run("info", gaussian_model)
    assert "known ['temperature', 'promotion']" in info.stdout and "lags [24]" in info.stdout
    assert "loss gaussian" in info.stdout


def test_a_backtest_from_one_pass_equals_a_forecast_from_each_origin(gaussian_model):
    data = hourly()
    found = engine.backtest_series(gaussian_model, as_table(data), start=400, every=50, steps=6)
    table = found.table
    assert table.column_names == ["origin", "time", "step", "target", "forecast", "actual", "naive",
                                  "lo80", "hi80", "lo95", "hi95"]
    origins = np.unique(table.column("origin").to_numpy())
    assert len(origins) == 4 and found.metrics["origins"] == 4
    for origin in origins[:2]:
        row = int((origin - data.time[0]) // np.timedelta64(1, "h"))
        # the data up to the origin, and 6 rows of known inputs after it with the load unknown
        cut = hourly(row + 7, future=6)
        forecast = engine.forecast_series(gaussian_model, as_table(cut), 6)
        mine = table.filter(pc.equal(table.column("origin"), pa.scalar(origin, table.schema.field("origin").type)))
        for column, name in (("forecast", "load"), ("lo80", "load_lo80"), ("hi95", "load_hi95")):
            np.testing.assert_allclose(mine.column(column).to_numpy(), forecast.column(name).to_numpy(), rtol=1e-9)
        np.testing.assert_array_equal(mine.column("actual").to_numpy(), data.values[row + 1:row + 7, 0])
    per_step = found.metrics["steps"]
    assert [record["step"] for record in per_step] == [1, 2, 3, 4, 5, 6]
    assert set(found.metrics["intervals"]) == {"80", "95"} and "crps" in found.metrics


def test_forecasts_past_the_data_need_the_known_inputs_of_those_steps(gaussian_model, tmp_path):
    with pytest.raises(DataError, match=r"known inputs are needed up to 2024-01-26T05:00.*--future"):
        engine.forecast_series(gaussian_model, as_table(hourly()), 6)
    data = hourly(HOURS + 6, future=6)
    table = engine.forecast_series(gaussian_model, as_table(data), 6)
    assert table.column_names == ["time", "load", "load_lo80", "load_hi80", "load_lo95", "load_hi95"]
    point, lo, hi = (table.column(name).to_numpy() for name in ("load", "load_lo80", "load_hi80"))
    assert np.all(lo < point) and np.all(point < hi)
    # the same rows given as a future file
    past = hourly()
    future = pa.table({"time": data.time[HOURS:], "temperature": data.values[HOURS:, 1],
                       "promotion": data.values[HOURS:, 2]})
    pa_csv.write_csv(as_table(past), tmp_path / "past.csv")
    pa_csv.write_csv(future, tmp_path / "future.csv")
    result = run("forecast", gaussian_model, tmp_path / "past.csv", "--steps", 6, "--future", tmp_path / "future.csv")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "time,load,load_lo80,load_hi80,load_lo95,load_hi95" and len(lines) == 7
    np.testing.assert_allclose([float(line.split(",")[1]) for line in lines[1:]], point, rtol=1e-8)


def test_a_future_file_with_other_columns_or_times_is_refused(gaussian_model, tmp_path):
    pa_csv.write_csv(as_table(hourly()), tmp_path / "past.csv")
    data = hourly(HOURS + 6, future=6)
    wrong_columns = pa.table({"time": data.time[HOURS:], "temperature": data.values[HOURS:, 1]})
    wrong_times = pa.table({"time": data.time[HOURS:] + np.timedelta64(1, "h"), "temperature": data.values[HOURS:, 1],
                            "promotion": data.values[HOURS:, 2]})
    for name, table, message in (("columns.csv", wrong_columns, "future: expected the known input columns"),
                                 ("times.csv", wrong_times, "future: the times")):
        pa_csv.write_csv(table, tmp_path / name)
        before = snapshot(tmp_path)
        assert_bad_input(run("forecast", gaussian_model, tmp_path / "past.csv", "--steps", 6,
                             "--future", tmp_path / name, "-o", tmp_path / "out.csv"), message)
        assert snapshot(tmp_path) == before


def test_a_missing_future_known_value_names_its_time(gaussian_model):
    data = hourly(HOURS + 6, future=6)
    data.values[HOURS + 2, 1] = np.nan
    with pytest.raises(DataError, match=r'known input "temperature" is missing at 2024-01-26T02:00'):
        engine.forecast_series(gaussian_model, as_table(data), 6)


def test_forecasts_past_the_horizon_roll_forward_in_blocks(tmp_path):
    series = hourly()
    path = tmp_path / "m.npz"
    engine.train_series(as_table(series), path, targets="load", known="temperature", horizon=3, val_fraction=0.2,
                        **TINY)
    data = hourly(HOURS + 6, future=6)
    rolled = engine.forecast_series(path, as_table(data), 6)
    first = rolled.column("load").to_numpy()
    # the second block: the first block's forecasts taken as observed
    grown = hourly(HOURS + 6, future=6)
    grown.values[HOURS:HOURS + 3, 0] = first[:3]
    np.testing.assert_allclose(engine.forecast_series(path, as_table(grown), 3).column("load").to_numpy(),
                               first[3:], rtol=1e-9)
    bounds = rolled.column("load_lo80").to_numpy()
    assert np.isfinite(bounds[:3]).all() and np.isnan(bounds[3:]).all()   # no bounds past the horizon
    # a past-only input makes rolling ill-defined
    engine.train_series(as_table(series), tmp_path / "past.npz", targets="load", inputs="load,temperature",
                        horizon=3, **TINY)
    with pytest.raises(DataError, match="past input.*temperature would be unknown"):
        engine.forecast_series(tmp_path / "past.npz", as_table(data), 6)


def test_quantile_forecasts_never_cross_and_give_their_intervals(tmp_path):
    path = tmp_path / "q.npz"
    engine.train_series(as_table(hourly()), path, targets="load", known="temperature,promotion", horizon=4,
                        loss="quantile", quantiles="0.05,0.1,0.5,0.9,0.95", **TINY)
    table = engine.forecast_series(path, as_table(hourly(HOURS + 4, future=4)), 4, intervals="80,90")
    assert table.column_names == ["time", "load", "load_lo80", "load_hi80", "load_lo90", "load_hi90",
                                  "load_q0.05", "load_q0.1", "load_q0.5", "load_q0.9", "load_q0.95"]
    quantiles = np.stack([table.column(f"load_q{q:g}").to_numpy() for q in (0.05, 0.1, 0.5, 0.9, 0.95)])
    assert np.all(np.diff(quantiles, axis=0) >= 0)
    np.testing.assert_array_equal(table.column("load").to_numpy(), quantiles[2])   # the median
    # the 0.05 / 0.95 pair, moved by its conformal correction on the validation errors (CQR)
    recipe = engine.read_metadata(path)["user"]["data"]
    shift = np.array(recipe["conformal"]["levels"]["90"]) * np.array(recipe["target_norm"]["std"])
    np.testing.assert_allclose(table.column("load_lo90").to_numpy(), quantiles[0] - shift, rtol=1e-12)
    np.testing.assert_allclose(table.column("load_hi90").to_numpy(), quantiles[4] + shift, rtol=1e-12)
    engine.train_series(as_table(hourly()), tmp_path / "raw.npz", targets="load", known="temperature,promotion",
                        horizon=4, loss="quantile", val_fraction=0.0, **TINY)   # no validation: the pairs as they are
    raw = engine.forecast_series(tmp_path / "raw.npz", as_table(hourly(HOURS + 4, future=4)), 4)
    np.testing.assert_array_equal(raw.column("load_lo80").to_numpy(), raw.column("load_q0.1").to_numpy())
    # a level without its quantile pair is left out
    assert "load_lo95" not in engine.forecast_series(path, as_table(hourly(HOURS + 4, future=4)), 4).column_names
    metrics = engine.evaluate_series(path, as_table(hourly()), start=500)
    assert "pinball" in metrics and "crps" in metrics and set(metrics["intervals"]) == {"80"}


def test_a_point_model_gets_split_conformal_intervals_from_its_validation_errors(tmp_path):
    path = tmp_path / "p.npz"
    engine.train_series(as_table(hourly()), path, targets="load", known="temperature,promotion", horizon=3,
                        val_fraction=0.2, **TINY)
    recipe = engine.read_metadata(path)["user"]["data"]
    assert recipe["loss"] == "mse" and recipe["conformal"]["n"] == [recipe["val_steps"]] * 3
    table = engine.forecast_series(path, as_table(hourly(HOURS + 3, future=3)), 3)
    point, lo, hi = (table.column(name).to_numpy() for name in ("load", "load_lo95", "load_hi95"))
    np.testing.assert_allclose(point - lo, hi - point, rtol=1e-9)      # symmetric about the forecast
    inner = table.column("load_hi80").to_numpy() - point
    assert np.all(inner < hi - point)
    engine.train_series(as_table(hourly()), tmp_path / "none.npz", targets="load", known="temperature,promotion",
                        horizon=3, val_fraction=0.0, **TINY)
    plain = engine.forecast_series(tmp_path / "none.npz", as_table(hourly(HOURS + 3, future=3)), 3)
    assert plain.column_names == ["time", "load"]   # no validation errors: no intervals


# ---------------------------------------------------------------- panels

def panel_table(count=3, future=0):
    parts = []
    for i in range(count):
        one = hourly(HOURS + future, seed=i, future=future)
        parts.append(pa.table({"id": [f"s{i}"] * len(one.values), "time": one.time,
                               "load": one.values[:, 0] * (i + 1), "temperature": one.values[:, 1],
                               "promotion": one.values[:, 2], "capacity": np.full(len(one.values), 10.0 * (i + 1))}))
    return pa.concat_tables(parts)


def test_a_panel_with_known_static_and_calendar_inputs(tmp_path):
    path = tmp_path / "panel.npz"
    engine.train_series(panel_table(), path, id_column="id", targets="load", known="temperature,promotion",
                        static="capacity", calendar="hour", horizon=4, loss="gaussian", **TINY)
    recipe = engine.read_metadata(path)["user"]["data"]
    assert recipe["static"] == ["capacity"] and recipe["features"][-1] == "capacity"
    table = engine.forecast_series(path, panel_table(future=4), 4, id_column="id")
    assert table.column_names[:3] == ["id", "time", "load"] and table.num_rows == 12
    means = [table.column("load").to_numpy()[4 * i:4 * i + 4].mean() for i in range(3)]
    assert means[0] < means[2]   # each series in its own units
    found = engine.backtest_series(path, panel_table(), start=-60, every=12, id_column="id")
    assert found.table.column_names[:2] == ["origin", "id"]
    assert set(found.table.column("id").to_pylist()) == {"s0", "s1", "s2"}
    metrics = engine.evaluate_series(path, panel_table(), start=-60, id_column="id")
    assert [record["id"] for record in metrics["series"]] == ["s0", "s1", "s2"]


def test_a_static_column_must_hold_one_value_per_series():
    table = panel_table()
    capacity = table.column("capacity").to_numpy().copy()
    capacity[5] += 1
    table = table.set_column(table.column_names.index("capacity"), "capacity", pa.array(capacity))
    with pytest.raises(DataError, match='static: "capacity" changes within series "s0"'):
        engine.train_series(table, None, id_column="id", targets="load", static="capacity", **TINY)


# ---------------------------------------------------------------- the command line

@pytest.fixture
def hourly_csv(tmp_path):
    pa_csv.write_csv(as_table(hourly()), tmp_path / "h.csv")
    return tmp_path / "h.csv"


def test_backtest_writes_its_table_plot_and_metrics(gaussian_model, hourly_csv, tmp_path):
    pytest.importorskip("matplotlib")
    result = run("backtest", gaussian_model, hourly_csv, "--from", "2024-01-20", "--every", 24, "--season", 24,
                 "-o", tmp_path / "bt.csv", "--plot", tmp_path / "bt.png", "--json")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["origins"] == len(range(456, 599, 24)) and len(metrics["steps"]) == 6
    lines = (tmp_path / "bt.csv").read_text().splitlines()
    assert lines[0] == "origin,time,step,target,forecast,actual,naive,lo80,hi80,lo95,hi95"
    assert lines[1].startswith("2024-01-20T00:00,2024-01-20T01:00,1,load,")   # one format for both time columns
    assert (tmp_path / "bt.png").stat().st_size > 0
    text = run("backtest", gaussian_model, hourly_csv, "--from", "2024-01-20")
    assert text.exit_code == 0 and "overall" in text.stdout and "80% intervals: coverage" in text.stdout


@pytest.mark.parametrize("args, fragments", [
    (["train", "{csv}", "--targets", "load", "--known", "load"], ['"load" is a target']),
    (["train", "{csv}", "--targets", "load", "--calendar", "hour", "--time-column", "none"],
     ["calendar hour: needs a time column"]),
    (["train", "{csv}", "--loss", "quantile", "--quantiles", "0.5,0.1"], ["quantile levels must be increasing"]),
    (["train", "{csv}", "--loss", "quantile", "--quantiles", "0.1,1.5"], ["in (0, 1)"]),
    (["train", "{csv}", "--loss", "quantile", "--quantiles", "0.1,0.1"], ["increasing, each once"]),
    (["train", "{csv}", "--quantiles", "0.1,0.9"], ["--quantiles applies to --loss quantile only"]),
    (["train", "{csv}", "--targets", "load", "--horizon", "24", "--lags", "12"], ["lag 12 is shorter than the horizon 24"]),
    (["forecast", "{model}", "{csv}", "--intervals", "0,95"], ["--intervals: levels are percentages"]),
    (["evaluate", "{model}", "{csv}", "--intervals", "100"], ["--intervals: levels are percentages"]),
    (["backtest", "{model}", "{csv}", "--intervals", "80,80"], ["given twice"]),
    (["backtest", "{model}", "{csv}", "--from", "5"], ["from: 5 is before row 23", "lags 24"]),
    (["backtest", "{model}", "{csv}", "--from", "2024-03-01"], ["after the last time of the series"]),
    (["backtest", "{model}", "{csv}", "--from", "599"], ["leaves no origin with a value to forecast"]),
    (["backtest", "{model}", "{csv}", "--steps", "7"], ["the model forecasts 6 step(s)"]),
])
def test_bad_forecasting_input_is_one_error_line_and_writes_nothing(gaussian_model, hourly_csv, args, fragments):
    folder = hourly_csv.parent
    args = [arg.format(csv=hourly_csv, model=gaussian_model) for arg in args]
    output = {"train": ["-o", folder / "out.npz"], "evaluate": []}.get(args[0], ["-o", folder / "out.csv"])
    before = snapshot(folder)
    assert_bad_input(run(*args, *output), *fragments)
    assert snapshot(folder) == before


def test_the_onnx_graph_of_a_trained_direct_model_gives_its_forecasts(gaussian_model, tmp_path):
    """--with-normalization: raw input features in, means and scales in original units out."""
    onnxruntime = pytest.importorskip("onnxruntime")
    result = run("export", gaussian_model, "--format", "onnx", "-o", tmp_path / "g.onnx", "--with-normalization")
    assert result.exit_code == 0, result.stderr
    model, metadata = engine.load_for_inference(gaussian_model)
    recipe = metadata["data"]
    data = hourly(HOURS + 6, future=6)
    framed = frames.frame_series(data, recipe, data.time, end=HOURS)   # every origin up to the last observed row
    session = onnxruntime.InferenceSession(str(tmp_path / "g.onnx"))
    names = [entry.name for entry in session.get_inputs()]
    state = np.zeros((1, 1, model.hidden_size), np.float32)
    feeds = {"x": framed.x[:, None, :].astype(np.float32), **{name: state for name in names if name != "x"}}
    y = session.run(["y"], feeds)[0][-1, 0]               # the last origin: 6 means, then 6 scales
    forecast = engine.forecast_series(gaussian_model, as_table(data), 6)
    np.testing.assert_allclose(y[:6], forecast.column("load").to_numpy(), rtol=1e-4)
    assert np.all(y[6:] > 0)


def test_directory_and_wide_panels_train_forecast_and_backtest(tmp_path):
    (tmp_path / "files").mkdir()
    wide = {"time": hourly().time}
    for i in range(3):
        one = hourly(seed=i)
        pa_csv.write_csv(pa.table({"time": one.time, "load": one.values[:, 0] * (i + 1)}),
                         tmp_path / "files" / f"m{i}.csv")
        wide[f"m{i}"] = one.values[:, 0] * (i + 1)
    pa_csv.write_csv(pa.table(wide), tmp_path / "wide.csv")
    for source, reading in ((tmp_path / "files", {}), (tmp_path / "wide.csv", {"series_columns": "all"})):
        path = tmp_path / "model.npz"
        engine.train_series(str(source), path, calendar="hour", horizon=3, force=True, **reading, **TINY)
        table = engine.forecast_series(path, str(source), 3)
        assert table.column_names[:2] == ["id", "time"] and table.num_rows == 9
        found = engine.backtest_series(path, str(source), start=-50, every=10)
        assert set(found.table.column("id").to_pylist()) == {"m0", "m1", "m2"}
        assert found.metrics["overall"]["count"] == 3 * 5 * 3


def test_a_sweep_varies_lags_and_calendar_features_prepared_once_each(tmp_path):
    outcome = engine.sweep.run(as_table(hourly()), {"lags": ["none", "24", "24+168"], "calendar": ["none", "hour"]},
                               trials=6, sampler="grid", prune=False, output_dir=tmp_path / "sw", targets="load",
                               known="temperature", **TINY)
    settings = {(row["lags"], row["calendar"]) for row in outcome["results"]}
    assert len(settings) == 6 and all(row["state"] == "complete" for row in outcome["results"])
    best = engine.read_metadata(tmp_path / "sw" / "best.npz")["user"]["data"]
    assert best["lags"] in ([], [24], [24, 168]) and best["calendar"] in ([], ["hour"])
    with pytest.raises(ValueError, match="--known cannot be swept"):
        engine.sweep.run(as_table(hourly()), {"known": ["temperature", "promotion"]}, trials=2,
                         output_dir=tmp_path / "sw2", targets="load", **TINY)


def test_training_leaves_out_the_future_rows_that_forecasting_reads(tmp_path):
    data = as_table(hourly(HOURS + 6, future=6))
    model, _, prepared = engine.train_series(data, tmp_path / "m.npz", targets="load", known="temperature",
                                             horizon=2, val_fraction=0.0, **TINY)
    recipe = prepared.metadata
    assert recipe["train_steps"] == HOURS - 1 - recipe["lags"][-1] + 1   # origins 167..598: step 1 observed
    assert engine.forecast_series(tmp_path / "m.npz", data, 2).num_rows == 2
