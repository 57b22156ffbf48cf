"""Reading data with pyarrow (engine/series/): CSV (compressed too), Parquet, Feather,
in-memory frames, the time column, forecast time stamps, `evaluate --from`, `--key`, and
that reading never imports pandas unless given a pandas object."""
import bz2
import gzip
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as parquet
import pytest
from click.testing import CliRunner

import engine
from cli import main
from engine.data import DataError, load_series, prepare_training_data
from engine.pipeline import forecast_times
from engine.series import as_table, read_table
from engine.series.tables import place, time_column_of
from engine.series.times import infer_frequency, next_stamps


def write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_bytes(text.encode()) if isinstance(text, str) else path.write_bytes(text)
    return path


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], prog_name="bptt")


def dated_csv(tmp_path, rows=240, name="dated.csv", start="2024-01-01T00", unit="h"):
    stamps = np.datetime64(start) + np.arange(rows).astype(f"timedelta64[{unit}]")
    values = np.sin(np.arange(rows) / 4)
    lines = ["when,value"] + [f"{stamp},{value:.6f}" for stamp, value in zip(stamps, values)]
    return write(tmp_path, "\n".join(lines) + "\n", name), stamps, values


# ---------------------------------------------------------------- CSV rules on pyarrow

def test_comments_anywhere_blank_lines_and_whitespace(tmp_path):
    text = "# head\na,b\n1,2\n# a comment, as wide as the data\n\n   \n3, 4 \n"
    np.testing.assert_array_equal(load_series(write(tmp_path, text)).values, [[1, 2], [3, 4]])
    spaced = write(tmp_path, "a  b\n  1   2\n3\t 4\n", "spaced.txt")
    np.testing.assert_array_equal(load_series(spaced).values, [[1, 2], [3, 4]])
    single = write(tmp_path, "# c\nv\n1\n# inside\n\n3\n\n\n", "single.csv")
    np.testing.assert_array_equal(load_series(single).values.ravel(), [1, np.nan, 3])


def test_missing_tokens_any_case_and_quoted_numbers(tmp_path):
    series = load_series(write(tmp_path, 'a,b,c\n"1",na,NULL\n2, NaN ,nAn\n'))
    np.testing.assert_array_equal(series.values, [[1, np.nan, np.nan], [2, np.nan, np.nan]])


def test_trailing_delimiter_makes_no_empty_column(tmp_path):
    assert load_series(write(tmp_path, "a,b,\n1,2,\n3,4,\n")).names == ("a", "b")
    assert load_series(write(tmp_path, "1;2;\n3;4;\n", "plain.csv")).values.shape == (2, 2)
    # a named last column that is empty is data (all missing), not dropped
    assert load_series(write(tmp_path, "a,b,c\n1,2,\n3,4,\n", "named.csv")).names == ("a", "b", "c")


def test_bad_cell_named_by_line_after_the_first_block(tmp_path):
    rows = [f"{i},{i * 0.5}" for i in range(300_000)]
    rows[250_000] = "7,seven"                      # far past pyarrow's first block
    path = write(tmp_path, "# c\nn,v\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as error:
        load_series(path)
    assert str(error.value) == f"{path}, line {250_003}, column \"v\": not a finite number: 'seven'"
    assert load_series(path, columns="n").values.shape == (300_000, 1)


def test_ragged_binary_and_unknown_files(tmp_path):
    with pytest.raises(DataError, match=r"line 4: expected 2 cells like the first line, found 3"):
        load_series(write(tmp_path, "a,b\n1,2\n\n3,4,5\n"))
    with pytest.raises(DataError, match=r"nul\.csv: cannot read the file as UTF-8 text"):
        load_series(write(tmp_path, b"a,b\n1,\x002\n", "nul.csv"))
    with pytest.raises(DataError, match=r"sheet\.xlsx: a ZIP archive, not a data file"):
        load_series(write(tmp_path, b"PK\x03\x04junk", "sheet.xlsx"))
    with pytest.raises(DataError, match=r"bad\.parquet: not a readable Parquet file"):
        load_series(write(tmp_path, b"PAR1 not really", "bad.parquet"))
    with pytest.raises(DataError, match=r"bad\.csv\.gz: cannot read the file \(.*inflate"):
        load_series(write(tmp_path, b"not gzip at all", "bad.csv.gz"))
    with pytest.raises(DataError, match=r'only\.csv: no columns of values besides the time column "day"'):
        load_series(write(tmp_path, "day\n2024-01-01\n2024-01-02\n", "only.csv"))


@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".bz2", bz2.compress)])
def test_compressed_csv(tmp_path, suffix, compress):
    path = write(tmp_path, compress(b"a,b\n1,2\n3,x\n"), "data.csv" + suffix)
    np.testing.assert_array_equal(load_series(path, columns="a").values, [[1], [3]])
    with pytest.raises(DataError, match=rf"data\.csv\{suffix}, line 3, column \"b\""):
        load_series(path)


