"""Panels (engine.panel): sources and their errors, packing into streams with resets,
per-series scaling, per-series metrics, evaluation and forecasts, the sensors demo."""
import json
import math

import numpy as np
import pyarrow as pa
import pytest

import engine
from engine.data import DataError, Normalizer, mase, seasonal_naive, smape
from engine.demos import DEMOS, sensors
from engine.panel import (Panel, PanelScaler, as_panel, evaluate_panel, forecast_panel,
                          forward_series, from_files, from_long, from_wide, future_times,
                          pack_layout, prepare_panel_training_data, single, to_long)
from engine.series import Series

HOUR = np.timedelta64(1, "h")
START = np.datetime64("2024-01-01T00:00", "ns")


def hourly(count, offset=0):
    return START + (np.arange(count) + offset) * HOUR


def long_table(lengths, seed=0, shuffle=True):
    """Long-format rows of len(lengths) series "s0", "s1", ... of values id * 1000 + row."""
    ids, times, values = [], [], []
    for index, length in enumerate(lengths):
        ids += [f"s{index}"] * length
        times.append(hourly(length, offset=index))
        values.append(index * 1000 + np.arange(length, dtype=float))
    table = pa.table({"value": np.concatenate(values), "id": ids, "time": np.concatenate(times)})
    if shuffle:
        table = table.take(np.random.default_rng(seed).permutation(table.num_rows))
    return table


# ---------------------------------------------------------------- sources

def test_long_format_sorts_rows_per_id_by_time():
    panel = from_long(long_table([5, 3, 7]), "id", "time")
    assert panel.ids == ("s0", "s1", "s2") and panel.lengths == (5, 3, 7)
    assert panel.names == ("value",)
    for index, (one, times) in enumerate(zip(panel.series, panel.times)):
        np.testing.assert_array_equal(one.values[:, 0], index * 1000 + np.arange(len(times)))
        np.testing.assert_array_equal(times, hourly(len(times), offset=index))


def test_long_format_without_time_keeps_row_order_and_numeric_ids_sort_as_numbers():
    table = pa.table({"id": [10, 9, 10, 9, 10], "v": [1.0, 2.0, 3.0, 4.0, 5.0]})
    panel = from_long(table, "id")
    assert panel.ids == ("9", "10")
    np.testing.assert_array_equal(panel.series[1].values[:, 0], [1, 3, 5])
    assert panel.times == (None, None)


def test_long_format_from_a_pandas_dataframe():
    pandas = pytest.importorskip("pandas")
    frame = long_table([4, 6]).to_pandas()
    panel = from_long(frame, "id", "time")
    assert panel.lengths == (4, 6)
    np.testing.assert_array_equal(panel.series[1].values[:, 0], 1000 + np.arange(6))
    assert isinstance(frame, pandas.DataFrame)


def test_long_format_errors():
    table = long_table([4, 3], shuffle=False)
    with pytest.raises(DataError, match=r'series "s1" has 3 rows; at least 4'):
        from_long(table, "id", "time", min_length=4)
    doubled = pa.concat_tables([table, table.slice(5, 1)])
    with pytest.raises(DataError, match=r'series "s1" has two rows at time 2024-01-01T02'):
        from_long(doubled, "id", "time")
    with pytest.raises(DataError, match=r"no column 'key'"):
        from_long(table, "key")
    with pytest.raises(DataError, match="empty cells"):
        from_long(pa.table({"id": ["a", None], "v": [1.0, 2.0]}), "id")
    daily = pa.table({"id": ["a"] * 3 + ["b"] * 3, "v": np.arange(6.0),
                      "time": np.r_[hourly(3), START + np.arange(3) * np.timedelta64(1, "D")]})
    with pytest.raises(DataError, match=r'"a" has a step of 1 hours, series "b" one of 1 days'):
        from_long(daily, "id", "time")


def test_months_of_different_lengths_are_one_frequency():
    months = np.array(["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30"], dtype="datetime64[ns]")
    table = pa.table({"id": ["a", "a", "b", "b"], "time": months, "v": [1.0, 2, 3, 4]})
    panel = from_long(table, "id", "time")   # steps of 29 and 30 days: both monthly
    np.testing.assert_array_equal(future_times(months, 2).astype("datetime64[D]"),   # month ends
                                  np.array(["2024-05-31", "2024-06-30"], dtype="datetime64[D]"))
    assert panel.lengths == (2, 2)


def test_text_value_column_is_an_error_only_when_used():
    table = pa.table({"id": ["a"] * 4, "note": ["x"] * 4, "v": np.arange(4.0)})
    panel = from_long(table, "id")
    assert panel.names == ("note", "v")
    prepare_panel_training_data(panel, targets="v")
    with pytest.raises(DataError, match="'note' holds string, not numbers"):
        prepare_panel_training_data(panel, targets="note")


