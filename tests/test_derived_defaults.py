"""Training options left to the data (docs/forecasting.md): the number of streams from the
training rows, k1 from the dominant seasonal lag and differencing for a wandering level,
each recorded in the recipe's "derived" and the first progress line; an option given
always wins."""
import numpy as np
import pytest
from click.testing import CliRunner

import engine
from cli import main
from engine.checkpoint import read_metadata
from engine.forecasting.prepare import FEWEST_STREAMS, K1_AIM, K1_MOST, MOST_STREAMS, STREAM_ROWS, \
    derived_k1, derived_streams, describe_inputs, prepare
from engine.forecasting import roles
from engine.panel import Panel
from engine.series import Series

START = np.datetime64("2024-01-01T00:00", "ns")


def hourly_panel(count, length, seed=0):
    """`count` hourly series of `length` rows: a daily cycle plus noise."""
    rng = np.random.default_rng(seed)
    steps = np.arange(length)
    members = tuple(Series((np.sin(2 * np.pi * steps / 24) + 0.1 * rng.standard_normal(length))[:, None],
                           ("value",), f"s{index}") for index in range(count))
    times = tuple(START + steps * np.timedelta64(1, "h") for _ in range(count))
    return Panel(tuple(f"s{index}" for index in range(count)), members, times, "test", "time")


