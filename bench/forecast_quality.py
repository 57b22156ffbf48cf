"""Entry point `python -m bench.forecast_quality`: the forecast quality of direct 24-step
models on the bundled load demo (docs/forecasting.md), measured by a backtest on days the
models never saw.

Each variant of VARIANTS is trained by engine.train_series on the demo's rows before
BACKTEST_FROM (its own validation tail, the last tenth of those rows, picks the epoch by
early stopping and calibrates the mse model's conformal intervals), with the fixed BUDGET,
once per seed of SEEDS. engine.backtest_series then forecasts steps 1..24 from an origin
every 24 h from BACKTEST_FROM to the end (the last 183 days), the state warmed up on all
rows before each origin: MAE, MASE against the seasonal naive forecasts of periods 24 and
168 from the same origins, and the coverage of the 80% and 95% intervals. The MAE is also
split between the promotion hours (the demo's promotion column joined to the backtest
table by time) and the other hours: variant (c), which does not read promotion, shows
what the input is worth. The reference row is the demo's exact forecast distribution
(exact_forecasts), the best any model can do.

Prints a markdown table (means over the seeds; MAE with its range); -o FILE writes it all
as JSON. --quick: one seed, a tiny model and one epoch (a smoke run, not a measurement).
"""
import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

import engine
from bench.gemm_rate import _cpu_name
from bench.report import write_json
from engine.data import mae, mase
from engine.demos import LOAD_AR, LOAD_INNOVATION, electricity_load, load_oracle
from engine.files import OutputError, check_output
from engine.forecasting.intervals import gaussian_bounds
from engine.forecasting.scores import coverage

BACKTEST_FROM = "2025-07-01T00:00"
HORIZON = 24
SEASONS = (24, 168)
LEVELS = (80, 95)
SEEDS = (0, 1, 2)
BUDGET = dict(hidden=32, streams=32, k1=50, lr=0.003, epochs=200, patience=10)
QUICK_BUDGET = dict(hidden=8, streams=16, k1=50, lr=0.003, epochs=1)
COMMON = dict(targets="load", horizon=HORIZON, known="temperature,promotion", calendar="hour,weekday",
              loss="gaussian")
VARIANTS = {   # the options each model changes from COMMON
    "(a) gaussian, known + calendar": {},
    "(b) without --calendar": {"calendar": "none"},
    "(c) without --known promotion": {"known": "temperature"},
    "(d) --loss quantile": {"loss": "quantile", "quantiles": "0.025,0.1,0.5,0.9,0.975"},
    "(e) --loss mse (conformal)": {"loss": "mse"},
}


def before(series, stamp):
    """The rows of `series` (an engine Series with times) before `stamp`."""
    end = int(np.searchsorted(series.time, np.datetime64(stamp)))
    return dataclasses.replace(series, values=series.values[:end], time=series.time[:end])


def table_rows(series, column):
    """Rows of `series` at the stamps of a backtest table's `column` (origin or time)."""
    stamps = column.to_numpy().astype(series.time.dtype)
    rows = np.searchsorted(series.time, stamps)
    assert np.array_equal(series.time[rows], stamps), "backtest stamps not in the data"
    return rows


def scores(tables, forecast, bounds, series):
    """Scores of the point `forecast` and interval `bounds` {level: (lo, hi)} (arrays over
    the rows of the backtest tables {season: Table}, which list the same forecasts beside
    each season's naive forecast): MAE, MASE per season, coverage per level, and the MAE on
    the promotion hours and on the others."""
    table = tables[SEASONS[0]]
    actual = table.column("actual").to_numpy()
    promoted = series.values[table_rows(series, table.column("time")), series.names.index("promotion")] > 0
    return {"mae": mae(forecast, actual),
            **{f"mase_{season}": mase(forecast, actual, tables[season].column("naive").to_numpy())
               for season in SEASONS},
            **{f"coverage_{level}": coverage(actual, *bounds[level]) for level in LEVELS},
            "mae_promotion": mae(forecast[promoted], actual[promoted]),
            "mae_other": mae(forecast[~promoted], actual[~promoted]),
            "promotion_hours": int(promoted.sum()), "scored": int(np.isfinite(actual).sum())}


def model_scores(tables, series):
    """scores() of a model's own forecasts and intervals in its backtest tables."""
    table = tables[SEASONS[0]]
    bounds = {level: (table.column(f"lo{level}").to_numpy(), table.column(f"hi{level}").to_numpy())
              for level in LEVELS}
    return scores(tables, table.column("forecast").to_numpy(), bounds, series)