def test_wide_format_trims_each_series():
    nan = np.nan
    table = pa.table({"time": hourly(5), "a": [nan, 1.0, 2, 3, nan], "b": [1.0, 2, nan, 4, 5],
                      "label": ["x"] * 5})
    panel = from_wide(table, "all", "time")
    assert panel.ids == ("a", "b") and panel.lengths == (3, 5) and panel.names == ("value",)
    np.testing.assert_array_equal(panel.times[0], hourly(4)[1:])
    np.testing.assert_array_equal(panel.series[1].values[:, 0], [1, 2, nan, 4, 5])
    assert from_wide(table, "b,a").ids == ("b", "a") and from_wide(table, ["a"]).ids == ("a",)
    with pytest.raises(DataError, match="'label' holds string"):
        from_wide(table, "a,label")
    with pytest.raises(DataError, match="no column 'c'"):
        from_wide(table, "a,c")
    with pytest.raises(DataError, match="not increasing at row 2"):
        from_wide(pa.table({"t": [1.0, 2, 2], "a": [1.0, 2, 3]}), "all", "t")


def test_directory_and_glob_of_files(tmp_path):
    for name, count in (("north", 4), ("south", 6)):
        np.savetxt(tmp_path / f"{name}.csv", np.c_[np.arange(count), np.arange(count) * 2.0],
                   delimiter=",", header="step,value", comments="")
    (tmp_path / ".hidden").write_text("not data")
    panel = from_files(tmp_path, time_column="step")
    assert panel.ids == ("north", "south") and panel.lengths == (4, 6) and panel.names == ("value",)
    np.testing.assert_array_equal(panel.times[1], np.arange(6.0))
    assert as_panel(str(tmp_path / "s*.csv")).ids == ("south",)
    assert as_panel(str(tmp_path / "north.csv")).ids == ("north",)
    np.savetxt(tmp_path / "other.csv", np.c_[np.arange(3.0)], header="level", comments="")
    with pytest.raises(DataError, match=r"other.csv: columns \"level\" differ"):
        from_files(tmp_path)
    (tmp_path / "other.csv").unlink()
    np.save(tmp_path / "north.npy", np.arange(3.0))
    with pytest.raises(DataError, match="several files give the series id 'north'"):
        from_files(tmp_path)
    with pytest.raises(DataError, match="no data files found"):
        from_files(str(tmp_path / "*.parquet"))


def test_single_series_and_as_panel_dispatch():
    panel = single(np.arange(10.0), "meter")
    assert panel.ids == ("meter",) and panel.lengths == (10,)
    assert as_panel(panel) is panel
    assert as_panel(np.ones((5, 2))).names == ("0", "1")
    assert as_panel(long_table([3, 4]), id_column="id", time_column="time").lengths == (3, 4)
    with pytest.raises(DataError, match="not both"):
        as_panel(long_table([3]), id_column="id", series_columns="all")
    with pytest.raises(DataError, match="unknown series id 'nope'"):
        panel.select("nope")
    with pytest.raises(DataError, match="'t' is not increasing at row 1"):
        as_panel(pa.table({"t": [2.0, 1.0], "v": [1.0, 2.0]}), time_column="t")


# ---------------------------------------------------------------- packing

def test_packing_worked_example():
    layout = pack_layout([5, 3, 3, 2, 1], streams=2)   # share 7: nothing is cut
    assert layout.pieces.tolist() == [[0, 0, 5, 0, 0], [1, 0, 3, 1, 0], [2, 0, 3, 1, 3],
                                      [3, 0, 2, 0, 5], [4, 0, 1, 1, 6]]
    assert (layout.steps, layout.streams) == (7, 2)
    layout = pack_layout([10, 2], streams=3)           # share 4: 10 rows cut into 3, 4, 3
    assert layout.pieces.tolist() == [[0, 3, 7, 0, 0], [0, 0, 3, 1, 0], [0, 7, 10, 2, 0],
                                      [1, 0, 2, 1, 3]]
    assert layout.steps == 5
    resets = np.zeros((5, 3), dtype=bool)
    resets[0, :] = resets[3, 1] = True
    np.testing.assert_array_equal(layout.resets, resets)


