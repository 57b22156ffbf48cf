"""Entry point `python -m bench.backtest_cost`: what a backtest of a direct model costs
(docs/forecasting.md) against forecasting from each origin separately.

A 24-step direct LSTM (hidden 32, known inputs, calendar and lags, gaussian) on the load
demo lengthened to LENGTH rows. engine.backtest_series forecasts steps 1..24 from ORIGINS
origins spread over the series in one pass over it; the alternative, one
engine.forecast_series call per origin on the data up to that origin (and its next 24
rows of known inputs), runs over the whole prefix each time. Times are medians of ROUNDS
rounds after a warm-up (the kernels compiled); the per-origin cost is measured on SAMPLE
origins spread like the backtest's and scaled to all of them. The model is trained for
one epoch: its accuracy does not change its cost. Prints one JSON object."""
import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import engine
from bench.gemm_rate import _cpu_name
from engine.demos import electricity_load
from engine.series import Series

LENGTH, ORIGINS, HORIZON, ROUNDS, SAMPLE = 20_000, 1_000, 24, 3, 20
OPTIONS = dict(targets="load", known="temperature,promotion", calendar="hour,weekday", horizon=HORIZON,
               loss="gaussian", hidden=32, streams=32, epochs=1)


def prefix(series, end):
    """The series up to row `end` (the origin), then HORIZON rows of known inputs with the load unknown."""
    values = series.values[:end + 1 + HORIZON].copy()
    values[end + 1:, 0] = np.nan
    return Series(values, series.names, series.source, time=series.time[:end + 1 + HORIZON],
                  time_name=series.time_name, time_zone=series.time_zone)


def median_seconds(work, rounds):
    work()   # warm-up
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run(length=LENGTH, origins=ORIGINS, rounds=ROUNDS, sample=SAMPLE):
    series = electricity_load(length=length)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "direct.npz"
        engine.train_series(series, checkpoint, **OPTIONS)
        loaded = engine.load_for_inference(checkpoint)
        first = length - 1 - HORIZON - (origins - 1) * ((length - 1000) // origins)
        every = (length - 1000) // origins
        ends = first + every * np.arange(origins)
        backtest = median_seconds(lambda: engine.backtest_series(loaded, series, start=int(first), every=every),
                                  rounds)
        found = engine.backtest_series(loaded, series, start=int(first), every=every)
        picked = ends[np.linspace(0, origins - 1, sample).astype(int)]
        per_origin = median_seconds(lambda: [engine.forecast_series(loaded, prefix(series, int(end)), HORIZON)
                                             for end in picked], 1) / sample
        whole = median_seconds(lambda: engine.forecast_series(loaded, prefix(series, length - 1 - HORIZON),
                                                              HORIZON), rounds)
    return {"machine": _cpu_name(), "rows": length, "origins": int(found.metrics["origins"]), "horizon": HORIZON,
            "backtest_seconds": backtest, "one_forecast_of_the_whole_series_seconds": whole,
            "backtest_over_one_forecast": backtest / whole,
            "per_origin_forecasts_seconds": per_origin * origins,
            "per_origin_over_backtest": per_origin * origins / backtest}


def main():
    parser = argparse.ArgumentParser(prog="python -m bench.backtest_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short series, few origins: a smoke run")
    quick = parser.parse_args().quick
    print(json.dumps(run(3_000, 50, 1, 5) if quick else run(), indent=2))


if __name__ == "__main__":
    main()
