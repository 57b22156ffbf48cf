"""Time stamps (issue 28, classes 3-7 and 19): calendar frequencies inferred from the
stamps, gaps reported and tolerated, time zones kept in every label, --from with one
meaning everywhere, and ids read as the text the file holds."""
import json
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as parquet
import pytest

from engine.data import load_series, prepare_training_data
from engine.panel import as_panel, from_long, future_times, to_long
from engine.series import DataError, as_series, zones
from engine.series.times import GapWarning, infer_frequency, next_stamps, spacing, start_row


def days(*texts):
    return np.array(texts, dtype="datetime64[D]")


def text_of(stamps):
    return [str(stamp)[:10] for stamp in stamps.astype("datetime64[D]")]


def month_ends(start, count, every=1):
    months = np.datetime64(start, "M") + np.arange(count) * every
    return (months + 1).astype("datetime64[D]") - 1


# ---------------------------------------------------------------- calendar frequencies

def test_month_ends_continue_at_month_ends():
    stamps = month_ends("2019-10", 4)   # 31 Oct, 30 Nov, 31 Dec, 31 Jan
    assert infer_frequency(stamps) == "P1M/end"
    assert text_of(next_stamps(stamps[-1], "P1M/end", 3)) == ["2020-02-29", "2020-03-31", "2020-04-30"]


def test_quarter_and_year_ends():
    quarters = month_ends("2019-03", 5, every=3)
    assert infer_frequency(quarters) == "P3M/end"
    assert text_of(next_stamps(quarters[-1], "P3M/end", 2)) == ["2020-06-30", "2020-09-30"]
    years = month_ends("2015-12", 5, every=12)
    assert infer_frequency(years) == "P1Y/end"
    assert text_of(next_stamps(years[-1], "P1Y/end", 1)) == ["2020-12-31"]


def test_month_quarter_and_year_starts_keep_their_day_and_time():
    starts = np.datetime64("2023-11", "M") + np.arange(4)
    stamps = starts.astype("datetime64[s]") + np.timedelta64(6, "h")
    assert infer_frequency(stamps) == "P1M"
    assert [str(s)[:16] for s in next_stamps(stamps[-1], "P1M", 2)] == ["2024-03-01T06:00", "2024-04-01T06:00"]
    quarters = (np.datetime64("2023-01", "M") + 3 * np.arange(4)).astype("datetime64[D]")
    assert infer_frequency(quarters) == "P3M"
    years = (np.datetime64("2020-01", "M") + 12 * np.arange(3)).astype("datetime64[D]")
    assert infer_frequency(years) == "P1Y"


def test_business_days_skip_weekends():
    stamps = np.busday_offset("2024-01-01", np.arange(15)).astype("datetime64[m]") + np.timedelta64(9 * 60, "m")
    assert infer_frequency(stamps) == "P1D/business"   # not daily with a gap every weekend
    after_friday = next_stamps(np.datetime64("2024-01-19T09:00"), "P1D/business", 2)
    assert [str(s)[:16] for s in after_friday] == ["2024-01-22T09:00", "2024-01-23T09:00"]
    every_day = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-01-15"))
    assert infer_frequency(every_day) == "P1D"   # weekends present: calendar days


def test_old_frequency_strings_still_read():
    assert text_of(next_stamps(np.datetime64("2024-01-31"), "P1D", 1)) == ["2024-02-01"]
    assert text_of(next_stamps(np.datetime64("2024-01-15"), "P1M", 1)) == ["2024-02-15"]
    assert str(next_stamps(np.datetime64("2024-01-01T00:00"), "PT15M", 1)[0]) == "2024-01-01T00:15:00.000000"
    with pytest.raises(DataError, match="unknown frequency 'P1W'"):
        next_stamps(np.datetime64("2024-01-01"), "P1W", 1)


# ---------------------------------------------------------------- gaps