@pytest.mark.parametrize("seed", range(6))
def test_packing_properties(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 300, rng.integers(1, 40)).tolist()
    streams = int(rng.integers(1, 12))
    layout = pack_layout(lengths, streams)
    share = math.ceil(sum(lengths) / streams)
    series, row = layout.origin()
    # every row of every series exactly once, in order within each piece
    for index, length in enumerate(lengths):
        assert sorted(row[series == index].tolist()) == list(range(length))
    sizes = layout.pieces[:, 2] - layout.pieces[:, 1]
    assert sizes.max() <= share
    for index, length in enumerate(lengths):
        own = layout.pieces[layout.pieces[:, 0] == index]
        assert (len(own) > 1) == (length > share)                   # cut only when too long
        assert len(set(own[:, 3])) == len(own)                      # pieces on separate streams
    # resets exactly where a series or piece starts
    continues = np.zeros_like(layout.resets)
    continues[1:] = (series[1:] == series[:-1]) & (row[1:] == row[:-1] + 1)
    np.testing.assert_array_equal(layout.resets, (series >= 0) & ~continues)
    # placement in order: each piece at the end of its stream, never longer than the one before,
    # into the shortest stream of those not holding its series
    fill = np.zeros(streams, dtype=int)
    for k, (index, first, stop, stream, step) in enumerate(layout.pieces):
        assert step == fill[stream]
        if k:
            assert stop - first <= sizes[k - 1]
        others = [s for s in range(streams) if s not in layout.pieces[:k][layout.pieces[:k, 0] == index, 3]]
        assert fill[stream] == min(fill[s] for s in others)
        fill[stream] += stop - first
    assert fill.max() - fill.min() <= sizes.max()                   # balanced
    assert layout.steps == fill.max()


def test_pack_unpack_round_trip_and_padding():
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal((length, 2)) for length in (50, 7, 31, 2)]
    layout = pack_layout([len(a) for a in arrays], streams=3)
    packed = layout.pack(arrays, np.nan)
    assert packed.shape == (layout.steps, 3, 2)
    assert np.isnan(packed).sum() == 2 * (layout.steps * 3 - sum(len(a) for a in arrays))
    for original, back in zip(arrays, layout.unpack(packed)):
        np.testing.assert_array_equal(original, back)
    with pytest.raises(DataError, match="streams must be an integer"):
        pack_layout([3], streams=0)


# ---------------------------------------------------------------- scaling and training data

def test_per_series_scaling_on_training_parts_and_json_recipe():
    panel = from_long(long_table([100, 60]), "id", "time")
    data = prepare_panel_training_data(panel, streams=2, val_fraction=0.1)
    scaling = json.loads(json.dumps(data.metadata["scaling"]))
    assert scaling["scale"] == "series" and set(scaling["targets"]) == {"s0", "s1"}
    # series s1 = 1000 + row: inputs rows 0..58, training part 0..52 (val 6 rows)
    train_inputs = 1000 + np.arange(53.0)
    assert scaling["inputs"]["s1"] == Normalizer.fit(train_inputs[:, None]).to_dict()
    scaler = PanelScaler.from_dict(scaling)
    assert scaler.for_series("s1")[1].mean[0] == pytest.approx(1000 + np.mean(np.arange(1, 54)))
    for parts in data.layout.unpack(data.x_train):
        assert abs(np.mean(parts)) < 1e-12 and np.std(parts) == pytest.approx(1)
    global_data = prepare_panel_training_data(panel, scale="global")
    assert global_data.metadata["scaling"]["scale"] == "global"
    assert prepare_panel_training_data(panel.select("s0")).metadata["scaling"]["scale"] == "global"
    with pytest.raises(DataError, match='series "s9" was not in the training data'):
        scaler.for_series("s9")
    with pytest.raises(DataError, match="scale must be one of series, global"):
        prepare_panel_training_data(panel, scale="each")


def test_scaling_is_robust_to_huge_values():
    values = np.array([[1e300], [-1e300], [3e300], [np.nan]])
    norm = Normalizer.fit(values)
    assert np.isfinite(norm.mean).all() and np.isfinite(norm.std).all()
    np.testing.assert_allclose(norm.mean, [1e300])
    np.testing.assert_allclose(norm.transform(values[:3])[:, 0], np.array([0, -2, 2]) / np.std([0, -2, 2]),
                               rtol=1e-12)


