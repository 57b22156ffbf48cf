"""Bundled demo series (`bptt train --demo NAME`), generated deterministically from a seed.

Each generator returns a Series with values (length, 1) named "value".
"""
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


DEMOS = {"sine": sine, "mackey-glass": mackey_glass, "trend": trend}


def load_demo(name, seed=0):
    """The demo series `name` (one of DEMOS) generated with `seed`, as a Series (T, 1)."""
    if name not in DEMOS:
        raise DataError(f"unknown demo {name!r}; choose one of {', '.join(DEMOS)}")
    return DEMOS[name](seed=seed)


def _series(value, name):
    return Series(np.ascontiguousarray(value, dtype=np.float64)[:, None], ("value",), f"demo:{name}")
