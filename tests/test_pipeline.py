"""The library behind the `bptt` command: engine.train_series, forecast_series,
evaluate_series, load_for_inference (engine/pipeline.py), the progress display
(engine/progress.py), the optional plots (engine/plots.py), and a streaming example with
Trainer.partial_fit fed from a generator (documentation that runs)."""
import io
import math
import os
import re
import sys

import numpy as np
import pytest

import engine
from engine.data import Normalizer, persistence_baseline, prepare_forecast_data, to_original_units
from engine.demos import load_demo
from engine.progress import Progress

SMALL = dict(cell="lstm", hidden=8, seed=0, k1=20, lr=1e-2, streams=2, val_fraction=0.1)


def wave(steps=1200, level=0.0, slope=0.0, seed=0):
    """A noisy daily cycle (period 24) on a level and a trend, (steps,)."""
    t = np.arange(steps)
    noise = 0.05 * np.random.default_rng(seed).standard_normal(steps)
    return level + slope * t + np.sin(2 * np.pi * t / 24) + noise


def train(tmp_path, source, name="m.npz", epochs=3, **options):
    return engine.train_series(source, tmp_path / name, **dict(SMALL, epochs=epochs, **options))


def forecast(checkpoint, data, steps):
    """forecast_series's point forecasts as an array (steps, targets): the columns named
    by the targets (not their interval bounds)."""
    table = engine.forecast_series(checkpoint, data, steps)
    targets = engine.load_for_inference(checkpoint)[1]["data"]["targets"] if not isinstance(checkpoint, tuple) \
        else checkpoint[1]["data"]["targets"]
    return np.column_stack([table.column(name).to_numpy() for name in targets])


# ---------------------------------------------------------------- train_series

def test_train_series_checkpoints_every_epoch_with_its_data_recipe(tmp_path):
    saved, started = [], []

    def on_epoch(record):  # the checkpoint is on disk when on_epoch runs
        saved.append(engine.read_metadata(tmp_path / "m.npz")["trainer"]["epoch"])

    updates = []
    model, trainer, data = train(tmp_path, wave(), on_start=started.append, on_update=updates.append,
                                 on_epoch=on_epoch)
    assert saved == [1, 2, 3]
    # 1199 framed steps, 120 held out, 2 streams of 539 steps, k1=20: 27 updates per epoch
    assert started == [{"epochs": 3, "done": 0, "updates_per_epoch": 27, "steps_per_update": 40,
                        "inputs": None}]   # no time column: no lags or calendar chosen from it
    assert len(updates) == 3 * 27 == trainer.step
    assert data.x_train.shape == (539, 2, 1) and data.x_val.shape == (120, 1, 1)
    loaded, metadata = engine.load_for_inference(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.params, model.params)
    assert metadata["data"] == data.metadata
    assert metadata["data"]["input_norm"] == Normalizer.fit(wave()[:1079, None]).to_dict()


def test_train_series_resume_matches_one_run(tmp_path):
    one, _, _ = train(tmp_path, wave(), "one.npz", epochs=3)
    train(tmp_path, wave(), "two.npz", epochs=1)
    # a resumed run takes the checkpoint's own settings; conflicting ones are refused
    with pytest.raises(engine.pipeline.ResumeConflict, match="hidden_size=99 conflicts with the checkpoint's hidden_size=8"):
        engine.train_series(wave(), tmp_path / "two.npz", hidden=99, epochs=3, resume=True)
    resumed, trainer, _ = engine.train_series(wave(), tmp_path / "two.npz", hidden=8, k1=20, epochs=3, resume=True)
    assert (trainer.epoch, trainer.k1, resumed.hidden_size) == (3, 20, 8)
    np.testing.assert_array_equal(resumed.params, one.params)