def test_zstd_csv(tmp_path):
    path = tmp_path / "data.csv.zst"
    with pa.output_stream(path, compression="zstd") as stream:
        stream.write(b"a\n1\n2\n")
    np.testing.assert_array_equal(load_series(path).values, [[1], [2]])


def test_parquet_and_feather_keep_times_and_text(tmp_path):
    stamps = np.arange("2024-01-01", "2024-01-05", dtype="datetime64[D]").astype("datetime64[s]")
    table = pa.Table.from_batches([pa.RecordBatch.from_arrays(
        [pa.array(stamps), pa.array([1, 2, 3, 4]), pa.array(["a", "b", "a", "b"])], ["day", "n", "id"])])
    parquet.write_table(table, tmp_path / "t.parquet")
    feather.write_feather(table, tmp_path / "t.feather")
    for name in ("t.parquet", "t.feather"):
        read = read_table(tmp_path / name)
        assert read.schema.types[1] == pa.float64() and pa.types.is_string(read.schema.types[2])
        assert time_column_of(read) == "day"
        series = load_series(tmp_path / name, columns="n")
        np.testing.assert_array_equal(series.time.astype("datetime64[D]"), stamps.astype("datetime64[D]"))
        with pytest.raises(DataError, match=rf'{name}, row 0, column "id": not a finite number: \'a\''):
            load_series(tmp_path / name)
    assert place(read_table(write(tmp_path, "a\n1\n2\n", "p.csv")), 1) == f"{tmp_path / 'p.csv'}, line 3"


# ---------------------------------------------------------------- the time column

def test_date_column_becomes_the_time_column(tmp_path):
    path = write(tmp_path, "date,temp,load\n2024-01-01,1,2\n2024-01-02,3,\n2024-01-03,5,6\n")
    series = load_series(path)
    assert series.names == ("temp", "load") and series.time_name == "date"
    assert [str(stamp)[:10] for stamp in series.time] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    data = prepare_training_data(path, val_fraction=0.0, fill="zero")
    assert data.metadata["time"] == {"column": "date", "first": "2024-01-01T00:00:00",
                                     "last": "2024-01-03T00:00:00", "frequency": "P1D"}
    json.dumps(data.metadata)


def test_time_column_named_and_checked(tmp_path):
    path = write(tmp_path, "a,when,b\n1,2024/01/05,2\n3,2024/01/06,4\n")
    assert load_series(path, time_column="when").names == ("a", "b")
    with pytest.raises(DataError, match=r"time column: unknown column 'x'.*\"a\", \"when\", \"b\""):
        load_series(path, time_column="x")
    with pytest.raises(DataError, match=r'line 3, column "when": not a date or time: \'soon\''):
        load_series(write(tmp_path, "v,when\n1,2024-01-01\n2,soon\n", "bad.csv"), time_column="when")
    out_of_order = write(tmp_path, "t,v\n2024-01-01,1\n2024-01-03,2\n2024-01-02,3\n", "order.csv")
    with pytest.raises(DataError, match=r'order\.csv, line 4: the time column "t" must increase; '
                                        r'2024-01-02T00:00:00 does not come after 2024-01-03T00:00:00 \(line 3\)'):
        load_series(out_of_order)
    unordered = load_series(out_of_order, columns="v", time_column=False)
    assert unordered.time is None and unordered.values.shape == (3, 1)
    assert run("train", out_of_order, "--time-column", "none", "--targets", "v", "--hidden", "2", "--k1", "1",
               "--epochs", "1", "--streams", "1", "--val-fraction", "0", "-q",
               "-o", tmp_path / "m.npz").exit_code == 0
    with pytest.raises(DataError, match=r'line 3: the time column "t" has no value'):
        load_series(write(tmp_path, "t,v\n2024-01-01,1\n,2\n", "gap.csv"))