def test_training_data_packing_and_validation_tails():
    panel = from_long(long_table([400, 100, 50]), "id", "time")
    data = prepare_panel_training_data(panel, streams=2, val_fraction=0.2, val_warmup=30)
    train_lengths = [399 - round(0.2 * 399), 99 - round(0.2 * 99), 49 - round(0.2 * 49)]
    assert data.layout.lengths == tuple(train_lengths)
    assert data.x_train.shape[1:] == (2, 1) and data.resets.shape == data.x_train.shape[:2]
    assert np.isnan(data.y_train[data.layout.origin()[0] < 0]).all()
    assert (data.x_train[data.layout.origin()[0] < 0] == 0).all()
    # validation: one series per stream, 30 warm-up steps without targets, then the tail
    assert data.x_val.shape == (30 + round(0.2 * 399), 3, 1)
    tail = round(0.2 * 49)
    assert np.isnan(data.y_val[:30, 2]).all() and not np.isnan(data.y_val[30:30 + tail, 2]).any()
    assert np.isnan(data.y_val[30 + tail:, 2]).all()
    metadata = data.metadata
    assert metadata["ids"] == ["s0", "s1", "s2"] and metadata["frequency"] == "1 hours"
    json.dumps(metadata)
    with pytest.raises(DataError, match=r'series "s1": val_fraction 0.1 of 4 steps leaves no validation'):
        prepare_panel_training_data(from_long(long_table([50, 5]), "id", "time"), val_fraction=0.1)
    with pytest.raises(DataError, match=r'series "s1": the series has 1 steps, too short for horizon 1'):
        prepare_panel_training_data(from_long(long_table([50, 1]), "id", "time"))
    for options, message in (({"horizon": 0}, "horizon must be an integer >= 1"),
                             ({"val_warmup": -1}, "val_warmup must be an integer >= 0"),
                             ({"streams": 0}, "streams must be an integer >= 1")):
        with pytest.raises(DataError, match=message):
            prepare_panel_training_data(panel, **options)


# ---------------------------------------------------------------- metrics

def test_smape_and_mase_by_hand():
    assert smape(np.array([[2.0], [2.0]]), np.array([[1.0], [2.0]])) == pytest.approx(100 / 3)
    assert smape(np.array([[0.0], [1.0]]), np.array([[0.0], [0.0]])) == pytest.approx(100)
    assert math.isnan(smape(np.array([[5.0]]), np.array([[np.nan]])))
    assert smape(np.array([[1e308]]), np.array([[-1e308]])) == pytest.approx(200)
    levels = np.array([[1.0], [2], [4], [7]])
    naive = seasonal_naive(levels, 1, 1)
    np.testing.assert_array_equal(naive[:, 0], [1, 2, 4])
    assert mase(np.array([[2.0], [5], [6]]), levels[1:], naive) == pytest.approx((2 / 3) / 2)
    constant = np.full((4, 1), 3.0)
    assert math.isnan(mase(constant[1:] + 1, constant[1:], seasonal_naive(constant)))


def test_seasonal_naive_lags():
    levels = np.arange(1.0, 6.0)[:, None]
    np.testing.assert_array_equal(seasonal_naive(levels, 2, 1)[:, 0], [np.nan, 1, 2, 3])
    np.testing.assert_array_equal(seasonal_naive(levels, 2, 3)[:, 0], [np.nan, 1])
    np.testing.assert_array_equal(seasonal_naive(levels, 1, 2)[:, 0], [1, 2, 3])


# ---------------------------------------------------------------- running, evaluating, forecasting

def small_model(cell="gru", seed=0):
    return engine.Model(cell=cell, input_size=1, hidden_size=5, output_size=1, dtype="float64", seed=seed)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_forward_series_equals_one_forward_per_series(cell):
    model = small_model(cell)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((length, 1)) for length in (40, 13, 40, 1, 27)]
    outputs, states = forward_series(model, xs)
    for x, output, state in zip(xs, outputs, states):
        expected, expected_state = model.forward(x[:, None])
        np.testing.assert_allclose(output, expected[:, 0], rtol=0, atol=1e-14)
        for part, expected_part in zip(np.atleast_1d(state) if cell != "lstm" else state,
                                       np.atleast_1d(expected_state) if cell != "lstm" else expected_state):
            np.testing.assert_allclose(part, expected_part, rtol=0, atol=1e-14)


def panel_and_metadata(lengths=(120, 80, 200), scale=None, **options):
    base = from_long(long_table(list(lengths)), "id", "time")
    rng = np.random.default_rng(3)
    members = tuple(Series(np.sin(np.arange(len(s.values))[:, None] / 5) * (i + 1) * 10
                           + rng.normal(0, 0.1, s.values.shape) + 100 * i, s.names, s.source)
                    for i, s in enumerate(base.series))
    panel = Panel(base.ids, members, base.times, base.source)
    data = prepare_panel_training_data(panel, scale=scale, **options)
    return panel, {"data": data.metadata}


