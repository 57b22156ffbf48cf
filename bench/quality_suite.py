"""The members of the forecast quality benchmark (bench/quality.py): their data, horizon,
season, backtest spacing, the options training needs, and their exact forecasts where
the generator is known. The two synthetic panels are generated here.

Each member's data is an engine Series (one series) or Panel (many), all with times
except `sine`. `oracle(data, ids, origins, steps)` gives the exact conditional mean of
rows origins + steps of the series ids made at the origins (1-D arrays of one length),
or the member has none (None).
"""
import dataclasses
import functools
from typing import Callable, NamedTuple

import numpy as np

from bench.forecast_quality import exact_forecasts
from engine.demos import electricity_load, sensors, sine
from engine.panel import Panel
from engine.series import Series

BACKTEST_SHARE = 0.15   # the backtest window: the last 15% of each series' rows
END = np.datetime64("2026-01-01T00:00", "ns")   # the synthetic panels end here


@dataclasses.dataclass(frozen=True)
class Member:
    name: str
    make: Callable              # () -> Series or Panel
    horizon: int                # steps forecast from each origin
    season: int                 # the seasonal naive's period (MASE), ETS's season
    every: int                  # rows between origins
    options: dict               # the train options the data needs (targets, known)
    periods: tuple              # ARIMA's Fourier periods: the calendar's cycles (hourly: a day and a week)
    trending: bool = False      # ETS with a damped trend, ARIMA on first differences
    oracle: Callable = None     # (data, ids, origins, steps) -> (n,) or None
    about: str = ""


# ------------------------------------------------------------ the synthetic daily panel

class DailyParts(NamedTuple):
    """One series of the daily panel: value = scale (level + weekly[t mod 7] + u[t]),
    u[t] = ar[0] u[t-1] + ar[1] u[t-2] + N(0, 0.5^2)."""
    scale: float
    level: float
    weekly: np.ndarray   # (7,)
    ar: tuple
    u: np.ndarray        # (T,)


def daily_parts(count=20, seed=1, shortest=300, longest=1500):
    """The generating parts of the daily panel's `count` series (lengths log-spaced from
    `shortest` to `longest` days, scales log-uniform over 0.01 .. 1e4)."""
    rng = np.random.default_rng(seed)
    lengths = np.geomspace(shortest, longest, count).round().astype(int)
    rng.shuffle(lengths)
    parts = []
    for length in lengths:
        ar = (rng.uniform(0.3, 0.9), rng.uniform(-0.4, 0.0))   # stationary: a1 + a2 < 1, a2 > -1
        innovations = 0.5 * rng.standard_normal(length + 100)
        u = np.zeros(length + 100)
        for t in range(2, length + 100):
            u[t] = ar[0] * u[t - 1] + ar[1] * u[t - 2] + innovations[t]
        weekly = rng.normal(0, 1, 7)
        parts.append(DailyParts(10 ** rng.uniform(-2, 4), rng.uniform(1, 5), weekly - weekly.mean(), ar,
                                u[100:]))   # 100 days of burn-in: u stationary from the start
    return parts


# The panel the issue on good defaults measured: 40 series of 300-3,000 days.
ISSUE_PANEL = dict(count=40, seed=3, shortest=300, longest=3000)


def daily_panel(**shape):
    """The daily panel of daily_parts(**shape)."""
    parts = daily_parts(**shape)
    values = [p.scale * (p.level + p.weekly[np.arange(len(p.u)) % 7] + p.u) for p in parts]
    return _panel(values, "day", "synthetic:daily")


def daily_oracle(data, ids, origins, steps, **shape):
    """scale (level + weekly[t mod 7] + E[u[t] | u up to the origin]) for t = origin + step,
    of the panel of daily_parts(**shape)."""
    parts = daily_parts(**shape)
    forecast = np.empty(len(origins))
    for index, part in enumerate(parts):
        mine = ids == data.ids[index]
        ahead = _ar2_ahead(part.ar, part.u[origins[mine]], part.u[origins[mine] - 1], steps[mine])
        rows = origins[mine] + steps[mine]
        forecast[mine] = part.scale * (part.level + part.weekly[rows % 7] + ahead)
    return forecast


