"""Entry point `python -m bench.quality` (and `bptt bench --quality`): how well the
engine forecasts a suite of series, beside the seasonal naive forecast, ETS, ARIMA and,
where the generator is known, the exact forecast. Every figure is a backtest MASE on
rows no model was fitted to.

The suite (bench/quality_suite.py; H: steps forecast from each origin, s: the season):
  load     the load demo: hourly, target load, known temperature and promotion; H 24, s 24
  sine     the sine demo: 20,000 steps, no times; H 24, s 24
  sensors  the sensors demo: a panel of 50 hourly series (300-20,000 rows); H 24, s 24
  daily    synthetic: 20 daily series of 300-1,500 days, scales 0.01-1e4, AR(2) plus a
           weekly pattern; H 7, s 7
  daily40  synthetic: the same with 40 series of 300-3,000 days (the panel the quality
           targets were first measured on); H 7, s 7
  hourly   synthetic: 10 hourly series of 2,000-5,000 rows, a daily cycle and a known
           input (driver) that moves the target; H 24, s 24
  co2      statsmodels' co2: 2,284 weeks (missing weeks interpolated); H 8, s 52
  elnino   statsmodels' elnino: 732 months of sea surface temperature; H 12, s 12
  realgdp  statsmodels' macrodata realgdp: 203 quarters; H 4, s 4

Split: each series' last 15% of rows is its backtest window; the training part is every
row before it. Origins from the window's first row every `every` rows (24 hourly, 7
daily, 8 co2, 4 elnino, 1 realgdp: at least 20 origins per member), steps 1..H, each
forecast from the data up to its origin (no refit).

Per member, the MASE (the MAE over that of the seasonal naive forecast of period s from
the same origins, on the same rows; for a panel, the mean of the series' MASEs) of:
  defaults  engine.train_series(training part, horizon=H, + the member's targets/known),
            every other option at its default (seed 0)
  sweep     engine.sweep.run(training part, trials=20 (SWEEP_TRIALS, the sweep's own
            default), metric="mase", season=s, same options): the default search space
            (lr, hidden, layers, dropout, k1), each trial train's default 20 epochs, pruned;
            its best.npz backtested
  ETS, ARIMA  statsmodels, fitted once per series on its training part (at most its
            last 2,000 rows): bench/quality_baselines.py. ETS: additive season s (plus a
            damped trend for co2 and realgdp); ARIMA: ARIMA(2, d, 1) errors (d = 1 for co2
            and realgdp) on Fourier terms of the calendar's cycles (hourly: a day and a
            week) and the member's known inputs
  oracle    the exact conditional mean forecast, for the members whose generator is
            known (load, sine, daily, daily40, hourly)
and the seasonal naive's own MAE (pooled over a panel's series, in their units). Each
method's MASE is also taken per horizon step (step h: the rows h steps after their
origin, against the naive's on those rows), and the one-step MASE (step 1) is tabled
beside the oracle's: the quality targets are stated for it. The settings the sweep
found best are reported per member.

One seed throughout. The whole run takes about 5 minutes on 2 cores. Prints two markdown
tables (the MASE over all steps; the one-step MASE) and the sweep's best settings per
member; -o FILE writes everything as JSON (each method's MASE per step in "step_mase");
--members NAME,... runs only those. --quick: a smoke run (two members, tiny models, one
epoch, two trials), not a measurement.
"""
import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import engine
import engine.sweep
from bench.gemm_rate import _cpu_name
from bench.quality_baselines import arima_forecasts, ets_forecasts, require_statsmodels
from bench.quality_suite import BACKTEST_SHARE, MEMBERS
from bench.report import write_json
from engine.data import mae, mase
from engine.files import OutputError, check_output
from engine.panel import Panel

SWEEP_TRIALS = 20   # engine.sweep.run's own default
QUICK_MEMBERS = ("realgdp", "hourly")
QUICK_TRAINING = dict(epochs=1, hidden=4)   # smoke run only
METHODS = ("defaults", "sweep", "ets", "arima", "oracle")


# --------------------------------------------------------------------------- the split

def series_of(data):
    """[(id, Series, times)] of a Series (id None) or a Panel."""
    if isinstance(data, Panel):
        return list(zip(data.ids, data.series, data.times))
    return [(None, data, data.time)]


def window_starts(data):
    """The first row of each series' backtest window: an int, or {id: row} for a panel."""
    starts = {name: len(one.values) - round(BACKTEST_SHARE * len(one.values)) for name, one, _ in series_of(data)}
    return starts if isinstance(data, Panel) else starts[None]


def training_part(data, starts):
    """The rows of each series before its backtest window."""
    if not isinstance(data, Panel):
        return _head(data, starts)
    cut = [_head(one, starts[name]) for name, one, _ in series_of(data)]
    times = tuple(stamps[:starts[name]] for name, stamps in zip(data.ids, data.times))
    return dataclasses.replace(data, series=tuple(cut), times=times)