def by_hand(model, metadata, panel, season, first_row=0):
    """Per-series MAE, MASE and pooled MSE computed directly, one series at a time."""
    recipe = metadata["data"]
    scaler = PanelScaler.from_dict(recipe["scaling"])
    maes, mases, squares = {}, {}, []
    for series_id, one in zip(panel.ids, panel.series):
        norm_x, norm_y = scaler.for_series(series_id)
        y_hat, _ = model.forward(norm_x.transform(one.values)[:, None])
        predictions = norm_y.inverse_transform(y_hat[:-1, 0])[:, 0]
        levels = one.values[:, 0]
        rows = np.arange(1, len(levels))
        keep = (rows >= first_row) & (rows >= season)
        errors = predictions[keep] - levels[rows[keep]]
        naive_errors = levels[rows[keep] - season] - levels[rows[keep]]
        maes[series_id] = np.mean(np.abs(errors))
        mases[series_id] = maes[series_id] / np.mean(np.abs(naive_errors))
        squares.append(errors ** 2)
    return maes, mases, np.mean(np.concatenate(squares))


@pytest.mark.parametrize("season, start", [(1, None), (4, None), (1, 50), (1, -30), (2, "2024-01-01T05:00")])
def test_evaluate_panel_against_hand_computation(season, start):
    panel, metadata = panel_and_metadata()
    model = small_model()
    result = evaluate_panel(model, metadata, panel, season=season, start=start)
    if isinstance(start, str):
        first_rows = {series_id: 5 - index for index, series_id in enumerate(panel.ids)}  # series i starts at hour i
    else:
        start = start or 0
        first_rows = {series_id: start if start >= 0 else length + start
                      for series_id, length in zip(panel.ids, panel.lengths)}
    maes, mases, squares = {}, {}, []
    for series_id in panel.ids:
        single_panel = panel.select(series_id)
        mae_i, mase_i, mse_i = by_hand(model, metadata, single_panel, season, first_rows[series_id])
        maes.update(mae_i)
        mases.update(mase_i)
    records = {record["id"]: record for record in result["series"]}
    for series_id in panel.ids:
        assert records[series_id]["mae"] == pytest.approx(maes[series_id], rel=1e-10)
        assert records[series_id]["mase"] == pytest.approx(mases[series_id], rel=1e-10)
        assert records[series_id]["rmse"] == pytest.approx(math.sqrt(records[series_id]["mse"]))
    assert result["mase"] == pytest.approx(np.mean(list(mases.values())), rel=1e-10)
    assert result["mase_count"] == 3
    if start is None:   # pooled over every scored target of every series
        assert result["mse"] == pytest.approx(by_hand(model, metadata, panel, season)[2], rel=1e-10)
    assert result["steps"] == sum(record["steps"] for record in result["series"])


def test_evaluate_panel_edge_cases():
    panel, metadata = panel_and_metadata(scale="global")
    flat = Panel(panel.ids, (Series(np.full((120, 1), 7.0), ("value",)),) + panel.series[1:],
                 panel.times, panel.source)
    result = evaluate_panel(small_model(), metadata, flat)
    assert math.isnan(result["series"][0]["mase"]) and result["mase_count"] == 2   # constant: undefined
    result = evaluate_panel(small_model(), metadata, panel, start=150)   # past the end of s0 and s1
    assert [record["steps"] for record in result["series"]] == [0, 0, 50]
    assert result["mase"] == result["series"][2]["mase"]
    with pytest.raises(DataError, match="no series has an observed target to score"):
        evaluate_panel(small_model(), metadata, panel, start=10_000)
    with pytest.raises(DataError, match="expected a row number or a date"):
        evaluate_panel(small_model(), metadata, panel, start="soon")
    one = evaluate_panel(small_model(), metadata, panel, series_id="s1")
    assert [record["id"] for record in one["series"]] == ["s1"]


@pytest.mark.parametrize("steps", [1, 4])
def test_forecast_panel_per_id_and_time(steps):
    panel, metadata = panel_and_metadata()
    model = small_model("lstm")
    table = forecast_panel(model, metadata, panel, steps)
    assert table.column_names == ["id", "time", "value"] and table.num_rows == 3 * steps
    frame = table.to_pydict()
    assert frame["id"] == [series_id for series_id in panel.ids for _ in range(steps)]
    ends = [times[-1] for times in panel.times]
    expected_times = [end + k * HOUR for end in ends for k in range(1, steps + 1)]
    np.testing.assert_array_equal(table["time"].to_numpy(), np.array(expected_times))
    # against the single-series forecast with this series' scaling
    scaler = PanelScaler.from_dict(metadata["data"]["scaling"])
    recipe = metadata["data"]
    for index, series_id in enumerate(panel.ids):
        norm_x, norm_y = scaler.for_series(series_id)
        single_recipe = {**{key: value for key, value in recipe.items() if key != "scaling"},
                         "input_norm": norm_x.to_dict(), "target_norm": norm_y.to_dict()}
        expected = engine.forecast_series((model, {"data": single_recipe}), panel.series[index], steps)
        np.testing.assert_allclose(frame["value"][index * steps:(index + 1) * steps],
                                   expected.column("value").to_numpy(), rtol=1e-12)
    chosen = forecast_panel(model, metadata, panel, steps, series_id="s2")
    assert chosen["id"].to_pylist() == ["s2"] * steps
    np.testing.assert_array_equal(chosen["value"].to_numpy(), frame["value"][2 * steps:])