def _ar2_ahead(ar, last, before, steps):
    """E[u[o + h] | u[o] = last, u[o - 1] = before] of the AR(2) `ar`, h = steps (arrays)."""
    ahead = np.empty(len(steps))
    previous, current = before.copy(), last.copy()
    for h in range(1, int(steps.max(initial=0)) + 1):
        previous, current = current, ar[0] * current + ar[1] * previous
        ahead[steps == h] = current[steps == h]
    return ahead


# ----------------------------------------------------------- the synthetic hourly panel

class HourlyParts(NamedTuple):
    """One series of the hourly panel: value = scale (level + amplitude sin(2 pi t / 24 +
    phase) + effect driver[t] + u[t]), u[t] = 0.8 u[t-1] + N(0, 0.3^2); driver (the known
    input, in its own units) = an AR(1) of coefficient 0.95 plus pulses of 2 lasting 3-6 hours."""
    scale: float
    level: float
    amplitude: float
    phase: float
    effect: float
    driver: np.ndarray   # (T,)
    u: np.ndarray        # (T,)


HOURLY_AR = 0.8


def hourly_parts(count=10, seed=2, shortest=2000, longest=5000):
    rng = np.random.default_rng(seed)
    lengths = np.geomspace(shortest, longest, count).round().astype(int)
    rng.shuffle(lengths)
    return [HourlyParts(10 ** rng.uniform(-1, 3), rng.uniform(2, 6), rng.uniform(0.5, 2), rng.uniform(0, 2 * np.pi),
                        rng.uniform(0.5, 2), _driver(rng, length), _ar1(rng, HOURLY_AR, 0.3, length))
            for length in lengths]


def _driver(rng, length):
    pulses = np.zeros(length)
    for start in np.flatnonzero(rng.random(length) < 1 / 50):
        pulses[start:start + rng.integers(3, 7)] = 2.0
    return _ar1(rng, 0.95, 0.3, length) + pulses


def _ar1(rng, coefficient, sd, length):
    """A stationary AR(1) of `coefficient` and innovation sd `sd`, `length` steps."""
    innovations = sd * rng.standard_normal(length)
    innovations[0] /= np.sqrt(1 - coefficient ** 2)
    u = np.empty(length)
    u[0] = innovations[0]
    for t in range(1, length):
        u[t] = coefficient * u[t - 1] + innovations[t]
    return u


def _hourly_mean(part, rows):
    """The series' value at `rows` without its AR noise."""
    cycle = part.amplitude * np.sin(2 * np.pi * rows / 24 + part.phase)
    return part.scale * (part.level + cycle + part.effect * part.driver[rows])


def hourly_panel():
    parts = hourly_parts()
    values = [np.column_stack([_hourly_mean(p, np.arange(len(p.u))) + p.scale * p.u, p.driver]) for p in parts]
    return _panel(values, "h", "synthetic:hourly", names=("value", "driver"))


def hourly_oracle(data, ids, origins, steps):
    """The mean without noise at t = origin + step (the driver there is known) plus
    scale 0.8^step u[origin]."""
    forecast = np.empty(len(origins))
    for index, part in enumerate(hourly_parts()):
        mine = ids == data.ids[index]
        rows = origins[mine] + steps[mine]
        forecast[mine] = _hourly_mean(part, rows) + part.scale * HOURLY_AR ** steps[mine] * part.u[origins[mine]]
    return forecast


def _panel(values, unit, source, names=("value",)):
    """A Panel of the value arrays, each ending at END, one row per `unit` ("h", "day")."""
    step = np.timedelta64(1, "h") if unit == "h" else np.timedelta64(1, "D")
    ids = tuple(f"{source.split(':')[1]}-{index:02d}" for index in range(len(values)))
    members = tuple(Series(np.asarray(v, dtype=np.float64).reshape(len(v), -1), names, source) for v in values)
    times = tuple(END - np.arange(len(v) - 1, -1, -1) * step for v in values)
    return Panel(ids, members, times, source, "time")


# ------------------------------------------------------------------------ the demos

def load_oracle_forecast(data, ids, origins, steps):
    """The load demo's exact forecast mean (bench.forecast_quality.exact_forecasts)."""
    return exact_forecasts(data, origins, steps)[0]


