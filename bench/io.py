"""Entry point `python -m bench.io [--rows N]`: reading a long series. One generated CSV
(a time column and two numbers, 2M rows by default) and the same table as Parquet, read
by the engine (engine.data.load_series), pandas.read_csv (as is, and parsing the dates),
numpy.loadtxt (the numbers only) and pandas.read_parquet. Each read runs in a fresh
process (`python -m bench.io --one READER PATH`), the readers taking turns, `--repeats`
times; prints the best time, the time relative to pandas.read_csv, the peak RSS of the
process and how far reading raised it. `--train` adds the peak RSS of `bptt train` on the
CSV for one epoch."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROWS = 2_000_000
TRAIN_OPTIONS = dict(epochs=1, hidden=16, streams=32, val_fraction=0.05)
READERS = {  # name -> (file, description)
    "engine": ("csv", "engine, CSV"),
    "pandas": ("csv", "pandas.read_csv"),
    "pandas-dates": ("csv", "pandas.read_csv, parse_dates"),
    "loadtxt": ("csv", "numpy.loadtxt, numbers only"),
    "engine-parquet": ("parquet", "engine, Parquet"),
    "pandas-parquet": ("parquet", "pandas.read_parquet"),
}


def generate(directory, rows=ROWS, seed=0):
    """Write data.csv and data.parquet: a minute time column and two numbers (rounded, as
    a logger writes them). Returns {"csv": path, "parquet": path}."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as parquet

    rng = np.random.default_rng(seed)
    stamps = np.datetime64("2020-01-01T00:00", "s") + np.arange(rows).astype("timedelta64[m]")
    table = pa.table({"time": stamps, "temp": np.round(rng.normal(15, 5, rows), 4),
                      "load": np.round(rng.normal(100, 20, rows), 3)})
    paths = {"csv": os.path.join(directory, "data.csv"), "parquet": os.path.join(directory, "data.parquet")}
    pacsv.write_csv(table, paths["csv"], pacsv.WriteOptions(quoting_header="none"))
    parquet.write_table(table, paths["parquet"])
    return paths


def _rss_mib(field="VmRSS"):
    """This process's resident set (VmRSS) or its peak (VmHWM), MiB. Not getrusage's
    ru_maxrss: Linux carries that over from the parent through fork and exec."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def measure(reader, path):
    """One process: import the reader, then read `path` once."""
    if reader.startswith("engine"):
        from engine.data import load_series as read
    elif reader == "loadtxt":
        def read(path):
            return np.loadtxt(path, delimiter=",", skiprows=1, usecols=(1, 2))
    else:
        import pandas
        read = {"pandas": pandas.read_csv, "pandas-parquet": pandas.read_parquet,
                "pandas-dates": lambda path: pandas.read_csv(path, parse_dates=["time"])}[reader]
    before = _rss_mib()
    started = time.perf_counter()
    result = read(path)
    seconds = time.perf_counter() - started
    peak = _rss_mib("VmHWM")
    assert len(getattr(result, "values", result)) > 0
    return {"reader": reader, "seconds": seconds, "peak_mib": peak, "read_mib": peak - before}


def measure_train(path):
    """One process: `bptt train PATH` (engine.train_series, its defaults) for one epoch;
    its peak RSS and time."""
    import engine

    output = os.path.join(os.path.dirname(path), "model.npz")
    started = time.perf_counter()
    engine.train_series(path, output, force=True, **TRAIN_OPTIONS)
    return {"reader": "train", "seconds": time.perf_counter() - started,
            "peak_mib": _rss_mib("VmHWM")}


# A fresh process that loads this file alone: importing the package `bench` would import
# the engine, numba and pandas before any reader is measured.
_ONE = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('bench_io', sys.argv[1]); "
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
        "sys.argv[1:2] = []; module.main()")


def _one(*args):
    """Run `bench/io.py --one ARGS` in a fresh process; its record."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", _ONE, os.path.abspath(__file__), "--one", *args],
                            capture_output=True, text=True, env=environment)
    if result.returncode != 0:
        raise RuntimeError(f"bench.io --one {' '.join(args)} failed:\n{result.stderr}")
    return json.loads(result.stdout.splitlines()[-1])


def run_io(rows=ROWS, repeats=3, readers=tuple(READERS), train=False, directory=None, echo=print):
    """Generate the files and time every reader `repeats` times (each a fresh process,
    taking turns). Returns one record per reader: best seconds, lowest peak and read RSS
    (MiB), plus "rows" and "array_mib" (the (T, 2) float64 values) in each."""
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        echo(f"generating {rows:,} rows ...")
        paths = generate(scratch, rows)
        runs = {reader: [] for reader in readers}
        for round_ in range(repeats):
            echo(f"round {round_ + 1}/{repeats}: {', '.join(readers)}")
            for reader in readers:
                runs[reader].append(_one(reader, paths[READERS[reader][0]]))
        records = [{"reader": reader, "seconds": min(run["seconds"] for run in runs[reader]),
                    "peak_mib": min(run["peak_mib"] for run in runs[reader]),
                    "read_mib": min(run["read_mib"] for run in runs[reader])} for reader in readers]
        if train:
            echo("bptt train, one epoch ...")
            records.append(_one("train", paths["csv"]))
        for record in records:
            record.update(rows=rows, array_mib=rows * 2 * 8 / 2**20,
                          csv_mib=os.path.getsize(paths["csv"]) / 2**20)
    return records


def format_io(records):
    """The table of run_io's records (markdown, as quoted in the README)."""
    pandas = next((record["seconds"] for record in records if record["reader"] == "pandas"), None)
    first = records[0]
    lines = [f"{first['rows']:,} rows, CSV {first['csv_mib']:.0f} MiB, values (T, 2) float64 "
             f"{first['array_mib']:.0f} MiB; best of fresh processes",
             "", "| reader | seconds | x pandas.read_csv | peak RSS MiB | RSS added by reading MiB |",
             "|---|---:|---:|---:|---:|"]
    for record in records:
        name = ("bptt train " + " ".join(f"--{key.replace('_', '-')} {value}" for key, value in TRAIN_OPTIONS.items())
                if record["reader"] == "train"
                else READERS[record["reader"]][1])
        ratio = f"{record['seconds'] / pandas:.2f}" if pandas and record["reader"] != "train" else ""
        added = f"{record['read_mib']:.0f}" if "read_mib" in record else ""
        lines.append(f"| {name} | {record['seconds']:.2f} | {ratio} | {record['peak_mib']:.0f} | {added} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train", action="store_true", help="also the peak RSS of bptt train, one epoch")
    parser.add_argument("--one", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        reader, path = args.one
        print(json.dumps(measure_train(path) if reader == "train" else measure(reader, path)))
        return
    records = run_io(args.rows, args.repeats, train=args.train, echo=lambda line: print(line, file=sys.stderr))
    print(format_io(records))


if __name__ == "__main__":
    main()