def test_forecast_without_times_counts_steps():
    panel = single(np.sin(np.arange(60.0) / 3), "wave")
    data = prepare_panel_training_data(panel)
    table = forecast_panel(small_model(), {"data": data.metadata}, panel, 3)
    assert table.column_names == ["id", "step", "0"] and table["step"].to_pylist() == [1, 2, 3]


def test_predictions_unpack_per_series():
    panel, _ = panel_and_metadata()
    data = prepare_panel_training_data(panel, streams=2)
    model = small_model()
    series, row = data.layout.origin()
    # the packed training inputs, unpacked, are each series' own normalised inputs
    unpacked = data.layout.unpack(data.x_train)
    scaler = PanelScaler.from_dict(data.metadata["scaling"])
    for series_id, one, x in zip(panel.ids, panel.series, unpacked):
        np.testing.assert_allclose(x, scaler.for_series(series_id)[0].transform(one.values[:-1]))
    assert model.forward(data.x_train)[0].shape == data.y_train.shape
    assert (series >= 0).sum() == sum(data.layout.lengths)


# ---------------------------------------------------------------- packed training = separate runs

def model_parameters(grads):
    """The gradients of the model's parameters (not of its initial state)."""
    return {name: grad for name, grad in grads.items() if name not in ("h_0", "c_0")}


def separate_runs(data):
    """Each packed run on its own from a zero state: (x (T, 1, I), y (T, 1, O)) per piece
    (a whole series when the layout cuts none)."""
    return [(data.x_train[step:step + stop - first, stream, None], data.y_train[step:step + stop - first, stream, None])
            for _, first, stop, stream, step in data.layout.pieces]


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("streams", [2, 3])   # 2: every series whole; 3: the longest cut in two
def test_packed_gradient_equals_separate_series(cell, layers, streams):
    panel, _ = panel_and_metadata(lengths=(60, 25, 90, 14))
    data = prepare_panel_training_data(panel, streams=streams)
    assert len(data.layout.pieces) == (4 if streams == 2 else 5)
    model = engine.Model(cell=cell, input_size=1, hidden_size=5, output_size=1, num_layers=layers,
                         dtype="float64", seed=0)
    loss, grads = engine.loss_and_grad(model, data.x_train, data.y_train, resets=data.resets)
    for name in ("h_0", "c_0"):   # every stream starts with a reset: no gradient reaches the initial state
        assert not np.any(grads.pop(name, 0.0))
    runs = separate_runs(data)
    total = sum(np.isfinite(y).sum() for _, y in runs)
    expected_loss, expected = 0.0, {name: 0.0 for name in grads}
    for x, y in runs:
        weight = np.isfinite(y).sum() / total
        one_loss, one_grads = engine.loss_and_grad(model, x, y)
        expected_loss += weight * one_loss
        for name in grads:
            expected[name] = expected[name] + weight * one_grads[name]
    assert loss == pytest.approx(expected_loss, rel=1e-12, abs=1e-12)
    for name in grads:
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-12, atol=1e-12)
    outputs, _ = model.forward(data.x_train, resets=data.resets)
    for (x, _), (_, first, stop, stream, step) in zip(runs, data.layout.pieces):
        np.testing.assert_allclose(outputs[step:step + stop - first, stream], model.forward(x)[0][:, 0],
                                   rtol=1e-12, atol=1e-12)


def test_packed_fit_equals_one_step_on_the_combined_gradient():
    panel, _ = panel_and_metadata(lengths=(60, 25, 90, 14))
    data = prepare_panel_training_data(panel, streams=3)
    packed, separate = small_model(), small_model()
    engine.Trainer(packed, optimizer="sgd", lr=0.1, k1=None, clip_norm=None).fit(
        data.x_train, data.y_train, resets=data.resets)
    runs = separate_runs(data)
    total = sum(np.isfinite(y).sum() for _, y in runs)
    expected = separate.state_dict()
    for x, y in runs:
        _, grads = engine.loss_and_grad(separate, x, y)
        for name, grad in model_parameters(grads).items():
            expected[name] = expected[name] - 0.1 * np.isfinite(y).sum() / total * grad
    for name, value in packed.state_dict().items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- the sensors demo

