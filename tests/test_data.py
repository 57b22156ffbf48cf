"""The data layer: reading, columns, missing values, normalisation, differencing, framing,
streams, validation split, demos, baseline and metrics (engine/data.py, engine/demos.py)."""
import json

import numpy as np
import pytest

from engine.data import (DataError, Normalizer, Series, difference, fill_missing, frame,
                         load_series, mae, mse, persistence_baseline, prepare_forecast_data,
                         prepare_training_data, rmse, select_columns, split_validation,
                         to_original_units, to_streams, undifference)
from engine.demos import DEMOS, load_demo


def write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- CSV

@pytest.mark.parametrize("delimiter", [",", ";", "\t", " ", "   "])
def test_csv_with_header_each_delimiter(tmp_path, delimiter):
    rows = ["temp load", "1.5 2", "-3 4e2", "5 6"]
    series = load_series(write(tmp_path, "\n".join(row.replace(" ", delimiter) for row in rows)))
    assert series.names == ("temp", "load")
    np.testing.assert_array_equal(series.values, [[1.5, 2], [-3, 400], [5, 6]])
    assert series.values.dtype == np.float64


def test_csv_without_header_and_single_column(tmp_path):
    series = load_series(write(tmp_path, "1,2,3\n4,5,6\n"))
    assert series.names == ("0", "1", "2")
    np.testing.assert_array_equal(series.values, [[1, 2, 3], [4, 5, 6]])
    series = load_series(write(tmp_path, "0.5\n1.5\n2.5\n", "one.txt"))
    assert series.names == ("0",) and series.values.shape == (3, 1)


def test_csv_empty_and_missing_cells_are_nan(tmp_path):
    text = "# a comment\n,a,b\n0,1,\n1,,NaN\n\n2,NA,3\n"
    series = load_series(write(tmp_path, text))
    assert series.names == ("0", "a", "b")       # an unnamed column is named by its index
    expected = [[0, 1, np.nan], [1, np.nan, np.nan], [2, np.nan, 3]]
    np.testing.assert_array_equal(series.values, expected)


def test_csv_quoted_cells_with_delimiter_inside(tmp_path):
    series = load_series(write(tmp_path, '"temp, C","load"\n"1",2\n3,4\n'))
    assert series.names == ("temp, C", "load")


def test_csv_non_numeric_cell_names_file_line_and_column(tmp_path):
    path = write(tmp_path, "# comment\ntemp;load\n1;2\n\n3;oops\n")
    with pytest.raises(DataError) as error:
        load_series(path)
    assert str(error.value) == f"{path}, line 5, column \"load\": not a finite number: 'oops'"
    path = write(tmp_path, "1,2\n3,4\n5,x\n", "noheader.csv")
    with pytest.raises(DataError, match=r"noheader\.csv, line 3, column 1: not a finite number"):
        load_series(path)


def test_csv_unused_text_column_is_no_error(tmp_path):
    # (a column of dates is no longer a text column but the time column: tests/test_reading.py)
    path = write(tmp_path, "site,temp,load\nnorth,1,2\nsouth,3,\neast,5,6\n")
    np.testing.assert_array_equal(load_series(path, columns="temp,load").values,
                                  [[1, 2], [3, np.nan], [5, 6]])
    data = prepare_training_data(path, targets="load", inputs="temp")
    assert data.metadata["columns"] == ["site", "temp", "load"]
    assert data.x_train.shape == (2, 1, 1)
    with pytest.raises(DataError, match=r'line 2, column "site": not a finite number: \'north\''):
        load_series(path)
    with pytest.raises(DataError, match=r'line 2, column "site"'):
        prepare_training_data(path)                             # targets default to all columns


def test_csv_windows_line_ends_and_byte_order_mark(tmp_path):
    path = tmp_path / "win.csv"
    path.write_bytes("\ufeffa;b\r\n1;2\r\n\r\n3;?\r\n".encode("utf-8"))
    with pytest.raises(DataError, match='line 4, column "b"'):
        load_series(path)
    assert load_series(path, columns="a").names == ("a",)


def test_csv_ragged_row_and_empty_files(tmp_path):
    with pytest.raises(DataError, match=r"line 3: expected 2 cells like the first line, found 3"):
        load_series(write(tmp_path, "a,b\n1,2\n3,4,5\n"))
    with pytest.raises(DataError, match="holds no data"):
        load_series(write(tmp_path, "\n# nothing\n", "empty.csv"))
    with pytest.raises(DataError, match="header line but no data rows"):
        load_series(write(tmp_path, "a,b\n", "header.csv"))
    with pytest.raises(DataError, match="infinite|not a finite number: 'inf'"):
        load_series(write(tmp_path, "1\ninf\n", "inf.csv"))