def _head(series, rows):
    time = None if series.time is None else series.time[:rows]
    return dataclasses.replace(series, values=series.values[:rows], time=time)


# -------------------------------------------------------------------------- backtests

class Rows:
    """The rows of a backtest table: ids (n,) (None for one series), origin rows (n,),
    steps (n,), actual (n,) and naive (n,); scored: the rows with both."""

    def __init__(self, data, table):
        self.steps = table.column("step").to_numpy()
        self.actual = table.column("actual").to_numpy()
        self.naive = table.column("naive").to_numpy()
        self.scored = np.isfinite(self.actual) & np.isfinite(self.naive)
        self.ids = (table.column("id").to_numpy(zero_copy_only=False) if "id" in table.column_names
                    else np.full(table.num_rows, None))
        self.origins = np.empty(table.num_rows, dtype=np.int64)
        origin = table.column("origin").to_numpy()
        for name, _, stamps in series_of(data):
            mine = self.ids == name
            self.origins[mine] = origin[mine] if stamps is None else _rows_of(stamps, origin[mine])

    def mase(self, forecast, step=None):
        """The mean over series of each one's MASE on the scored rows (of horizon step
        `step` only, when given: its naive's MAE on that step's rows)."""
        chosen = self.scored if step is None else self.scored & (self.steps == step)
        return float(np.mean([mase(forecast[rows], self.actual[rows], self.naive[rows])
                              for rows in self._by_series(chosen)]))

    def step_mase(self, forecast):
        """[MASE of step 1, ..., of step H] (each as `mase` with that step)."""
        return [self.mase(forecast, step) for step in range(1, int(self.steps.max()) + 1)]

    def naive_mae(self):
        return mae(self.naive[self.scored], self.actual[self.scored])

    def _by_series(self, chosen):
        return [chosen & (self.ids == name) for name in dict.fromkeys(self.ids)]


def _rows_of(stamps, when):
    """The rows of `stamps` at the instants `when` (all present)."""
    when = when.astype(stamps.dtype)
    rows = np.searchsorted(stamps, when)
    assert np.array_equal(stamps[rows], when), "backtest stamps not in the data"
    return rows


def backtest(checkpoint, data, member, starts):
    """The model's backtest table over the members' windows."""
    return engine.backtest_series(checkpoint, data, start=starts, every=member.every, steps=member.horizon,
                                  season=member.season, intervals="none").table


def baseline(method, data, member, rows):
    """ETS's or ARIMA's forecasts at the table's rows: one fit per series."""
    forecast = np.full(len(rows.origins), np.nan)
    starts = window_starts(data)
    for name, one, _ in series_of(data):
        mine = rows.ids == name
        origins, position = np.unique(rows.origins[mine], return_inverse=True)
        start = starts[name] if isinstance(starts, dict) else starts
        y, known = _target_and_known(one, member)
        if method == "ets":
            found = ets_forecasts(y, start, origins, member.horizon, member.season, member.trending)
        else:
            found = arima_forecasts(y, known, start, origins, member.horizon, member.periods, member.trending)
        forecast[mine] = found[position, rows.steps[mine] - 1]
    return forecast


def _target_and_known(series, member):
    """The target column (T,) and the known inputs (T, k) or None."""
    target = series.names.index(member.options.get("targets", series.names[0]))
    known = member.options.get("known")
    columns = [series.names.index(name) for name in known.split(",")] if known else []
    return series.values[:, target], series.values[:, columns] if columns else None


# ---------------------------------------------------------------------------- a member

def measure(member, directory, quick=False, echo=lambda line: None):
    """Every method's MASE on one member, the naive's MAE and the sweep's best settings."""
    data = member.make()
    starts = window_starts(data)
    timings = {}

    def timed(name, work):
        echo(f"{member.name}: {name} ...")
        started = time.perf_counter()
        value = work()
        timings[name] = round(time.perf_counter() - started, 1)
        return value

    tables, best = engine_tables(member, data, starts, Path(directory), quick, timed)
    rows = Rows(data, tables["defaults"])
    found = {name: table.column("forecast").to_numpy() for name, table in tables.items()}
    for method in ("ets", "arima"):
        found[method] = timed(method, lambda: baseline(method, data, member, rows))
    if member.oracle is not None:
        found["oracle"] = member.oracle(data, rows.ids, rows.origins, rows.steps)
    return {"about": member.about, "horizon": member.horizon, "season": member.season, "every": member.every,
            "series": len(series_of(data)), "origins": len(set(zip(rows.ids, rows.origins))),
            "scored": int(rows.scored.sum()), "options": dict(horizon=member.horizon, **member.options),
            "mase": {method: rows.mase(forecast) for method, forecast in found.items()},
            "step_mase": {method: rows.step_mase(forecast) for method, forecast in found.items()},
            "naive_mae": rows.naive_mae(), "sweep_best": best, "seconds": timings}


