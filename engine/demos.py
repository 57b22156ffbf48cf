"""Bundled demo series (`bptt train --demo NAME`), generated deterministically from a seed.

Each generator of DEMOS returns a Series: values (length, 1) named "value", except "load"
(hourly electricity load with a time column, its temperature and promotion inputs); the
panel demos of PANEL_DEMOS return an engine.panel.Panel of many such series.
"""
from typing import NamedTuple

import numpy as np

from engine.series import DataError, Series


def sine(length=20_000, seed=0):
    """Noisy multi-seasonal signal, as hourly data with daily and weekly cycles: sines of
    periods 24, 168 and 1000 steps (amplitudes 1, 0.5, 0.3, random phases) plus Gaussian
    noise of standard deviation 0.2."""
    rng = np.random.default_rng(seed)
    steps = np.arange(length)
    phases = rng.uniform(0, 2 * np.pi, 3)
    value = (np.sin(2 * np.pi * steps / 24 + phases[0])
             + 0.5 * np.sin(2 * np.pi * steps / 168 + phases[1])
             + 0.3 * np.sin(2 * np.pi * steps / 1000 + phases[2])
             + 0.2 * rng.standard_normal(length))
    return _series(value, "sine")


def mackey_glass(length=10_000, seed=0, tau=17.0, beta=0.2, gamma=0.1, n=10, dt=0.1, warmup=500):
    """The Mackey-Glass delay differential equation (Mackey & Glass, "Oscillation and chaos
    in physiological control systems", Science 197(4300):287-289, 1977):
        dx/dt = beta x(t - tau) / (1 + x(t - tau)^n) - gamma x(t),
    chaotic for tau = 17. Integrated by RK4 with step dt (the delayed value at half steps
    is the mean of its two neighbours on the grid) from a random history in [0.5, 1.5],
    the first `warmup` time units dropped, then sampled once per time unit."""
    per_unit = round(1 / dt)
    lag = round(tau / dt)                   # the delay in integration steps
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 1.5, lag + 1).tolist()   # x[i] is x((i - lag) dt); history up to t = 0

    def rate(now, delayed):
        return beta * delayed / (1 + delayed ** n) - gamma * now

    for i in range(lag, lag + (warmup + length) * per_unit):
        now, delayed, delayed_next = x[i], x[i - lag], x[i - lag + 1]
        delayed_half = 0.5 * (delayed + delayed_next)
        k1 = rate(now, delayed)
        k2 = rate(now + 0.5 * dt * k1, delayed_half)
        k3 = rate(now + 0.5 * dt * k2, delayed_half)
        k4 = rate(now + dt * k3, delayed_next)
        x.append(now + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4))
    start = lag + (warmup + 1) * per_unit   # time warmup + 1; then `length` samples
    return _series(np.array(x[start::per_unit]), "mackey-glass")


def trend(length=5_000, seed=0):
    """A sine of period 50 riding a linear trend from 0 to 10, plus Gaussian noise (sd 0.1):
    its later part leaves the range of its earlier part, the case for --difference."""
    rng = np.random.default_rng(seed)
    steps = np.arange(length)
    value = 10 * steps / length + np.sin(2 * np.pi * steps / 50) + 0.1 * rng.standard_normal(length)
    return _series(value, "trend")


def sensors(count=50, seed=0, shortest=300, longest=20_000):
    """A panel of `count` hourly sensor series ("sensor-00", ...) of different lengths
    (log-uniform from `shortest` to `longest` steps, both included), all ending at
    2026-01-01 00:00 (sensors installed at different times), with their own level and
    scale (log-uniform over 0.1 .. 1000), a daily cycle, for some a weekly one, a slow
    random walk and Gaussian noise. Returns an engine.panel.Panel with times."""
    from engine.panel import Panel   # engine.panel imports engine.data, which needs no demos

    rng = np.random.default_rng(seed)
    lengths = np.geomspace(shortest, longest, count).round().astype(int)
    rng.shuffle(lengths)
    end = np.datetime64("2026-01-01T00:00", "ns")
    ids, members, times = [], [], []
    for index, length in enumerate(lengths):
        steps = np.arange(length)
        scale = 10 ** rng.uniform(-1, 3)
        weekly = rng.uniform(0, 0.8) if rng.random() < 0.5 else 0.0
        shape = (np.sin(2 * np.pi * steps / 24 + rng.uniform(0, 2 * np.pi))
                 + weekly * np.sin(2 * np.pi * steps / 168 + rng.uniform(0, 2 * np.pi))
                 + np.cumsum(rng.normal(0, 0.02, length))
                 + rng.uniform(0.1, 0.4) * rng.standard_normal(length))
        value = scale * (rng.uniform(-2, 5) + shape)
        ids.append(f"sensor-{index:02d}")
        members.append(_series(value, f"sensors[{ids[-1]}]"))
        times.append(end - (length - 1 - steps) * np.timedelta64(1, "h"))
    return Panel(tuple(ids), tuple(members), tuple(times), "demo:sensors", "time")


LOAD_START = np.datetime64("2024-01-01T00:00", "us")   # a Monday
LOAD_AR, LOAD_INNOVATION = 0.9, 15.0   # the load noise: AR(1) coefficient, innovation sd
_LOAD_WEEKDAY_LEVEL = np.array([-20.0, 0, 0, 0, -10, -120, -150])   # Monday .. Sunday