def test_frequencies_and_next_stamps():
    hours = np.datetime64("2024-01-01T00") + np.arange(3).astype("timedelta64[h]")
    assert infer_frequency(hours) == "PT1H"
    months = np.array(["2024-01-31", "2024-02-29"], dtype="datetime64[D]")  # 29 days
    assert infer_frequency(months) == "P29D"
    starts = np.array(["2023-11-01", "2023-12-01", "2024-01-01"], dtype="datetime64[s]")
    assert infer_frequency(starts) == "P1M"
    assert [str(s)[:10] for s in next_stamps(starts[-1], "P1M", 2)] == ["2024-02-01", "2024-03-01"]
    assert infer_frequency(np.array(["2024-01-01", "2024-01-02", "2024-01-04"], dtype="datetime64[D]")) is None
    assert str(next_stamps(np.datetime64("2024-01-01T00:00:00"), "PT15M", 1)[0]) == "2024-01-01T00:15:00.000000"


# ---------------------------------------------------------------- in-memory sources

def test_numpy_pandas_and_arrow_sources_agree(tmp_path):
    pandas = pytest.importorskip("pandas")
    values = np.column_stack([np.sin(np.arange(200) / 5), np.cos(np.arange(200) / 5)])
    index = pandas.date_range("2024-01-01", periods=200, freq="15min")
    frame = pandas.DataFrame(values, columns=["a", "b"], index=index)
    table = pa.Table.from_pandas(frame.reset_index(names="stamp"), preserve_index=False)
    from_frame, from_table, from_array = load_series(frame), load_series(table), load_series(values)
    for series in (from_frame, from_table, from_array):
        np.testing.assert_array_equal(series.values, values)
    assert from_frame.time_name == "time" and from_table.time_name == "stamp" and from_array.time is None
    assert infer_frequency(from_frame.time) == "PT15M"
    assert load_series(frame["a"]).names == ("a",)
    assert as_table(values).column_names == ["0", "1"]
    with pytest.raises(DataError, match="real numbers"):
        as_table(np.array(["x"]))
    _, trainer, data = engine.train_series(frame, tmp_path / "m.npz", hidden=4, k1=10, streams=2, epochs=1)
    assert data.metadata["time"]["frequency"] == "PT15M" and trainer.epoch == 1