def test_sensors_demo():
    panel = sensors()
    assert len(panel) == 50 and "sensors" not in DEMOS
    assert min(panel.lengths) == 300 and max(panel.lengths) == 20_000
    assert len(set(panel.lengths)) == 50
    scales = [np.nanstd(one.values) for one in panel.series]
    assert max(scales) / min(scales) > 100
    ends = {times[-1] for times in panel.times}
    assert ends == {np.datetime64("2026-01-01T00:00", "ns")}
    for one, times in zip(panel.series, panel.times):
        assert len(times) == len(one.values) and np.all(np.diff(times) == HOUR)
        assert np.isfinite(one.values).all()
    again = sensors()
    assert all(np.array_equal(a.values, b.values) for a, b in zip(panel.series, again.series))
    long = to_long(panel)
    assert long.num_rows == sum(panel.lengths)
    assert from_long(long, "id", "time").lengths == panel.lengths


# ---------------------------------------------------------------- the pipeline and the command

def run(*args):
    from click.testing import CliRunner
    from cli import main
    return CliRunner().invoke(main, [str(arg) for arg in args], prog_name="bptt")


def write_station_files(directory, lengths=(90, 60, 120)):
    """One CSV per station (numeric columns step, level): a directory panel today's reader takes."""
    rng = np.random.default_rng(5)
    for index, length in enumerate(lengths):
        step = np.arange(length)
        level = (index + 1) * 50 + (index + 1) * 5 * np.sin(step / 4) + rng.normal(0, 0.5, length)
        np.savetxt(directory / f"station{index}.csv", np.c_[step, level], delimiter=",",
                   header="step,level", comments="", fmt="%.6g")


def untrained_checkpoint(path, source, **options):
    """A checkpoint of an untrained model with the panel recipe of `source`."""
    data = prepare_panel_training_data(source, **options)
    model = engine.Model(cell="gru", input_size=1, hidden_size=4, output_size=1, dtype="float64")
    engine.save(path, model, None, {"data": data.metadata})
    return model, {"data": data.metadata}