def exact_forecasts(series, origins, steps):
    """The demo's exact forecast of rows origins + steps made at the origins (1-D arrays of
    rows and steps alike): load = m + e with e an AR(1) noise, so the forecast is Normal(
    m[t] + a^h e[o], s^2 (1 - a^2h) / (1 - a^2)) for t = o + h (a = LOAD_AR, s =
    LOAD_INNOVATION). m and e come from the one-step oracle's mean m[t] + a e[t - 1]: e[t] =
    load[t] - mean[t] + a e[t - 1]. Returns (mean, scale)."""
    load = series.values[:, series.names.index("load")]
    noise = lfilter([1.0], [1.0, -LOAD_AR], load - load_oracle(len(load)).mean)
    level = load - noise
    mean = level[origins + steps] + LOAD_AR ** steps * noise[origins]
    scale = LOAD_INNOVATION * np.sqrt((1 - LOAD_AR ** (2 * steps)) / (1 - LOAD_AR ** 2))
    return mean, scale


def exact_scores(tables, series):
    """scores() of the exact forecasts at the rows of a model's backtest tables."""
    table = tables[SEASONS[0]]
    mean, scale = exact_forecasts(series, table_rows(series, table.column("origin")),
                                  table.column("step").to_numpy())
    return scores(tables, mean, {level: gaussian_bounds(mean, scale, level) for level in LEVELS}, series)


def measure(options, budget, seed, series, checkpoint):
    """Train a variant (its options) with one seed to `checkpoint` and backtest it: its
    scores, training time and epochs, and the backtests."""
    started = time.perf_counter()
    _, trainer, _ = engine.train_series(before(series, BACKTEST_FROM), checkpoint, force=True, seed=seed,
                                        **{**COMMON, **options, **budget})
    seconds = time.perf_counter() - started
    model = engine.load_for_inference(checkpoint)
    backtests = {season: engine.backtest_series(model, series, start=BACKTEST_FROM, every=HORIZON, steps=HORIZON,
                                                season=season, intervals=LEVELS) for season in SEASONS}
    tables = {season: backtest.table for season, backtest in backtests.items()}
    return {"seed": seed, "train_seconds": seconds, "epochs": len(trainer.history.epochs),
            "origins": backtests[SEASONS[0]].metrics["origins"], **model_scores(tables, series)}, tables


def summary(runs):
    """Means over the seeds' runs, and the MAE's range."""
    means = {key: float(np.mean([run[key] for run in runs])) for key in runs[0] if key != "seed"}
    return {**means, "mae_min": min(run["mae"] for run in runs), "mae_max": max(run["mae"] for run in runs)}


def markdown(result):
    """The results as a markdown table, one row per model and the exact reference last."""
    head = ("| model | MAE (range over seeds) | MASE 24 | MASE 168 | 80% covered | 95% covered "
            "| MAE promotion hours | MAE other hours | train s |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for name, model in result["models"].items():
        mean = model["mean"]
        spread = f" ({mean['mae_min']:.1f}-{mean['mae_max']:.1f})" if len(model["runs"]) > 1 else ""
        lines.append(f"| {name} | {mean['mae']:.1f}{spread} | {_cells(mean)} | {mean['train_seconds']:.0f} |")
    lines.append(f"| exact distribution (reference) | {result['exact']['mae']:.1f} | {_cells(result['exact'])} | - |")
    return "\n".join(lines)


def _cells(scored):
    return " | ".join([*(f"{scored[f'mase_{season}']:.3f}" for season in SEASONS),
                       *(f"{100 * scored[f'coverage_{level}']:.1f}%" for level in LEVELS),
                       f"{scored['mae_promotion']:.1f}", f"{scored['mae_other']:.1f}"])


def run(quick=False):
    budget, seeds = (QUICK_BUDGET, SEEDS[:1]) if quick else (BUDGET, SEEDS)
    series = electricity_load()
    models, exact = {}, None
    with tempfile.TemporaryDirectory() as directory:
        for index, (name, options) in enumerate(VARIANTS.items()):
            runs = []
            for seed in seeds:
                checkpoint = Path(directory) / f"model-{index}-{seed}.npz"
                scored, tables = measure(options, budget, seed, series, checkpoint)
                runs.append(scored)
                exact = exact or exact_scores(tables, series)   # the same rows for every model
            models[name] = {"options": {**COMMON, **options}, "runs": runs, "mean": summary(runs)}
    return {"date": time.strftime("%Y-%m-%d"), "machine": _cpu_name(), "quick": quick,
            "backtest": {"from": BACKTEST_FROM, "every": HORIZON, "steps": HORIZON, "seasons": list(SEASONS),
                         "levels": list(LEVELS)},
            "training": {"rows_before": BACKTEST_FROM, "budget": budget, "seeds": list(seeds)},
            "models": models, "exact": exact}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", help="write the results as JSON to this file")
    parser.add_argument("--quick", action="store_true", help="one seed, a tiny model, one epoch: a smoke run")
    args = parser.parse_args()
    if args.output:
        try:
            check_output(args.output, what="JSON output")
        except OutputError as error:
            parser.error(str(error))   # one line, exit status 2, before any work
    result = run(args.quick)
    print(markdown(result))
    if args.output:
        write_json(args.output, result)


if __name__ == "__main__":
    main()