def test_reading_does_not_import_pandas(tmp_path):
    path, _, _ = dated_csv(tmp_path)
    parquet.write_table(read_table(path), tmp_path / "d.parquet")
    code = ("import sys, engine; from engine.data import load_series; "
            f"load_series({str(path)!r}); load_series({str(tmp_path / 'd.parquet')!r}); "
            "print('pandas' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# ---------------------------------------------------------------- the command

def test_forecast_labels_and_evaluate_from(tmp_path):
    path, stamps, values = dated_csv(tmp_path)
    model = tmp_path / "m.npz"
    assert run("train", path, "--hidden", "4", "--k1", "10", "--epochs", "1", "--streams", "2", "-q",
               "--calendar", "none", "-o", model).exit_code == 0   # no calendar: a plain file forecasts too
    result = run("forecast", model, path, "--steps", "3")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "time,value,value_lo80,value_hi80,value_lo95,value_hi95"   # split-conformal bounds
    assert [line.split(",")[0] for line in lines[1:]] == ["2024-01-11T00:00", "2024-01-11T01:00",
                                                          "2024-01-11T02:00"]
    every = json.loads(run("evaluate", model, path, "--json").stdout)
    # hourly data: the seasonal lag 24 by default, so forecasts start at row 23 (targets 24..239)
    assert engine.read_metadata(model)["user"]["data"]["lags"] == [24] and every["steps"] == 239 - 23
    by_date = json.loads(run("evaluate", model, path, "--from", "2024-01-10T12", "--json").stdout)
    by_row = json.loads(run("evaluate", model, path, "--from", "228", "--json").stdout)
    assert by_date == by_row and by_date["steps"] == 12
    # the scored rows are exactly 228..239, after warming up on the rows before
    tail = engine.evaluate_series(model, path, start=228)
    metadata = engine.read_metadata(model)["user"]
    assert tail["baseline_mae"] == pytest.approx(np.mean(np.abs(np.diff(values)[-12:])), rel=1e-5)
    assert engine.evaluate_series(engine.load_for_inference(model), path, start=np.datetime64("2024-01-10T12")) == tail
    result = run("evaluate", model, path, "--from", "2030-01-01")
    assert result.exit_code == 2 and "after the last time of the series" in result.stderr
    plain = tmp_path / "plain.csv"
    plain.write_text("value\n" + "\n".join(f"{value:.6f}" for value in values))
    assert run("forecast", model, plain, "--steps", "2").stdout.splitlines()[0].startswith("step,value,")
    result = run("evaluate", model, plain, "--from", "2024-01-10")
    assert result.exit_code == 2 and "has no time column of dates; give a row number" in result.stderr
    assert forecast_times(metadata, plain, 2) is None


def test_key_chooses_an_npz_array(tmp_path):
    np.savez(tmp_path / "two.npz", series=np.sin(np.arange(200) / 4), other=np.ones(7))
    output = tmp_path / "m.npz"
    common = ["--hidden", "4", "--k1", "10", "--epochs", "1", "--streams", "2", "-q"]
    result = run("train", tmp_path / "two.npz", *common, "-o", output)
    assert result.exit_code == 2 and "--key NAME" in result.stderr
    assert run("train", tmp_path / "two.npz", "--key", "series", *common, "-o", output).exit_code == 0
    assert run("forecast", output, tmp_path / "two.npz", "--key", "series").exit_code == 0
    assert run("evaluate", output, tmp_path / "two.npz", "--key", "series").exit_code == 0
    result = run("evaluate", output, tmp_path / "two.npz", "--key", "nope")
    assert result.exit_code == 2 and "no array named 'nope'" in result.stderr
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(DataError, match="the archive holds no arrays"):
        load_series(tmp_path / "empty.npz")


def test_bench_io_measures_in_fresh_processes():
    from bench.io import format_io, run_io

    records = run_io(rows=2000, repeats=1, readers=("engine",), echo=lambda line: None)
    assert records[0]["reader"] == "engine" and records[0]["seconds"] > 0
    assert 0 < records[0]["read_mib"] < records[0]["peak_mib"]
    assert "| engine, CSV |" in format_io(records)


def test_npz_and_npy_sizes_are_estimated_before_reading(tmp_path, monkeypatch):
    import zipfile
    path = tmp_path / "data.npz"
    np.savez(path, a=np.arange(100.0))
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("b.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<f8", "fortran_order": False,
                                                          "shape": (4 * 2 ** 20,)})
            for _ in range(32):
                member.write(bytes(2 ** 20))   # 32 MiB declared, a few KiB stored
    np.save(tmp_path / "big.npy", np.zeros(2 ** 20))
    monkeypatch.setattr(engine.footprint, "available_bytes", lambda: 4 * 2 ** 20)
    with pytest.raises(engine.footprint.MemoryEstimateError, match="reading .*data.npz needs about 32 MiB"):
        engine.series.read_file(path)
    assert engine.series.read_file(path, key="a").values.shape == (100, 1)   # only the array asked for
    with pytest.raises(engine.footprint.MemoryEstimateError, match="reading .*big.npy needs about 8 MiB"):
        engine.series.read_file(tmp_path / "big.npy")