@pytest.mark.parametrize("options, message", [
    (dict(k1=0), "k1 (--k1): 0 is not in the range x>=1"),
    (dict(k1=2.5), "k1 (--k1): expected an integer; got 2.5"),
    (dict(k1="ten"), "k1 (--k1): 'ten' is not a valid integer"),
    (dict(epochs=0), "epochs (--epochs): 0 is not in the range x>=1"),
    (dict(patience=0), "patience (--patience): 0 is not in the range x>=1"),
    (dict(cell="gru", init="he"), "init (--init): expected one of default, xavier, orthogonal, identity; got 'he'"),
    (dict(cell="lstm", nonlinearity="relu"), "--nonlinearity applies to --cell rnn only"),
    (dict(full_bptt=True, k2=10), "--k2 truncates backpropagation; it cannot be combined with --full-bptt"),
    (dict(streams=100, k1=20), "fewer than the 20 needed (k1)"),
    (dict(k1=10, k2=5), "k2 must be >= k1"),
    (dict(hiden=8), "unknown training option 'hiden'; the options are key, time_column"),
])
def test_train_series_validates_before_writing_anything(tmp_path, options, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        engine.train_series(wave(), tmp_path / "m.npz", **options)
    assert list(tmp_path.iterdir()) == []


def test_train_series_output_directory_is_checked_before_training(tmp_path):
    epochs = []
    with pytest.raises(ValueError, match="cannot write .* directory .* does not exist"):
        engine.train_series(wave(), tmp_path / "missing" / "m.npz", **SMALL, on_epoch=epochs.append)
    assert epochs == []


def test_train_series_has_the_command_line_defaults(tmp_path):
    _, trainer, data = engine.train_series(wave(), tmp_path / "m.npz", hidden=4, epochs=1, k1=20)
    assert (data.x_train.shape[1], data.metadata["val_fraction"], trainer.optimizer.lr) == (8, 0.1, 3e-3)
    assert (trainer.k1, trainer.clip_norm, trainer.model.cell) == (20, 1.0, "lstm")


def test_train_series_never_replaces_a_checkpoint_unless_forced(tmp_path):
    train(tmp_path, wave(), epochs=1)
    before = (tmp_path / "m.npz").read_bytes()
    with pytest.raises(ValueError, match=r"m\.npz exists; pass --force to replace it or --resume to continue it"):
        train(tmp_path, wave(), epochs=1, seed=1)
    assert (tmp_path / "m.npz").read_bytes() == before
    model, _, _ = train(tmp_path, wave(), epochs=1, seed=1, force=True)
    loaded, _ = engine.load_for_inference(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.params, model.params)
    assert (tmp_path / "m.npz").read_bytes() != before


def test_train_series_old_form_warns_and_trains_as_before(tmp_path):
    """train_series(source, output, model_options, trainer_options, data_options, epochs=)
    (deprecated): the same run as the keyword form with the same settings."""
    with pytest.warns(DeprecationWarning, match=r"train_series\(data, output, \*\*options\)"):
        old, old_trainer, old_data = engine.train_series(
            wave(), tmp_path / "old.npz", dict(cell="lstm", hidden_size=8, seed=0), dict(k1=20, lr=1e-2),
            dict(streams=2, val_fraction=0.1), epochs=2)
    new, new_trainer, new_data = train(tmp_path, wave(), "new.npz", epochs=2)
    np.testing.assert_array_equal(old.params, new.params)
    np.testing.assert_array_equal(old_trainer.history.column("loss"), new_trainer.history.column("loss"))
    assert old_data.metadata == new_data.metadata


# ---------------------------------------------------------------- forecast_series, evaluate_series

@pytest.mark.parametrize("difference", [False, True])
def test_forecast_feeds_its_forecasts_back(tmp_path, difference):
    """Forecasting N steps = forecasting one step, appending it to the series, repeating."""
    series = wave(slope=0.002 if difference else 0.0)
    train(tmp_path, series, epochs=2, difference=difference)
    forecasts = forecast(tmp_path / "m.npz", series, 5)
    assert forecasts.shape == (5, 1)
    grown = series.copy()
    for step in range(5):
        one = forecast(tmp_path / "m.npz", grown, 1)
        np.testing.assert_allclose(one, forecasts[step:step + 1], rtol=1e-6)
        grown = np.append(grown, forecasts[step])


def test_forecast_within_the_horizon_reads_the_last_outputs(tmp_path):
    """A direct model of horizon 4: the 4 output blocks at the last row are the forecasts."""
    series = wave()
    train(tmp_path, series, epochs=1, horizon=4)
    model, metadata = engine.load_for_inference(tmp_path / "m.npz")
    recipe = metadata["data"]
    norm_x, norm_y = (engine.data.Normalizer.from_dict(recipe[f"{part}_norm"]) for part in ("input", "target"))
    x = norm_x.transform(series[:, None])          # the inputs: the series itself
    y_hat, _ = model.forward(x[:, None, :])
    expected = norm_y.inverse_transform(y_hat[-1, 0])[:, None]   # steps 1..4 from the last row
    np.testing.assert_allclose(forecast(tmp_path / "m.npz", series, 4), expected, rtol=1e-12)
    np.testing.assert_allclose(forecast((model, metadata), series, 2), expected[:2], rtol=1e-12)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        forecast(tmp_path / "m.npz", series, 0)


def test_forecast_series_returns_a_labelled_table(tmp_path):
    """Columns "step" (no time column) or "time" (the next stamps), then each target by name,
    float64 in original units."""
    import pyarrow as pa

    values = np.stack([wave(level=10), wave(level=20, seed=1)], axis=1)
    stamps = np.datetime64("2024-01-01T00:00:00") + np.arange(len(values)) * np.timedelta64(1, "h")
    frame = pa.table({"time": stamps, "a": values[:, 0], "b": values[:, 1]})
    train(tmp_path, frame, epochs=1, targets="a,b", calendar="none")   # forecasts without times below
    table = engine.forecast_series(tmp_path / "m.npz", frame, steps=3)
    bounds = [f"{name}_{side}{level}" for name in "ab" for level in (80, 95) for side in ("lo", "hi")]
    assert table.column_names == ["time", "a", "a_lo80", "a_hi80", "a_lo95", "a_hi95",
                                  "b", "b_lo80", "b_hi80", "b_lo95", "b_hi95"]
    assert sorted(bounds) == sorted(table.column_names[2:6] + table.column_names[7:])
    expected = stamps[-1] + np.arange(1, 4) * np.timedelta64(1, "h")
    np.testing.assert_array_equal(table.column("time").to_numpy().astype("datetime64[s]"), expected)
    assert table.schema.field("a").type == pa.float64()
    for none in ("none", False):  # the times not read: steps instead
        assert engine.forecast_series(tmp_path / "m.npz", frame, 3, time_column=none,
                                      intervals="none").column_names == ["step", "a", "b"]
    train(tmp_path, values, "plain.npz", epochs=1)
    plain = engine.forecast_series(tmp_path / "plain.npz", values, steps=2, intervals="none")
    assert plain.column_names == ["step", "0", "1"]
    assert plain.column("step").to_pylist() == [1, 2] and plain.schema.field("step").type == pa.int64()


def test_forecast_and_evaluate_old_forms_warn_and_return_as_before(tmp_path):
    """forecast_series(model, metadata, source, steps) and evaluate_series(model, metadata,
    source) (deprecated): the array and dict they returned, equal to the new forms'."""
    series = wave()
    train(tmp_path, series, epochs=1)
    model, metadata = engine.load_for_inference(tmp_path / "m.npz")
    with pytest.warns(DeprecationWarning, match=r"forecast_series\(checkpoint_path or \(model, metadata\)"):
        forecasts = engine.forecast_series(model, metadata, series, 3)
    assert isinstance(forecasts, np.ndarray) and forecasts.shape == (3, 1)
    np.testing.assert_array_equal(forecasts, forecast(tmp_path / "m.npz", series, 3))
    with pytest.warns(DeprecationWarning, match=r"evaluate_series\(checkpoint_path or \(model, metadata\)"):
        metrics = engine.evaluate_series(model, metadata, series, start=600)
    assert metrics == engine.evaluate_series(tmp_path / "m.npz", series, start=600)


@pytest.mark.parametrize("metadata", [{}, {"data": {"horizon": 1}}, None])
def test_old_forms_with_bad_metadata_fail_cleanly(tmp_path, metadata):
    """Metadata without a valid data recipe is a DataError / CheckpointError, not a KeyError."""
    series = wave()
    model = engine.Model(hidden_size=4)
    with pytest.warns(DeprecationWarning), pytest.raises((engine.data.DataError, engine.CheckpointError)):
        engine.forecast_series(model, metadata, series, 3)
    with pytest.warns(DeprecationWarning), pytest.raises((engine.data.DataError, engine.CheckpointError)):
        engine.evaluate_series(model, metadata, series)
    with pytest.raises((engine.data.DataError, engine.CheckpointError)):
        engine.forecast_series((model, metadata), series, 3)


def test_forecast_with_other_inputs_cannot_run_past_the_horizon(tmp_path):
    table = np.stack([wave(), np.cos(2 * np.pi * np.arange(1200) / 24)], axis=1)
    train(tmp_path, table, epochs=1, targets="0", inputs="1")
    assert forecast(tmp_path / "m.npz", table, 1).shape == (1, 1)
    with pytest.raises(ValueError, match=r"more than the model's horizon 1.*past input\(s\) 1 would be unknown"):
        forecast(tmp_path / "m.npz", table, 2)


def test_evaluate_series_against_a_direct_computation(tmp_path):
    series = wave(level=500)
    series[[100, 101, 700]] = np.nan     # missing targets: not scored, and the baseline holds the last value
    train(tmp_path, series, epochs=3, fill="linear")
    model, metadata = engine.load_for_inference(tmp_path / "m.npz")
    metrics = engine.evaluate_series(tmp_path / "m.npz", series)
    data = prepare_forecast_data(series, metadata["data"])
    y_hat, _ = model.forward(data.x)
    predictions = to_original_units(y_hat[:-1, 0], data.base[:-1], metadata["data"])[:, 0]
    targets = series[1:]
    baseline = persistence_baseline(series[:, None])[:, 0]
    scored = ~np.isnan(targets)
    errors, naive = predictions[scored] - targets[scored], baseline[scored] - targets[scored]
    expected = {
        "mse": np.mean(errors ** 2), "mae": np.mean(np.abs(errors)), "rmse": math.sqrt(np.mean(errors ** 2)),
        "baseline_mse": np.mean(naive ** 2), "baseline_mae": np.mean(np.abs(naive)),
        "baseline_rmse": math.sqrt(np.mean(naive ** 2)), "steps": 1199 - 3}
    # float32 outputs: the same computation up to their rounding
    assert {name: metrics[name] for name in expected} == pytest.approx(expected, rel=1e-7)
    assert baseline[101] == series[99]   # persistence carries the last observed value over gaps
    assert metrics["mse"] < metrics["baseline_mse"]


def test_load_for_inference_needs_a_data_recipe(tmp_path):
    engine.save(tmp_path / "bare.npz", engine.Model(hidden_size=4))
    with pytest.raises(ValueError, match="checkpoint has no data recipe"):
        engine.load_for_inference(tmp_path / "bare.npz")
    with pytest.raises(engine.CheckpointError, match="no such checkpoint file"):
        engine.load_for_inference(tmp_path / "absent.npz")


def test_library_walkthrough_on_a_demo(tmp_path):
    """The command line's steps as functions: train on a demo, reload, forecast, evaluate."""
    series = load_demo("mackey-glass")
    engine.train_series(series, tmp_path / "mg.npz", cell="gru", hidden=8, k1=25, lr=1e-2, streams=8, epochs=2)
    forecasts = forecast(tmp_path / "mg.npz", series, 10)
    assert forecasts.shape == (10, 1)
    assert np.all((forecasts > 0.2) & (forecasts < 1.5))     # the attractor's range, original units
    metrics = engine.evaluate_series(tmp_path / "mg.npz", series)
    assert metrics["mse"] < 0.5 * metrics["baseline_mse"], metrics


# ---------------------------------------------------------------- progress

class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_pipe_writes_one_line_per_epoch(tmp_path):
    stream = io.StringIO()
    progress = Progress(stream)
    train(tmp_path, wave(), epochs=2, on_start=progress.on_start, on_update=progress.on_update,
          on_epoch=progress.on_epoch)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in stream.getvalue()
    for number, line in enumerate(lines, 1):
        assert re.fullmatch(rf"epoch {number}/2  loss \S+  val_loss \S+  \d+\.\d\ds", line), line


def test_progress_on_a_terminal_redraws_a_bar_with_loss_and_speed(tmp_path):
    stream = Terminal()
    progress = Progress(stream, rate=1e9)          # draw at every update
    _, trainer, _ = train(tmp_path, wave(), epochs=2, on_start=progress.on_start,
                          on_update=progress.on_update, on_epoch=progress.on_epoch)
    text = stream.getvalue()
    bars = re.findall(r"\r\x1b\[Kepoch (\d)/2 \[(#*) *\] loss (\S+)  ([\d,]+) steps/s", text)
    assert len(bars) == trainer.step == 2 * 27
    assert [len(bar) for epoch, bar, _, _ in bars if epoch == "1"] == [int(20 * n / 27) for n in range(1, 28)]
    losses = [float(loss) for *_, loss, _ in bars]
    np.testing.assert_allclose(losses, trainer.history.column("loss"), rtol=1e-4)
    assert text.count("\n") == 2                    # one finished line per epoch, the bar cleared first
    assert re.search(r"\r\x1b\[Kepoch 1/2  loss \S+  val_loss \S+  \S+s\n", text)


def test_progress_draws_at_most_rate_times_a_second(tmp_path):
    stream = Terminal()
    progress = Progress(stream, rate=1e-3)          # once per 1000 s: never within this run
    train(tmp_path, wave(), epochs=1, on_start=progress.on_start, on_update=progress.on_update,
          on_epoch=progress.on_epoch)
    assert "steps/s" not in stream.getvalue() and stream.getvalue().count("epoch 1/1") == 1


# ---------------------------------------------------------------- plots

def test_plots_without_matplotlib_raise_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(engine.PlotUnavailable, match=r"pip install 'bptt\[plot\]'"):
        engine.require_matplotlib()
    with pytest.raises(engine.PlotUnavailable):
        engine.plot_training(engine.History(), tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


def test_plots_write_png(tmp_path):
    pytest.importorskip("matplotlib")
    _, trainer, _ = train(tmp_path, wave(), epochs=2)
    engine.plot_training(trainer.history, tmp_path / "train.png")
    engine.plot_forecast(np.stack([wave(), wave(seed=1)], axis=1), np.zeros((12, 2)), ["a", "b"],
                         tmp_path / "forecast.png")
    for name in ("train.png", "forecast.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert engine.require_matplotlib(tmp_path / "curves.svg") is engine.require_matplotlib()
    with pytest.raises(ValueError, match=r"cannot save a plot as \.csv; use \.png"):
        engine.require_matplotlib(tmp_path / "curves.csv")


@pytest.mark.filterwarnings("error")   # matplotlib's warnings stay inside the plot functions
def test_plots_of_zero_losses_and_values_matplotlib_cannot_place(tmp_path):
    pytest.importorskip("matplotlib")
    history = engine.History()
    for step in range(1, 4):
        history.append_update(dict(step=step, loss=0.0, grad_norm=0.0, clipped=False, lr=0.1))
    history.epochs.append({"epoch": 1, "loss": 0.0, "val_loss": 0.0})
    engine.plot_training(history, tmp_path / "zero.png")   # no log axis for values it cannot show
    assert (tmp_path / "zero.png").read_bytes()[:4] == b"\x89PNG"
    largest = np.finfo(np.float64).max
    with pytest.raises(ValueError, match="cannot draw the plot .*edge.png: matplotlib failed"):
        engine.plot_forecast(np.full((10, 1), largest), np.full((3, 1), -largest), ["x"], tmp_path / "edge.png")
    assert sorted(os.listdir(tmp_path)) == ["zero.png"]


# ---------------------------------------------------------------- streaming (README example)

def test_streaming_example_partial_fit_from_a_generator():
    """Train while the data arrives: Trainer.partial_fit on each piece from a generator.
    Each of 4 sensors is one stream (B = 4); the recurrent state of every stream is carried
    from piece to piece, so truncated BPTT runs across the pieces as over one long series."""
    import numpy as np

    import engine
    from engine.data import Normalizer

    def sensor_feed(pieces=60, length=100, sensors=4, seed=0):
        """Yields the next `length` readings (length, sensors) of noisy daily cycles."""
        rng = np.random.default_rng(seed)
        phases, levels = rng.uniform(0, 2 * np.pi, sensors), rng.uniform(10, 20, sensors)
        for piece in range(pieces):
            t = np.arange(piece * length, (piece + 1) * length)[:, None]
            yield levels + 3 * np.sin(2 * np.pi * t / 24 + phases) + 0.1 * rng.standard_normal((length, sensors))

    feed = sensor_feed()
    first = next(feed)
    scale = Normalizer.fit(first)                       # z-scores per sensor, fixed from the first piece
    model = engine.Model(cell="gru", input_size=1, hidden_size=16, output_size=1, seed=0)
    trainer = engine.Trainer(model, optimizer="adam", lr=1e-2, k1=25)
    last = scale.transform(first)[-1:]                  # (1, B): the reading before the next piece
    losses = []
    for readings in feed:
        z = np.concatenate([last, scale.transform(readings)])     # (T + 1, B)
        x, y = z[:-1, :, None], z[1:, :, None]          # (T, B, 1): predict each reading from the last
        losses.append(trainer.partial_fit(x, y)["loss"])
        last = z[-1:]

    # Next-reading forecast from the carried state, in the sensors' own units.
    y_hat, _ = model.forward(last[:, :, None], trainer.state)    # (1, B, 1)
    forecast = scale.inverse_transform(y_hat[0, :, 0])          # (B,)

    assert losses[-1] < 0.02 * losses[0]
    truth = list(sensor_feed(pieces=61))[-1][0]         # the same feed one piece longer: the next reading
    assert np.abs(forecast - truth).max() < 0.3         # noise sd 0.1; the daily swing is +-3