def test_cli_evaluates_and_forecasts_a_panel_per_series(tmp_path):
    stations = tmp_path / "stations"
    stations.mkdir()
    write_station_files(stations)
    checkpoint = tmp_path / "model.npz"
    model, metadata = untrained_checkpoint(checkpoint, str(stations), time_column="step", val_fraction=0.1)
    result = run("evaluate", checkpoint, stations, "--season", 3, "--from", 40, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    expected = evaluate_panel(model, metadata, str(stations), season=3, start=40)
    assert [record["id"] for record in report["series"]] == ["station0", "station1", "station2"]
    assert report["mase"] == pytest.approx(expected["mase"]) and report["steps"] == 50 + 20 + 80
    text = run("evaluate", checkpoint, stations, "--id", "station1")
    assert text.exit_code == 0 and "station1" in text.stdout and "station0" not in text.stdout
    forecast = run("forecast", checkpoint, stations, "--steps", 2, "-o", tmp_path / "out.csv")
    assert forecast.exit_code == 0, forecast.stderr
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "id,step,level" and len(lines) == 1 + 3 * 2   # the time column keeps its name
    assert lines[1].startswith("station0,90,") and lines[2].startswith("station0,91,")
    info = run("info", checkpoint)
    assert "a panel of 3 series, series scaling" in info.stdout
    bad = run("evaluate", checkpoint, stations, "--id", "station7")
    assert bad.exit_code == 2 and bad.stderr.startswith("Error: unknown series id 'station7'")


def test_panel_options_on_a_single_series_model_are_an_error(tmp_path):
    values = np.sin(np.arange(200) / 5)[:, None]
    data = engine.data.prepare_training_data(values)
    model = engine.Model(input_size=1, hidden_size=4, output_size=1)
    engine.save(tmp_path / "one.npz", model, None, {"data": data.metadata})
    np.save(tmp_path / "one.npy", values)
    result = run("evaluate", tmp_path / "one.npz", tmp_path / "one.npy", "--season", 24)
    assert result.exit_code == 2 and "season: only for a model trained on a panel" in result.stderr


def test_train_series_on_a_panel_packs_with_resets(tmp_path):
    panel = sensors(count=6, longest=1_500)
    model, trainer, data = engine.train_series(panel, tmp_path / "panel.npz", hidden=8, k1=50, streams=4, epochs=2)
    assert data.resets.shape == data.x_train.shape[:2] and data.x_train.shape[1] == 4
    metadata = engine.read_metadata(tmp_path / "panel.npz")["user"]
    assert metadata["data"]["ids"] == list(panel.ids) and metadata["data"]["scale"] == "series"
    result = engine.evaluate_series(tmp_path / "panel.npz", panel, season=24)
    untrained = engine.evaluate_series((engine.Model(input_size=model.input_size, hidden_size=8, output_size=1), metadata),
                                       panel, season=24)
    assert len(result["series"]) == 6 and result["mase"] < untrained["mase"]
    model, trainer, _ = engine.train_series(panel, tmp_path / "panel.npz", epochs=3, resume=True)
    assert trainer.epoch == 3


def test_cli_long_csv_of_40_series_trains_evaluates_from_a_date_and_forecasts(tmp_path):
    panel = sensors(count=40, shortest=200, longest=1_000)
    rows = to_long(panel)
    with open(tmp_path / "long.csv", "w") as file:
        file.write("id,time,value\n")
        for series_id, time, value in zip(rows["id"].to_pylist(), rows["time"].to_numpy(),
                                          rows["value"].to_numpy()):
            file.write(f"{series_id},{np.datetime_as_string(time, unit='s')},{value:.6g}\n")
    checkpoint = tmp_path / "model.npz"
    trained = run("train", tmp_path / "long.csv", "--id-column", "id", "--time-column", "time",
                  "--hidden", 8, "--k1", 50, "--epochs", 2, "--streams", 8, "-o", checkpoint, "-q")
    assert trained.exit_code == 0, trained.stderr
    report = run("evaluate", checkpoint, tmp_path / "long.csv", "--season", 24,
                 "--from", "2025-12-31T00:00", "--json")
    assert report.exit_code == 0, report.stderr
    metrics = json.loads(report.stdout)
    assert len(metrics["series"]) == 40 and all(record["steps"] == 25 for record in metrics["series"])
    assert {"mse", "mae", "rmse", "smape", "mase"} <= set(metrics)
    forecast = run("forecast", checkpoint, tmp_path / "long.csv", "--steps", 3)
    assert forecast.exit_code == 0, forecast.stderr
    lines = forecast.stdout.splitlines()
    assert lines[0] == "id,time,value,value_lo80,value_hi80,value_lo95,value_hi95" and len(lines) == 1 + 40 * 3
    assert lines[1].startswith("sensor-00,2026-01-01T01:00,")   # times as a single-series forecast writes them


def test_bench_panel_record():
    from bench.panel import panel_record
    from bench.report import format_table

    record = panel_record(series=5, shortest=20, longest=60, streams=2, hidden=4, k1=10, rounds=1)
    assert record["kind"] == "panel" and record["steps"] > 0 and 0 <= record["padding"] < 1
    assert record["ratio"] == pytest.approx(record["packed_steps_per_s"] / record["separate_steps_per_s"])
    assert "Panel: 5 series of 20..60 steps" in format_table([record])


def test_sweep_refuses_to_compare_losses_of_other_scalings_clearly(tmp_path):
    # panels are swept (tests/test_sweep_panels.py); a swept --scale needs a metric in original units
    result = run("sweep", "--demo", "sensors", "--space", "scale=series,global", "-o", tmp_path / "sweep")
    assert result.exit_code == 2 and "--metric" in result.stderr and "do not compare" in result.stderr
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("source, output", [
    ("{dir}", "station0.csv"), ("{dir}/*.csv", "station1.csv"), ("{dir}", "model.npz"), ("{dir}/station*", "station9.npz")])
def test_train_series_never_writes_among_the_files_of_its_panel(tmp_path, source, output):
    stations = tmp_path / "stations"
    stations.mkdir()
    write_station_files(stations)
    before = {path.name: path.read_bytes() for path in stations.iterdir()}
    with pytest.raises(engine.files.OutputError, match="the checkpoint would"):
        engine.train_series(source.format(dir=stations), stations / output, hidden=4, k1=10, streams=2,
                            epochs=1)
    assert {path.name: path.read_bytes() for path in stations.iterdir()} == before


def test_panel_forecasts_beyond_memory_are_refused_with_the_estimate(tmp_path):
    stations = tmp_path / "stations"
    stations.mkdir()
    write_station_files(stations)
    model, metadata = untrained_checkpoint(tmp_path / "model.npz", str(stations), time_column="step")
    with pytest.raises(engine.footprint.MemoryEstimateError, match="forecasts of 3 series needs about"):
        engine.forecast_series((model, metadata), str(stations), 10 ** 10)


def test_a_single_series_model_given_a_directory_says_so(tmp_path):
    stations = tmp_path / "stations"
    stations.mkdir()
    write_station_files(stations)
    values = np.sin(np.arange(200) / 5)[:, None]
    data = engine.data.prepare_training_data(values)
    model = engine.Model(input_size=1, hidden_size=4, output_size=1)
    for source, kind in ((stations, "a directory"), (f"{stations}/*.csv", "a glob pattern")):
        pair = (model, {"data": data.metadata})
        for call in (lambda: engine.forecast_series(pair, source, 2), lambda: engine.evaluate_series(pair, source)):
            with pytest.raises(DataError, match=f"is {kind} of files .*the model was trained on one series"):
                call()