def engine_tables(member, data, starts, directory, quick, timed):
    """The backtest tables {"defaults", "sweep"} of the model trained with the defaults and
    of the sweep's best.npz, both on the training part (the same rows, in the same order),
    and the sweep's best configuration."""
    train = training_part(data, starts)
    options = dict(horizon=member.horizon, **member.options)
    defaults = directory / f"{member.name}-defaults.npz"
    timed("defaults", lambda: engine.train_series(train, defaults, force=True, **options,
                                                  **(QUICK_TRAINING if quick else {})))
    swept = directory / f"{member.name}-sweep"
    best = timed("sweep", lambda: engine.sweep.run(
        train, trials=2 if quick else SWEEP_TRIALS, output_dir=str(swept), metric="mase", season=member.season,
        epochs=1 if quick else None, **options))["best"]
    tables = {name: backtest(checkpoint, data, member, starts)
              for name, checkpoint in (("defaults", defaults), ("sweep", swept / "best.npz"))}
    assert all(tables["sweep"].column(name).equals(tables["defaults"].column(name))
               for name in ("origin", "step")), "the backtests list different rows"
    return tables, best


# ----------------------------------------------------------------------- the whole run

def run(quick=False, names=None, echo=lambda line: None):
    """measure() of the members named (default: all, or QUICK_MEMBERS with quick); echo
    gets a progress line per step."""
    require_statsmodels()
    names = names or (QUICK_MEMBERS if quick else [member.name for member in MEMBERS])
    chosen = [member for member in MEMBERS if member.name in names]
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        for member in chosen:
            results[member.name] = measure(member, directory, quick, echo)
    return {"date": time.strftime("%Y-%m-%d"), "machine": _cpu_name(), "quick": quick,
            "backtest_share": BACKTEST_SHARE, "sweep_trials": 2 if quick else SWEEP_TRIALS,
            "members": results}


def markdown(result):
    """Two tables, one row per member. The first: H, season, origins, each method's MASE
    over every step and the naive's MAE; the second: each method's one-step MASE (step 1
    of every origin) and, where the oracle is known, the defaults' and the sweep's over
    the oracle's (what the quality targets name)."""
    head = "| member | H | season | origins | defaults | sweep | ETS | ARIMA | oracle | naive MAE |"
    lines = [head, _rule(head)]
    for name, member in result["members"].items():
        lines.append(f"| {name} | {member['horizon']} | {member['season']} | {member['origins']} | "
                     f"{' | '.join(_cells(member['mase']))} | {member['naive_mae']:.4g} |")
    head = "| member | step 1: defaults | sweep | ETS | ARIMA | oracle | defaults / oracle | sweep / oracle |"
    lines += ["", head, _rule(head)]
    for name, member in result["members"].items():
        first = {method: steps[0] for method, steps in member["step_mase"].items()}
        ratios = [f"{first[method] / first['oracle']:.2f}" if "oracle" in first else "-"
                  for method in ("defaults", "sweep")]
        lines.append(f"| {name} | {' | '.join(_cells(first) + ratios)} |")
    return "\n".join(lines)


def _cells(figures):
    """{method: MASE} as the table's cells in METHODS' order ("-": not measured)."""
    return [f"{figures[method]:.3f}" if method in figures else "-" for method in METHODS]


def _rule(head):
    return "|" + "---|" * (head.count("|") - 1)


def best_settings(result):
    """The settings of each member's best sweep configuration, one line each."""
    lines = []
    for name, member in result["members"].items():
        best = member["sweep_best"]
        values = ", ".join(f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}"
                           for key, value in (best or {}).get("values", {}).items())
        lines.append(f"{name}: {values or 'no completed trial'}")
    return "\n".join(lines)


def check_names(names):
    """The member names of a comma-separated list (ValueError naming an unknown one)."""
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    known = [member.name for member in MEMBERS]
    for name in chosen:
        if name not in known:
            raise ValueError(f"unknown member {name!r}; choose from {', '.join(known)}")
    return chosen


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", help="write the results as JSON to this file")
    parser.add_argument("--quick", action="store_true", help="two members, tiny models: a smoke run")
    parser.add_argument("--members", help="comma-separated members to run [default: all]")
    args = parser.parse_args()
    try:
        names = check_names(args.members) if args.members else None
        if args.output:
            check_output(args.output, what="JSON output")
        require_statsmodels()
    except (ValueError, OutputError, ImportError) as error:
        parser.error(str(error))   # one line, exit status 2, before any work
    result = run(args.quick, names, echo=lambda line: print(line, file=sys.stderr, flush=True))
    print(markdown(result))
    print()
    print(best_settings(result))
    if args.output:
        write_json(args.output, result)


if __name__ == "__main__":
    main()