class _LoadParts(NamedTuple):
    time: np.ndarray          # (T,) datetime64[us], UTC, hourly
    temperature: np.ndarray   # (T,)
    promotion: np.ndarray     # (T,) 0.0 / 1.0
    mean: np.ndarray          # (T,) the load without its noise
    noise: np.ndarray         # (T,) the AR(1) noise


def _load_parts(length, seed):
    rng = np.random.default_rng(seed)
    hours = np.arange(length)
    hour, day = hours % 24, hours // 24
    weekend = (day % 7 >= 5).astype(np.float64)   # day 0 is Monday 2024-01-01
    temperature = (11 - 9 * np.cos(2 * np.pi * (hours / 24 - 15) / 365.25)
                   + 4 * np.cos(2 * np.pi * (hour - 15) / 24) + 1.5 * rng.standard_normal(length))
    days = day[-1] + 1
    promoted_days = rng.choice(days, size=max(1, days // 12), replace=False)   # about one day in 12
    promotion = (np.isin(day, promoted_days) & (hour >= 10) & (hour < 20)).astype(np.float64)
    daily = -150 * np.cos(2 * np.pi * hour / 24) + 60 * np.exp(-0.5 * ((hour - 19) / 2) ** 2)
    mean = (1000 + (1 - 0.3 * weekend) * daily + _LOAD_WEEKDAY_LEVEL[day % 7]
            + 8 * np.maximum(15 - temperature, 0) + 15 * np.maximum(temperature - 22, 0)
            + 120 * promotion)
    innovations = LOAD_INNOVATION * rng.standard_normal(length)
    innovations[0] /= np.sqrt(1 - LOAD_AR ** 2)   # the noise starts stationary
    noise = np.empty(length)
    noise[0] = innovations[0]
    for t in range(1, length):
        noise[t] = LOAD_AR * noise[t - 1] + innovations[t]
    return _LoadParts(LOAD_START + hours * np.timedelta64(1, "h"), temperature, promotion, mean, noise)


def electricity_load(length=17_520, seed=0):
    """Hourly electricity-load-like data from 2024-01-01 00:00 UTC (a Monday; 730 days by
    default) with a "time" column and the columns "load" (the target), "temperature" and
    "promotion" (known inputs). With t the row (hours from the start), h = t mod 24 the hour
    of day, d = t // 24 the day, d mod 7 the weekday (0 = Monday) and w = 1 on Saturdays
    and Sundays, else 0 (noise terms independent):
        temperature = 11 - 9 cos(2 pi (t/24 - 15) / 365.25) + 4 cos(2 pi (h - 15) / 24) + N(0, 1.5^2)
        promotion   = 1 in the hours 10:00 .. 19:00 of one day in 12 (random, at least one), else 0
        load = 1000 + (1 - 0.3 w) (-150 cos(2 pi h / 24) + 60 exp(-(h - 19)^2 / 8))
               + level[d mod 7] (-20, 0, 0, 0, -10, -120, -150 from Monday)
               + 8 max(15 - temperature, 0) + 15 max(temperature - 22, 0)   (heating, cooling)
               + 120 promotion + e_t,   e_t = 0.9 e_(t-1) + N(0, 15^2) (stationary from t = 0).
    load_oracle gives the exact one-step conditional mean."""
    parts = _load_parts(length, seed)
    values = np.column_stack([parts.mean + parts.noise, parts.temperature, parts.promotion])
    return Series(values, ("load", "temperature", "promotion"), "demo:load", time=parts.time,
                  time_name="time", time_zone="UTC")


class LoadOracle(NamedTuple):
    """The exact one-step forecast distribution of the load demo: its load at row t is
    Normal(mean[t], scale[t]**2) given the load before t and the known inputs up to t."""
    mean: np.ndarray    # (T,)
    scale: np.ndarray   # (T,)


def load_oracle(length=17_520, seed=0):
    """The LoadOracle of electricity_load(length, seed): mean[t] = E[load[t] | load[:t],
    temperature[:t + 1], promotion[:t + 1]] = m_t + 0.9 e_(t-1) (m: the load without noise,
    e: its AR(1) noise), the forecast an ideal model makes at row t - 1 for row t; scale[t]
    = 15 (the innovation sd), and at t = 0 mean[0] = m_0, scale[0] the noise's stationary
    sd 15 / sqrt(1 - 0.9^2)."""
    parts = _load_parts(length, seed)
    previous = np.concatenate([[0.0], parts.noise[:-1]])
    scale = np.full(length, LOAD_INNOVATION)
    scale[0] = LOAD_INNOVATION / np.sqrt(1 - LOAD_AR ** 2)
    return LoadOracle(parts.mean + LOAD_AR * previous, scale)


DEMOS = {"sine": sine, "mackey-glass": mackey_glass, "trend": trend, "load": electricity_load}
PANEL_DEMOS = {"sensors": sensors}


def load_demo(name, seed=0):
    """The demo `name` generated with `seed`: a Series for one of DEMOS, a Panel for one of
    PANEL_DEMOS."""
    demos = {**DEMOS, **PANEL_DEMOS}
    if name not in demos:
        raise DataError(f"unknown demo {name!r}; choose one of {', '.join(demos)}")
    return demos[name](seed=seed)


def _series(value, name):
    return Series(np.ascontiguousarray(value, dtype=np.float64)[:, None], ("value",), f"demo:{name}")