@pytest.mark.parametrize("rows, min_steps, streams", [
    (11_301, 50, FEWEST_STREAMS),                 # the daily panel of the quality benchmark
    (23_518, 50, 23_518 // STREAM_ROWS),          # the hourly panel: 11
    (181_594, 50, MOST_STREAMS),                  # sensors: capped
    (149, 50, 2),                                 # realgdp: as many as hold a k1 window
    (30, 50, 1),
])
def test_streams_follow_the_training_rows(rows, min_steps, streams):
    assert derived_streams(rows, min_steps) == streams


def test_a_panel_of_many_rows_gets_more_streams_recorded_as_derived():
    panel = hourly_panel(count=12, length=2_000)
    data = prepare(panel, panel=True, horizon=2, val_fraction=0.1, min_steps=20)
    rows = data.metadata["train_steps"]
    assert rows // STREAM_ROWS > FEWEST_STREAMS   # the rule, not the floor, decides here
    assert data.x_train.shape[1] == data.metadata["streams"] == rows // STREAM_ROWS
    assert "streams" in data.metadata["derived"]
    assert f"; {rows // STREAM_ROWS} streams" in describe_inputs(data.metadata)
    given = prepare(panel, panel=True, horizon=2, val_fraction=0.1, min_steps=20, streams=3)
    assert given.x_train.shape[1] == 3 and "streams" not in given.metadata["derived"]
    assert "streams" not in describe_inputs(given.metadata)


def test_a_short_series_gets_as_many_streams_as_hold_min_steps():
    series = hourly_panel(count=1, length=300).series[0]
    data = prepare(series, horizon=1, val_fraction=0.0, min_steps=100)
    assert data.x_train.shape[1] == 2 and data.metadata["derived"][-1] == "streams"


@pytest.mark.parametrize("lags, rows, k1", [
    ([24, 168], 10 ** 5, 48),           # hourly: two days, the whole periods nearest K1_AIM
    ([7], 10 ** 5, 49),                 # daily: seven weeks
    ([12], 10 ** 5, 48),                # monthly: four years
    ([4], 10 ** 5, 52),                 # quarterly: thirteen (12.5 rounds up)
    ([52], 10 ** 5, 52),                # weekly: a year
    ([96, 672], 10 ** 5, 96),           # 15-minute data: a day, at least one period
    ([300], 10 ** 5, K1_MOST),          # capped
    ([], 10 ** 5, K1_AIM),              # no lags (no times, or --lags none)
    ([24, 168], 20, 20),                # never more than the training rows
])
def test_k1_is_whole_periods_of_the_shortest_lag_near_k1_aim(lags, rows, k1):
    assert derived_k1(lags, rows) == k1


def test_k1_left_unset_is_derived_recorded_and_printed(tmp_path):
    lines = []
    panel = hourly_panel(count=3, length=1_000)
    _, trainer, data = engine.train_series(panel, tmp_path / "m.npz", hidden=4, epochs=1, horizon=2,
                                           val_fraction=0.1, on_start=lambda info: lines.append(info["inputs"]))
    assert data.metadata["lags"] == [24]
    assert trainer.k1 == data.metadata["k1"] == 48 and "k1" in data.metadata["derived"]
    assert lines[0].endswith("; k1 48")
    stored = read_metadata(tmp_path / "m.npz")["user"]["data"]
    assert stored["k1"] == 48 and "k1" in stored["derived"]
    _, trainer, data = engine.train_series(panel, None, hidden=4, epochs=1, horizon=2, k1=30, val_fraction=0.1)
    assert trainer.k1 == 30 and "k1" not in data.metadata and "k1" not in data.metadata["derived"]
    _, trainer, data = engine.train_series(panel, None, hidden=4, epochs=1, horizon=2, k2=30, val_fraction=0.1)
    assert trainer.k1 == data.metadata["k1"] == trainer.k2 == 30   # never beyond a --k2 given
    # nor beyond the rows of a stream when --streams is given
    _, trainer, data = engine.train_series(panel.series[0], None, hidden=4, epochs=1, horizon=2, streams=40,
                                           val_fraction=0.1)
    assert trainer.k1 == data.metadata["k1"] == data.x_train.shape[0] < 48


def test_data_prepared_without_k1_gets_it_when_training():
    """A sweep prepares once for trials of any k1: one left unset is derived from the prepared data."""
    prepared = prepare(hourly_panel(count=2, length=100), panel=True, horizon=2, val_fraction=0.1, lags="none")
    assert "k1" not in prepared.metadata
    _, trainer, data = engine.train_series(prepared, None, hidden=4, epochs=1)
    steps, streams = prepared.x_train.shape[:2]
    assert steps < K1_AIM   # bounded by the steps of a stream
    assert trainer.k1 == data.metadata["k1"] == steps and data.metadata["derived"][-1] == "k1"


def test_bptt_train_names_the_derived_k1_and_streams(tmp_path):
    path = tmp_path / "hourly.csv"
    series = hourly_panel(count=1, length=600).series[0]
    stamps = (START + np.arange(600) * np.timedelta64(1, "h")).astype("datetime64[s]").astype(str)
    path.write_text("time,value\n" + "".join(f"{t},{v}\n" for t, v in zip(stamps, series.values[:, 0])))
    result = CliRunner().invoke(main, ["train", str(path), "--hidden", "4", "--epochs", "1", "-o",
                                       str(tmp_path / "m.npz")])
    assert result.exit_code == 0, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith("chosen from the data") and "; 8 streams; k1 48" in first, first
    given = CliRunner().invoke(main, ["train", str(path), "--hidden", "4", "--epochs", "1", "--k1", "20",
                                      "--streams", "4", "-o", str(tmp_path / "given.npz")])
    assert given.exit_code == 0 and "streams" not in given.stderr.splitlines()[0]
    assert "k1" not in given.stderr.splitlines()[0]


def daily_cycle_with(noise_under, length, seed=0):
    """An hourly series: a daily cycle plus `noise_under(rng, length)` (the level's path)."""
    rng = np.random.default_rng(seed)
    steps = np.arange(length)
    value = np.sin(2 * np.pi * steps / 24) + noise_under(rng, length) + 0.2 * rng.standard_normal(length)
    return Series(value[:, None], ("value",), "test")


def ar1(coefficient):
    def path(rng, length):
        u = np.zeros(length + 200)
        shocks = rng.standard_normal(length + 200)
        for t in range(1, length + 200):
            u[t] = coefficient * u[t - 1] + shocks[t]
        return u[200:]
    return path


def random_walk(rng, length):
    return np.cumsum(rng.normal(0, 0.05, length))


def test_a_wandering_level_is_differenced_a_stationary_one_is_not():
    walk = [daily_cycle_with(random_walk, 3_000, seed) for seed in range(5)]
    assert all(roles.wandering([one], ["value"], [24, 168], 0.1) for one in walk)
    stationary = [daily_cycle_with(ar1(0.8), length, seed) for seed, length in enumerate((300, 1_000, 3_000))]
    assert not any(roles.wandering([one], ["value"], [24, 168], 0.1) for one in stationary)
    assert not roles.wandering(walk, ["value"], [], 0.1)   # no season to compare with
    # most training rows decide: one long wandering series outvotes two short stationary ones
    assert roles.wandering([walk[0], *stationary[:2]], ["value"], [24], 0.1)
    # a series shorter than eight seasons does not vote
    assert not roles.wandering([daily_cycle_with(random_walk, 150)], ["value"], [24], 0.0)


def test_prepare_differences_a_wandering_panel_and_says_so():
    panel = Panel(("a", "b"), tuple(daily_cycle_with(random_walk, 3_000, seed) for seed in (1, 2)),
                  tuple(START + np.arange(3_000) * np.timedelta64(1, "h") for _ in range(2)), "test", "time")
    data = prepare(panel, panel=True, horizon=2, val_fraction=0.1)
    assert data.metadata["difference"] and "difference" in data.metadata["derived"]
    assert "the targets trend or wander: modelled as changes" in describe_inputs(data.metadata)
    assert not prepare(panel, panel=True, horizon=2, val_fraction=0.1, difference=False).metadata["difference"]