def test_missing_or_unreadable_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: no such data file"):
        load_series(tmp_path / "nope.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DataError, match=r"bin\.csv: cannot read"):
        load_series(tmp_path / "bin.csv")
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match=r"bad\.npy: not a readable NumPy file"):
        load_series(tmp_path / "bad.npy")


# ---------------------------------------------------------------- NumPy files

def test_npy_one_and_two_dimensional(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(5))
    series = load_series(tmp_path / "a.npy")
    assert series.values.shape == (5, 1) and series.names == ("0",)
    np.save(tmp_path / "b.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    assert load_series(tmp_path / "b.npy").values.shape == (3, 2)
    np.save(tmp_path / "c.npy", np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match=r"shape \(T,\) or \(T, C\)"):
        load_series(tmp_path / "c.npy")
    np.save(tmp_path / "d.npy", np.array(["a", "b"]))
    with pytest.raises(DataError, match="real numbers"):
        load_series(tmp_path / "d.npy")


def test_npz_single_named_and_columns(tmp_path):
    np.savez(tmp_path / "one.npz", np.ones((4, 2)))
    assert load_series(tmp_path / "one.npz").values.shape == (4, 2)
    np.savez(tmp_path / "cols.npz", temp=np.arange(3.0), load=np.ones(3))
    series = load_series(tmp_path / "cols.npz")
    assert series.names == ("temp", "load")
    np.testing.assert_array_equal(series.values[:, 0], [0, 1, 2])
    np.savez(tmp_path / "mixed.npz", series=np.ones((4, 2)), other=np.ones(7))
    assert load_series(tmp_path / "mixed.npz", key="series").values.shape == (4, 2)
    with pytest.raises(DataError, match='several arrays .*"series", "other".*key='):
        load_series(tmp_path / "mixed.npz")
    with pytest.raises(DataError, match="no array named 'x'"):
        load_series(tmp_path / "mixed.npz", key="x")


# ---------------------------------------------------------------- columns

def test_select_columns_by_name_index_and_string(tmp_path):
    series = Series(np.arange(12.0).reshape(4, 3), ("temp", "load", "rain"))
    assert select_columns(series, "rain,0").names == ("rain", "temp")
    picked = select_columns(series, ["load", 2])
    np.testing.assert_array_equal(picked.values, series.values[:, [1, 2]])
    np.testing.assert_array_equal(select_columns(series, None).values, series.values)
    path = write(tmp_path, "temp,load\n1,2\n")
    assert load_series(path, columns="load").names == ("load",)


def test_select_unknown_or_repeated_column():
    series = Series(np.zeros((2, 2)), ("temp", "load"), "x.csv")
    with pytest.raises(DataError) as error:
        select_columns(series, "temp,wind", "targets")
    message = str(error.value)
    assert "targets" in message and "'wind'" in message and '"temp", "load"' in message
    with pytest.raises(DataError, match="unknown column 5"):
        select_columns(series, [5])
    with pytest.raises(DataError, match="listed twice"):
        select_columns(series, "temp,0")
    with pytest.raises(DataError, match="separated by commas"):
        select_columns(series, "temp,,load")


# ---------------------------------------------------------------- missing inputs

def test_fill_methods():
    values = np.array([[np.nan, 1], [2, np.nan], [np.nan, np.nan], [6, 4], [np.nan, 5]])
    np.testing.assert_array_equal(fill_missing(values, "ffill"),
                                  [[2, 1], [2, 1], [2, 1], [6, 4], [6, 5]])
    np.testing.assert_array_equal(fill_missing(values, "zero"),
                                  [[0, 1], [2, 0], [0, 0], [6, 4], [0, 5]])
    np.testing.assert_allclose(fill_missing(values, "linear"),
                               [[2, 1], [2, 2], [4, 3], [6, 4], [6, 5]])
    assert np.isnan(values).sum() == 5               # the input is left untouched


def test_fill_errors():
    values = np.array([[1.0], [np.nan]])
    with pytest.raises(DataError, match=r"1 missing values .*step 1.*--fill ffill\|zero\|linear"):
        fill_missing(values, None)
    with pytest.raises(DataError, match="fill must be one of"):
        fill_missing(values, "mean")
    with pytest.raises(DataError, match='column "x" holds no values'):
        fill_missing(np.full((3, 1), np.nan), "linear", ["x"])
    np.testing.assert_array_equal(fill_missing(np.ones((2, 1)), None), np.ones((2, 1)))


# ---------------------------------------------------------------- normalisation, differencing

def test_normalizer_round_trip_and_dict():
    rng = np.random.default_rng(0)
    values = rng.normal(5, 3, (100, 2))
    values[3, 0] = np.nan
    values[:, 1] = 7.0                                # constant column: std 1
    norm = Normalizer.fit(values)
    assert norm.std[1] == 1 and norm.mean[1] == 7
    scaled = norm.transform(values)
    np.testing.assert_allclose(np.nanmean(scaled, axis=0), [0, 0], atol=1e-12)
    np.testing.assert_allclose(np.nanstd(scaled[:, 0]), 1)
    np.testing.assert_allclose(norm.inverse_transform(scaled), values)
    record = json.loads(json.dumps(norm.to_dict()))
    again = Normalizer.from_dict(record)
    np.testing.assert_array_equal(again.mean, norm.mean)
    np.testing.assert_array_equal(again.std, norm.std)
    with pytest.raises(DataError, match="positive 'std'"):
        Normalizer.from_dict({"mean": [0.0], "std": [0.0]})
    with pytest.raises(DataError, match="'mean' and 'std'"):
        Normalizer.from_dict({"mean": [0.0]})


@pytest.mark.filterwarnings("error")   # no overflow warning on the way
def test_normalizer_fits_values_at_the_float64_limit():
    largest = np.finfo(np.float64).max
    values = np.array([[largest, largest], [-largest, largest], [largest, largest], [-largest, largest]])
    norm = Normalizer.fit(values)
    np.testing.assert_array_equal(norm.mean, [0, largest])
    np.testing.assert_array_equal(norm.std, [largest, 1])
    np.testing.assert_array_equal(norm.transform(values), [[1, 0], [-1, 0], [1, 0], [-1, 0]])
    assert np.isinf(Normalizer(np.zeros(1), np.full(1, 1e-300)).transform(np.full((1, 1), 1e300))).all()


def test_difference_round_trip():
    levels = np.cumsum(np.random.default_rng(1).normal(size=(20, 3)), axis=0)
    deltas = difference(levels)
    assert deltas.shape == (19, 3)
    np.testing.assert_allclose(undifference(deltas, levels[0]), levels[1:])
    with pytest.raises(DataError, match="at least 2 steps"):
        difference(levels[:1])


# ---------------------------------------------------------------- framing, streams, split

def test_frame_shifts_targets_by_horizon():
    series = np.arange(10.0)[:, None]
    x, y = frame(series, series, horizon=3)
    assert x.shape == y.shape == (7, 1)
    np.testing.assert_array_equal(y[:, 0], x[:, 0] + 3)
    with pytest.raises(DataError, match="too short for horizon 10"):
        frame(series, series, horizon=10)
    with pytest.raises(DataError, match="horizon must be an integer >= 1"):
        frame(series, series, horizon=0)


def test_to_streams_shapes_and_contents():
    x = np.arange(23.0)[:, None]
    y = 100 + x
    xs, ys = to_streams(x, y, streams=4)
    assert xs.shape == ys.shape == (5, 4, 1) and xs.flags.c_contiguous
    np.testing.assert_array_equal(xs[:, 2, 0], [10, 11, 12, 13, 14])   # stream b = [bS, (b+1)S)
    np.testing.assert_array_equal(ys[:, :, 0], 100 + xs[:, :, 0])
    assert xs.max() == 19                                              # remainder dropped
    with pytest.raises(DataError, match=r"23 steps.*4 streams.*5 steps per stream.*fewer than "
                                        r"the 6 needed.*--streams.*--k1"):
        to_streams(x, y, streams=4, min_steps=6)


def test_split_validation_is_the_time_tail():
    x = np.arange(10.0)[:, None]
    (x_train, y_train), (x_val, y_val) = split_validation(x, -x, 0.3)
    np.testing.assert_array_equal(x_train[:, 0], np.arange(7))
    np.testing.assert_array_equal(x_val[:, 0], [7, 8, 9])
    np.testing.assert_array_equal(y_val, -x_val)
    assert split_validation(x, x, 0.0)[1] is None
    with pytest.raises(DataError, match="no validation steps.*--val-fraction"):
        split_validation(x, x, 0.01)
    with pytest.raises(DataError, match=r"in \[0, 1\)"):
        split_validation(x, x, 1.0)


# ---------------------------------------------------------------- the whole pipeline

def test_prepare_autoregressive_next_step(tmp_path):
    values = np.sin(np.arange(1000) / 7.0) * 3 + 10
    path = write(tmp_path, "level\n" + "\n".join(map(str, values.tolist())))
    data = prepare_training_data(path, horizon=2, streams=4, val_fraction=0.2, min_steps=10)
    meta = data.metadata
    T = 1000 - 2
    assert meta["train_steps"] == T - round(0.2 * T) and meta["val_steps"] == round(0.2 * T)
    assert data.x_train.shape == data.y_train.shape == (meta["train_steps"] // 4, 4, 1)
    assert data.x_val.shape == data.y_val.shape == (meta["val_steps"], 1, 1)
    assert meta["inputs"] == meta["targets"] == ["level"]
    json.dumps(meta)                                             # checkpoint-ready
    input_norm = Normalizer.from_dict(meta["input_norm"])
    target_norm = Normalizer.from_dict(meta["target_norm"])
    # stream 1 starts at step S; x[t] = level[t], y[t] = level[t + 2]
    S = data.x_train.shape[0]
    np.testing.assert_allclose(input_norm.inverse_transform(data.x_train[:, 1]), values[S:2 * S, None])
    np.testing.assert_allclose(target_norm.inverse_transform(data.y_train[:, 1]),
                               values[S + 2:2 * S + 2, None])
    # the validation tail follows training in time, without overlap
    start = meta["train_steps"]
    np.testing.assert_allclose(input_norm.inverse_transform(data.x_val[:, 0]), values[start:T, None])
    # the normalisation is fitted on the training part only
    np.testing.assert_allclose(input_norm.mean, [values[:start].mean()])


def test_prepare_inputs_targets_missing_targets_and_fill():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(200, 3))
    table[10, 2] = np.nan                                       # a missing target stays missing
    table[20, 0] = np.nan                                       # a missing input needs --fill
    series = Series(table, ("a", "b", "c"))
    with pytest.raises(DataError, match="--fill"):
        prepare_training_data(series, inputs="a,b", targets="c")
    data = prepare_training_data(series, inputs="a,b", targets="c", fill="zero")
    assert data.x_train.shape == (199, 1, 2) and data.y_train.shape == (199, 1, 1)
    assert np.isnan(data.y_train[9, 0, 0]) and np.isfinite(data.x_train).all()
    assert data.x_val is None
    everything = prepare_training_data(series, fill="linear")          # targets default: all
    assert everything.metadata["inputs"] == ["a", "b", "c"]
    assert np.isnan(everything.y_train[9, 0, 2]) and np.isfinite(everything.x_train).all()


def test_prepare_too_short_and_blind_parts():
    series = Series(np.arange(100.0)[:, None], ("v",))
    with pytest.raises(DataError, match="fewer than the 50 needed"):
        prepare_training_data(series, streams=4, min_steps=50)
    gappy = np.arange(100.0)
    gappy[80:] = np.nan
    with pytest.raises(DataError, match='validation tail holds no observed values of target "0"'):
        prepare_training_data(gappy, val_fraction=0.15, fill="ffill")
    with pytest.raises(DataError, match="unknown column 'x'"):
        prepare_training_data(series, targets="x")


def test_difference_forecasts_beyond_the_training_range():
    levels = np.arange(50.0) * 2 + 100                          # rising: val leaves the range
    data = prepare_training_data(levels, difference=True, val_fraction=0.2)
    meta = data.metadata
    # inputs and targets are changes (all 2): normalised to 0 with std 1
    assert meta["input_norm"] == {"mean": [2.0], "std": [1.0]}
    np.testing.assert_array_equal(data.x_train, 0)
    np.testing.assert_array_equal(data.y_val, 0)
    # forecasts go back to levels through the last observed level
    forecast = prepare_forecast_data(levels, meta)
    assert forecast.x.shape == (49, 1, 1)
    predicted = to_original_units(np.zeros((49, 1)), forecast.base, meta)
    np.testing.assert_allclose(predicted[:-1, 0], levels[2:])


def test_trend_demo_leaves_its_training_range_unless_differenced():
    levels = prepare_training_data(load_demo("trend"), val_fraction=0.2)
    assert levels.x_val.max() > levels.x_train.max() + 0.5             # beyond the training range
    changes = prepare_training_data(load_demo("trend"), val_fraction=0.2, difference=True)
    assert np.abs(changes.x_val).max() < 6 and changes.x_val.shape == (1000, 1, 1)


def test_forecast_data_follows_the_recipe(tmp_path):
    train = Series(np.column_stack([np.arange(30.0), np.arange(30.0) ** 2]), ("t", "sq"))
    meta = prepare_training_data(train, inputs="t", targets="sq").metadata
    path = write(tmp_path, "sq,t\n1,1\n4,2\n9,3\n")            # other column order: by name
    forecast = prepare_forecast_data(path, meta)
    norm = Normalizer.from_dict(meta["input_norm"])
    np.testing.assert_allclose(norm.inverse_transform(forecast.x[:, 0]), [[1], [2], [3]])
    np.testing.assert_array_equal(forecast.levels, [[1], [4], [9]])
    y_hat = Normalizer.from_dict(meta["target_norm"]).transform(np.array([[5.0], [6], [7]]))
    np.testing.assert_allclose(to_original_units(y_hat, forecast.base, meta), [[5], [6], [7]])
    with pytest.raises(DataError, match="unknown column 'sq'"):
        prepare_forecast_data(write(tmp_path, "t\n1\n", "other.csv"), meta)


# ---------------------------------------------------------------- demos

@pytest.mark.parametrize("name", sorted(DEMOS))
def test_demos_are_deterministic(name):
    first, again, other = load_demo(name), load_demo(name), load_demo(name, seed=1)
    np.testing.assert_array_equal(first.values, again.values)
    assert not np.array_equal(first.values, other.values)
    names = ("load", "temperature", "promotion") if name == "load" else ("value",)
    assert first.names == names and first.values.shape == (len(first.values), len(names))
    assert np.isfinite(first.values).all() and first.source == f"demo:{name}"


def test_sine_demo_is_multi_seasonal():
    value = load_demo("sine").values[:, 0]
    assert len(value) == 20_000
    spectrum = np.abs(np.fft.rfft(value))
    peaks = np.argsort(spectrum)[-2:]                          # daily and weekly cycles
    assert set(np.round(len(value) / peaks)) == {24, 168}


def test_mackey_glass_range_and_not_periodic():
    value = load_demo("mackey-glass").values[:, 0]
    assert len(value) == 10_000
    assert 0.2 < value.min() and value.max() < 1.4 and value.std() > 0.15
    # no lag brings the series back onto itself: mean |x(t + lag) - x(t)| stays large
    closest = min(np.mean(np.abs(value[lag:] - value[:-lag])) for lag in range(20, 3000))
    assert closest > 0.05


def test_unknown_demo():
    with pytest.raises(DataError, match="unknown demo 'x'; choose one of sine, mackey-glass, trend"):
        load_demo("x")


# ---------------------------------------------------------------- baseline and metrics

def test_persistence_baseline():
    targets = np.array([[np.nan], [1.0], [np.nan], [3.0], [4.0]])
    baseline = persistence_baseline(targets, horizon=1)
    np.testing.assert_array_equal(baseline, [[np.nan], [1], [1], [3]])
    assert persistence_baseline(targets, horizon=2).shape == (3, 1)


def test_metrics_ignore_missing_targets():
    y = np.array([[1.0, np.nan], [2.0, 4.0]])
    y_hat = np.array([[2.0, 100.0], [0.0, 4.0]])             # errors 1, (skipped), -2, 0
    assert mse(y_hat, y) == pytest.approx(5 / 3)
    assert rmse(y_hat, y) == pytest.approx(np.sqrt(5 / 3))
    assert mae(y_hat, y) == pytest.approx(1.0)
    assert np.isnan(mse(y_hat, np.full_like(y, np.nan)))
    with pytest.raises(DataError, match="same shape"):
        mae(y_hat, y[:1])


def test_single_column_csv_blank_line_is_a_missing_value(tmp_path):
    # In a one-column CSV an empty cell is a blank line: it must stay a gap (NaN), not
    # vanish and shift every later value one step earlier. Trailing blank lines are not data.
    path = tmp_path / "gaps.csv"
    path.write_text("v\n1\n2\n\n4\n\n\n")
    np.testing.assert_array_equal(load_series(path).values.ravel(), [1, 2, np.nan, 4])
