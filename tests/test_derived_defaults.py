"""Training options left to the data (docs/forecasting.md): the number of streams from the
training rows, recorded in the recipe's "derived" and the first progress line; an option
given always wins."""
import numpy as np
import pytest

from engine.forecasting.prepare import FEWEST_STREAMS, MOST_STREAMS, STREAM_ROWS, derived_streams, \
    describe_inputs, prepare
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