def sine_oracle(data, ids, origins, steps, seed=0):
    """The sine demo without its white noise: the sum of its three sines (phases drawn
    first from the demo's seed, as engine.demos.sine draws them)."""
    phases = np.random.default_rng(seed).uniform(0, 2 * np.pi, 3)
    t = origins + steps
    return (np.sin(2 * np.pi * t / 24 + phases[0]) + 0.5 * np.sin(2 * np.pi * t / 168 + phases[1])
            + 0.3 * np.sin(2 * np.pi * t / 1000 + phases[2]))


# -------------------------------------------------------------- statsmodels datasets

def co2():
    """Weekly atmospheric CO2 at Mauna Loa, 1958-03-29 .. 2001-12-29 (statsmodels'
    co2 dataset); its 59 missing weeks linearly interpolated."""
    from statsmodels.datasets import co2 as dataset

    frame = dataset.load_pandas().data
    return _dated_series(frame["co2"].interpolate().to_numpy(), frame.index.to_numpy(), "statsmodels:co2")


def elnino():
    """Monthly sea surface temperature of the El Nino region, 1950-01 .. 2010-12
    (statsmodels' elnino dataset: one row per year, one column per month)."""
    from statsmodels.datasets import elnino as dataset

    frame = dataset.load_pandas().data
    values = frame.drop(columns="YEAR").to_numpy().ravel()
    months = np.arange("1950-01", "2011-01", dtype="datetime64[M]")
    return _dated_series(values, months, "statsmodels:elnino")


def realgdp():
    """Quarterly US real GDP, 1959Q1 .. 2009Q3 (statsmodels' macrodata, realgdp)."""
    from statsmodels.datasets import macrodata

    frame = macrodata.load_pandas().data
    quarters = np.array([np.datetime64(f"{int(y)}-{3 * int(q) - 2:02d}") for y, q in
                         zip(frame["year"], frame["quarter"])], dtype="datetime64[M]")
    return _dated_series(frame["realgdp"].to_numpy(), quarters, "statsmodels:realgdp")


def _dated_series(values, stamps, source):
    return Series(np.asarray(values, dtype=np.float64)[:, None], ("value",), source,
                  time=np.asarray(stamps).astype("datetime64[us]"), time_name="time", time_zone="UTC")


MEMBERS = (
    Member("load", electricity_load, 24, 24, 24, {"targets": "load", "known": "temperature,promotion"},
           (24, 168), oracle=load_oracle_forecast,
           about="the load demo: 17,520 hourly rows, target load, known temperature and promotion"),
    Member("sine", sine, 24, 24, 24, {}, (24, 168), oracle=sine_oracle,
           about="the sine demo: 20,000 steps without times, sines of periods 24, 168, 1000 plus noise"),
    Member("sensors", sensors, 24, 24, 24, {}, (24, 168),
           about="the sensors demo: 50 hourly series of 300-20,000 rows, scales 0.1-1000"),
    Member("daily", daily_panel, 7, 7, 7, {}, (7,), oracle=daily_oracle,
           about="synthetic: 20 daily series of 300-1,500 days, scales 0.01-1e4, AR(2) plus a weekly pattern"),
    Member("daily40", functools.partial(daily_panel, **ISSUE_PANEL), 7, 7, 7, {}, (7,),
           oracle=functools.partial(daily_oracle, **ISSUE_PANEL),
           about="synthetic: 40 daily series of 300-3,000 days, otherwise as daily (the issue's own panel)"),
    Member("hourly", hourly_panel, 24, 24, 24, {"targets": "value", "known": "driver"}, (24,),
           oracle=hourly_oracle,
           about="synthetic: 10 hourly series of 2,000-5,000 rows, a daily cycle, a known driver input"),
    Member("co2", co2, 8, 52, 8, {}, (52,), trending=True,
           about="statsmodels co2: 2,284 weeks of Mauna Loa CO2 (missing weeks interpolated)"),
    Member("elnino", elnino, 12, 12, 4, {}, (12,),
           about="statsmodels elnino: 732 months of El Nino sea surface temperature"),
    Member("realgdp", realgdp, 4, 4, 1, {}, (4,), trending=True,
           about="statsmodels macrodata realgdp: 203 quarters of US real GDP"),
)