def test_one_missing_row_keeps_the_frequency_and_is_counted():
    stamps = np.delete(np.arange(np.datetime64("2024-01-01T00"), np.datetime64("2024-01-03T00")), [5, 6, 30])
    found = spacing(stamps)
    assert found == ("PT1H", 2, 5)   # two pairs skip steps; the first ends at row 5
    assert str(next_stamps(stamps[-1], found.frequency, 1)[0])[:13] == "2024-01-03T00"
    months = np.delete(month_ends("2020-01", 12), 4)
    assert spacing(months) == ("P1M/end", 1, 4)


def test_no_step_covering_most_pairs_is_irregular():
    assert spacing(days("2024-01-01", "2024-01-02", "2024-01-04")) == (None, 0, None)
    assert spacing(days("2024-01-01", "2024-01-03", "2024-01-04", "2024-01-09", "2024-01-20")).frequency is None
    assert spacing(days("2024-01-01")) == (None, 0, None)


def test_gaps_warn_once_when_read_and_forecasts_stay_labelled(tmp_path):
    stamps = np.delete(np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-03-01")), [10, 40, 41])
    path = tmp_path / "gaps.csv"
    path.write_text("date,v\n" + "".join(f"{stamp},{i % 7}\n" for i, stamp in enumerate(stamps)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        series = load_series(path)
    gaps = [w for w in caught if issubclass(w.category, GapWarning)]
    assert len(gaps) == 1
    assert 'gaps.csv, time column "date": 2 gap(s) or uneven step(s)' in str(gaps[0].message)
    assert "the first after 2024-01-10; the frequency P1D" in str(gaps[0].message)
    assert infer_frequency(series.time) == "P1D"


# ---------------------------------------------------------------- time zones

def test_fixed_offsets_are_kept_in_labels_and_next_stamps(tmp_path):
    path = tmp_path / "zoned.csv"
    hours = np.datetime64("2024-01-10T20:00") + np.arange(4).astype("timedelta64[h]")
    path.write_text("time,v\n" + "".join(f"{hour}+05:00,{i}\n" for i, hour in enumerate(hours)))
    series = load_series(path)
    assert series.time_zone == "+05:00"
    assert str(series.time[-1])[:16] == "2024-01-10T18:00"   # UTC instants
    assert zones.labels(series.time[-1:], "+05:00") == ["2024-01-10T23:00+05:00"]
    following = next_stamps(series.time[-1], infer_frequency(series.time, "+05:00"), 2, "+05:00")
    assert zones.labels(following, "+05:00") == ["2024-01-11T00:00+05:00", "2024-01-11T01:00+05:00"]
    record = prepare_training_data(path).metadata["time"]
    assert record == {"column": "time", "first": "2024-01-10T20:00+05:00", "last": "2024-01-10T23:00+05:00",
                      "frequency": "PT1H", "zone": "+05:00"}


def test_named_zones_step_in_wall_time_across_a_clock_change():
    pandas = pytest.importorskip("pandas")
    index = pandas.date_range("2024-03-28 09:00", periods=6, freq="D", tz="Europe/Paris")   # DST on 31 March
    series = as_series(pandas.DataFrame({"v": np.arange(6.0)}, index=index))
    assert series.time_zone == "Europe/Paris"
    assert infer_frequency(series.time, series.time_zone) == "P1D"   # 23 hours on the change, still daily
    following = next_stamps(series.time[-1], "P1D", 1, series.time_zone)
    assert zones.labels(following, series.time_zone) == ["2024-04-03T09:00+02:00"]
    assert zones.labels(series.time[:1], series.time_zone) == ["2024-03-28T09:00+01:00"]


def test_labels_keep_fractions_of_a_second_and_offsets_of_any_spelling(tmp_path):
    path = tmp_path / "fine.csv"
    path.write_text("t,v\n" + "".join(f"2024-01-10 10:00:0{i}.5+0530,{i}\n" for i in range(4)))
    series = load_series(path)
    assert series.time_zone == "+05:30" and infer_frequency(series.time, "+05:30") == "PT1S"
    assert zones.labels(series.time[-1:], "+05:30") == ["2024-01-10T10:00:03.5+05:30"]
    assert zones.labels(days("2024-01-10"), None) == ["2024-01-10"]


def test_hours_count_in_utc_across_a_clock_change():
    start = zones.to_utc(np.datetime64("2024-10-26T22:00"), "Europe/Paris")   # clocks go back at 03:00 on the 27th
    hours = start + np.arange(6).astype("timedelta64[h]")
    assert spacing(hours, "Europe/Paris") == ("PT1H", 0, None)   # wall times repeat 02:00, the instants do not
    following = next_stamps(hours[2], "PT1H", 3, "Europe/Paris")
    assert zones.labels(following, "Europe/Paris") == ["2024-10-27T01:00+02:00", "2024-10-27T02:00+02:00",
                                                       "2024-10-27T02:00+01:00"]


def test_parquet_and_arrow_zones_and_an_unknown_zone(tmp_path):
    instants = np.datetime64("2024-01-01T00:00") + np.arange(3).astype("timedelta64[h]")
    table = pa.table({"t": pa.array(instants.astype("datetime64[us]"), pa.timestamp("us", tz="-03:30")),
                      "v": [1.0, 2.0, 3.0]})
    parquet.write_table(table, tmp_path / "z.parquet")
    series = load_series(tmp_path / "z.parquet")
    assert series.time_zone == "-03:30" and zones.labels(series.time[:1], "-03:30") == ["2023-12-31T20:30-03:30"]
    with pytest.raises(DataError, match="unknown time zone 'Mars/Olympus'"):
        zones.check("Mars/Olympus")
    edges = np.array(["9999-12-31T10:00", "1900-01-01T10:00"], dtype="datetime64[us]")   # no overflow at the end
    assert zones.labels(edges, "Europe/Paris")[0] == "9999-12-31T11:00+01:00"


def test_a_mix_of_zoned_and_plain_stamps_names_line_and_column(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("v,when\n" + "".join(f"{day},2024-01-{day:02d}T10:00+01:00\n" for day in range(1, 25))
                    + "25,2024-01-25T10:00\n")
    with pytest.raises(DataError, match=r'mixed\.csv, line 26, column "when": the time column mixes stamps with '
                                        r"and without a zone offset: '2024-01-25T10:00' has none"):
        load_series(path)


def test_panel_times_keep_their_zone(tmp_path):
    path = tmp_path / "panel.csv"
    path.write_text("id,time,v\n" + "".join(f"{name},2024-01-10T{hour:02d}:00+05:00,{hour}\n"
                                            for name in "ab" for hour in range(6)))
    panel = as_panel(path, id_column="id")
    assert panel.time_zone == "+05:00"
    ahead = future_times(panel.times[0], 1, panel.time_zone)
    assert zones.labels(ahead, panel.time_zone) == ["2024-01-10T06:00+05:00"]
    assert to_long(panel).schema.field("time").type == pa.timestamp("ns", tz="+05:00")


def test_files_of_one_panel_in_summer_and_winter_offsets(tmp_path):
    for name, offset, days_ in (("a", "+01:00", 20), ("b", "+02:00", 25)):
        (tmp_path / f"{name}.csv").write_text("t,v\n" + "".join(f"2024-01-{day:02d}T00:00{offset},{day}\n"
                                                                for day in range(1, days_)))
    assert as_panel(tmp_path).time_zone == "+02:00"   # the zone of the stamps that end last
    (tmp_path / "c.csv").write_text("t,v\n2024-01-01T00:00,1\n2024-01-02T00:00,2\n")
    with pytest.raises(DataError, match=r"a\.csv have a zone, those of .*c\.csv none"):
        as_panel(tmp_path)


# ---------------------------------------------------------------- --from

def test_from_has_one_meaning():
    stamps = np.datetime64("2024-01-10T18:00") + np.arange(5).astype("timedelta64[h]")   # UTC 18:00..22:00
    assert start_row(None, 5) == 0 and start_row(3, 5) == 3 and start_row("3", 5) == 3
    assert start_row(-2, 5) == 3 and start_row("-2", 5, stamps) == 3   # the last 2 rows, not the year -2
    assert start_row(-50, 5) == 0
    assert start_row("2024-01-10T20:00", 5, stamps) == 2   # plain stamps: as written
    assert start_row("2024-01-11T01:00", 5, stamps, "+05:00") == 2   # the data's wall time
    assert start_row("2024-01-10T20:00Z", 5, stamps, "+05:00") == 2   # an explicit offset converted
    assert start_row("2024-01-11", 5, stamps) == 5   # after the end: the caller decides
    with pytest.raises(DataError, match="from: the value is empty"):
        start_row("  ", 5, stamps)
    with pytest.raises(DataError, match="not a date from the year 1 on"):
        start_row("-0005-01-01", 5, stamps)
    with pytest.raises(DataError, match="has a zone offset, but the time column has none"):
        start_row("2024-01-10T20:00+05:00", 5, stamps)
    with pytest.raises(DataError, match="has no time column of dates; give a row number"):
        start_row("2024-01-10", 5)
    with pytest.raises(DataError, match="unknown time zone offset '\\+25:00'"):
        start_row("2024-01-10T20:00+25:00", 5, stamps, "UTC")


# ---------------------------------------------------------------- ids as text

def test_long_format_ids_are_the_text_of_the_file(tmp_path):
    path = tmp_path / "long.csv"
    ids = ["02134", "2134", "9223372036854775808", "18446744073709551615", "10"]
    path.write_text("id,v\n" + "".join(f"{name},{row}\n" for row in range(3) for name in ids))
    panel = as_panel(path, id_column="id")
    assert panel.ids == ("10", "02134", "2134", "9223372036854775808", "18446744073709551615")
    assert panel.lengths == (3,) * 5
    assert panel.select("02134").ids == ("02134",)
    with pytest.raises(DataError, match="unknown series id '0010'"):
        panel.select("0010")


def test_integer_ids_of_other_sources_keep_every_digit(tmp_path):
    table = pa.table({"id": pa.array([2 ** 64 - 1, 2 ** 63, 2 ** 63], pa.uint64()), "v": [1.0, 2.0, 3.0]})
    parquet.write_table(table, tmp_path / "ids.parquet")
    assert as_panel(tmp_path / "ids.parquet", id_column="id").ids == ("9223372036854775808",
                                                                       "18446744073709551615")
    assert from_long(table, "id").lengths == (2, 1)
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"id": [7, 7, 12], "v": [1.0, 2.0, 3.0]})
    assert from_long(frame, "id").ids == ("7", "12")
    floats = pa.table({"id": [1.0, 1.0, 2.5], "v": [1.0, 2.0, 3.0]})
    assert from_long(floats, "id").ids == ("1", "2.5")


# ---------------------------------------------------------------- through the command

def invoke(*args):
    from click.testing import CliRunner

    from cli import main
    return CliRunner().invoke(main, [str(arg) for arg in args], prog_name="bptt")


SMALL = ["--hidden", "4", "--epochs", "1", "--k1", "10", "--streams", "2", "-q"]


def trained(tmp_path, name, header, rows, *options):
    data = tmp_path / f"{name}.csv"
    data.write_text(header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    result = invoke("train", data, *SMALL, *options, "-o", tmp_path / f"{name}.npz")
    assert result.exit_code == 0, result.stderr
    return tmp_path / f"{name}.npz", data, result


def test_forecasts_continue_month_ends_and_zones(tmp_path):
    ends = month_ends("2015-01", 61)   # to 2020-01-31
    model, data, _ = trained(tmp_path, "ends", "date,v", ((end, i % 12) for i, end in enumerate(ends)))
    result = invoke("forecast", model, data, "--steps", "3")
    assert [line.split(",")[0] for line in result.stdout.splitlines()] == ["time", "2020-02-29", "2020-03-31",
                                                                          "2020-04-30"]
    hours = np.datetime64("2024-01-08T00:00") + np.arange(72).astype("timedelta64[h]")
    model, data, _ = trained(tmp_path, "zoned", "time,v", ((f"{hour}+05:00", i % 5) for i, hour in enumerate(hours)))
    result = invoke("forecast", model, data, "--steps", "2")
    assert [line.split(",")[0] for line in result.stdout.splitlines()] == ["time", "2024-01-11T00:00+05:00",
                                                                          "2024-01-11T01:00+05:00"]
    assert "2024-01-10T23:00+05:00" in invoke("info", model).stdout


def test_a_zoned_panel_forecasts_and_records_its_zone(tmp_path):
    rows = ((name, f"2024-01-10T{hour:02d}:00-03:00", hour % 4) for name in "ab" for hour in range(24))
    model, data, _ = trained(tmp_path, "zoned_panel", "id,time,v", rows, "--id-column", "id")
    assert "zone -03:00" in invoke("info", model).stdout
    lines = invoke("forecast", model, data, "--steps", "1", "--intervals", "none").stdout.splitlines()
    assert [line.rsplit(",", 1)[0] for line in lines] == ["id,time", "a,2024-01-11T00:00-03:00",
                                                         "b,2024-01-11T00:00-03:00"]


def test_a_gap_is_one_warning_line_and_forecasts_keep_their_times(tmp_path):
    stamps = np.delete(np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-04-01")), [30])
    model, data, trained_run = trained(tmp_path, "gap", "date,v", ((stamp, i % 7) for i, stamp in enumerate(stamps)))
    warning = 'Warning: {}, time column "date": 1 gap(s) or uneven step(s) in the time stamps, the first after ' \
              "2024-01-30; the frequency P1D of the other steps is used".format(data)
    assert trained_run.stderr.splitlines() == [warning]
    result = invoke("forecast", model, data, "--steps", "1")
    assert result.stderr.splitlines() == [warning]
    assert result.stdout.splitlines()[1].startswith("2024-04-01,")


def test_from_minus_five_scores_the_last_five_rows_everywhere(tmp_path):
    wave = np.round(np.sin(np.arange(80) / 4), 6)
    plain, plain_data, _ = trained(tmp_path, "plain", "v", ((value,) for value in wave))
    dates = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-01-01") + 80)
    dated, dated_data, _ = trained(tmp_path, "dated", "date,v", zip(dates, wave))
    panel, panel_data, _ = trained(tmp_path, "panel", "id,v", ((name, value) for value in wave for name in "ab"),
                                   "--id-column", "id")
    for model, data in ((plain, plain_data), (dated, dated_data)):
        result = invoke("evaluate", model, data, "--from", "-5", "--json")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["steps"] == 5
    result = invoke("evaluate", panel, panel_data, "--from", "-5", "--json")
    assert [record["steps"] for record in json.loads(result.stdout)["series"]] == [5, 5]
    by_date = invoke("evaluate", dated, dated_data, "--from", "2024-03-15", "--json")
    assert json.loads(by_date.stdout)["steps"] == 6


def test_look_alike_ids_stay_apart_through_the_command(tmp_path):
    model, data, _ = trained(tmp_path, "ids", "id,v", ((name, i % 9) for i in range(80)
                                                      for name in ("02134", "2134", "18446744073709551615")),
                             "--id-column", "id")
    result = invoke("forecast", model, data)
    assert [line.split(",")[0] for line in result.stdout.splitlines()] == ["id", "02134", "2134",
                                                                          "18446744073709551615"]
    assert invoke("forecast", model, data, "--id", "02134").stdout.splitlines()[1].startswith("02134,")


def test_reading_options_that_cannot_apply_are_refused(tmp_path):
    series = as_series(np.arange(5.0))
    with pytest.raises(DataError, match="key 'x': names an array of an .npz file; the data is Series"):
        as_series(series, key="x")
    with pytest.raises(DataError, match="time column 't': the series was read already, with none"):
        as_series(series, time_column="t")
    assert as_series(series, time_column=False) is series
    with pytest.raises(DataError, match="time column 't': an array has no named columns"):
        as_series(np.arange(5.0), time_column="t")
    path = tmp_path / "plain.csv"
    path.write_text("v\n1\n2\n")
    with pytest.raises(DataError, match="key 'x': names an array of an .npz archive"):
        load_series(path, key="x")
    panel = from_long(pa.table({"id": ["a", "a"], "v": [1.0, 2.0]}), "id")
    with pytest.raises(DataError, match="series_columns: table is a panel read already"):
        as_panel(panel, series_columns="v")
