"""The `bptt` command (cli.py), driven through click's CliRunner, plus one run of the
installed command in a subprocess: train / forecast / evaluate / info / gradcheck, the
output streams (JSON on stdout, progress and summary on stderr), exit codes (0 ok, 1
gradcheck failure or divergence, 2 bad input) and every bad-input rule of issue 5: one
line "Error: ..." on stderr, no traceback, no checkpoint left behind."""
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import click
from click.testing import CliRunner

import engine
from cli import main
from engine.demos import load_demo, trend
from cli_checks import assert_bad_input

COMMANDS = ("train", "forecast", "evaluate", "info", "gradcheck")
# Small settings: a demo trains in well under a second once Numba's cache is warm.
FAST = ["--hidden", "8", "--k1", "20", "--epochs", "2"]
EPOCH_KEYS = {"epoch", "loss", "updates", "seconds", "val_loss"}
METRIC_KEYS = {"mse", "mae", "rmse", "baseline_mse", "baseline_mae", "baseline_rmse"}


def run(*args):
    """Invoke `bptt ARGS` in-process; stdout and stderr stay apart."""
    return CliRunner().invoke(main, [str(arg) for arg in args], prog_name="bptt")


def assert_ok(result):
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"


def assert_nothing_written(directory, *names):
    """Neither the named files nor a temporary checkpoint exist in `directory`."""
    for name in names:
        assert not (directory / name).exists(), f"{name} was written"
    leftovers = [path.name for path in directory.iterdir() if path.name.startswith(".bptt-")]
    assert leftovers == [], leftovers


def write_csv(path, header, rows):
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def read_forecast(text):
    """Forecast CSV -> (header, values (N, O)) of its first column and point forecasts (the
    interval bounds NAME_lo80, ... and quantiles NAME_q0.1, ... left out)."""
    lines = text.strip().splitlines()
    header = lines[0].split(",")
    kept = [0] + [i for i, name in enumerate(header) if i and not re.search(r"_(lo|hi|q)[0-9.]+$", name)]
    rows = [[float(line.split(",")[i]) for i in kept[1:]] for line in lines[1:]]
    return [header[i] for i in kept], np.array(rows)


def json_lines(text):
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def sine_model(tmp_path_factory):
    """A small LSTM trained on the sine demo with the defaults besides FAST (shared, read only)."""
    path = tmp_path_factory.mktemp("sine") / "sine.npz"
    result = run("train", "--demo", "sine", *FAST, "-o", path, "--json")
    assert_ok(result)
    return path, json_lines(result.stdout)


# ---------------------------------------------------------------- help and exit codes

def test_help_of_the_group_and_every_command():
    result = run("--help")
    assert_ok(result)
    assert result.stdout.startswith("Usage: bptt [OPTIONS] COMMAND")
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), command
    for command in COMMANDS:
        for flag in ("--help", "-h"):
            result = run(command, flag)
            assert_ok(result)
            assert result.stdout.startswith(f"Usage: bptt {command} [OPTIONS]"), result.stdout
    train_help = run("train", "--help").stdout
    for option in ("--demo", "--inputs", "--targets", "--horizon", "--streams", "--val-fraction", "--fill",
                   "--difference", "--cell", "--hidden", "--layers", "--init", "--forget-bias", "--k1", "--k2",
                   "--clip-norm", "--clip-value", "--optimizer", "--lr", "--schedule", "--epochs", "--seed",
                   "--dtype", "-o, --output", "--resume", "--patience", "--plot", "-q, --quiet", "--json"):
        assert option in train_help, option


def test_bare_command_shows_the_help_not_an_error():
    result = run()
    assert result.exit_code == 2  # click's convention for a missing command
    assert result.stderr.startswith("Usage: bptt [OPTIONS] COMMAND")
    assert "Error" not in result.stderr and "Traceback" not in result.stderr


def test_version():
    result = run("--version")
    assert_ok(result)
    assert re.fullmatch(r"bptt, version \d+\.\d+\.\d+\S*\n", result.stdout)


def test_unknown_command_and_option_are_usage_errors():
    assert_bad_input(run("fit"), "No such command 'fit'")
    assert_bad_input(run("train", "--demo", "sine", "--hiden", "8"), "No such option '--hiden'",
                     "Did you mean one of: '--hidden'")


# ---------------------------------------------------------------- train: output streams

def test_train_json_is_pure_json_lines_on_stdout_and_summary_on_stderr(tmp_path):
    output = tmp_path / "m.npz"
    result = run("train", "--demo", "sine", *FAST, "-o", output, "--json")
    assert_ok(result)
    records = json_lines(result.stdout)          # every stdout line is one JSON object
    assert [record["epoch"] for record in records] == [1, 2]
    for record in records:
        assert set(record) == EPOCH_KEYS
        assert np.isfinite(record["loss"]) and np.isfinite(record["val_loss"]) and record["updates"] > 0
    best = min(records, key=lambda record: record["val_loss"])
    summary = result.stderr
    assert re.search(r"^Trained 2 epochs \(\d+ updates\) in \d+\.\d+s\.$", summary, re.MULTILINE), summary
    assert f"Best validation loss {best['val_loss']:.5g} at epoch {best['epoch']}." in summary
    assert f"Checkpoint: {output}" in summary
    assert "epoch 1/2" not in summary             # no progress lines beside --json
    assert output.is_file()


def test_train_progress_lines_go_to_stderr_and_quiet_silences_everything(tmp_path):
    result = run("train", "--demo", "sine", *FAST, "-o", tmp_path / "a.npz")
    assert_ok(result)
    assert result.stdout == ""
    assert re.search(r"^epoch 1/2  loss \S+  val_loss \S+  \d+\.\d\ds$", result.stderr, re.MULTILINE), result.stderr
    assert "epoch 2/2" in result.stderr and "Checkpoint:" in result.stderr
    assert "\r" not in result.stderr               # not a terminal: plain lines, no redraws
    result = run("train", "--demo", "sine", *FAST, "-o", tmp_path / "b.npz", "--quiet")
    assert_ok(result)
    assert result.stdout == "" and result.stderr == ""
    assert (tmp_path / "b.npz").is_file()
    result = run("train", "--demo", "sine", *FAST, "-o", tmp_path / "c.npz", "--quiet", "--json")
    assert_ok(result)
    assert len(json_lines(result.stdout)) == 2 and result.stderr == ""


class Terminal(io.StringIO):
    """A stream that says it is a terminal, so Progress draws its bar."""

    def isatty(self):
        return True


def test_train_draws_a_progress_bar_on_a_terminal(tmp_path, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(engine, "Progress", lambda: engine.progress.Progress(terminal, rate=1e9))
    result = run("train", "--demo", "sine", *FAST, "-o", tmp_path / "m.npz")
    assert_ok(result)
    text = terminal.getvalue()
    bars = re.findall(r"\r\x1b\[Kepoch (\d)/2 \[(#*) *\] loss (\S+)  ([\d,]+) steps/s", text)
    assert len(bars) > 10, text[:500]
    assert {epoch for epoch, *_ in bars} == {"1", "2"}
    assert any(len(bar) == 20 for _, bar, _, _ in bars)        # the bar fills up
    assert all(np.isfinite(float(loss)) and int(rate.replace(",", "")) > 0 for *_, loss, rate in bars)
    assert re.search(r"\r\x1b\[Kepoch 2/2  loss \S+  val_loss \S+  \S+s\n", text)  # the bar gives way


def test_train_summary_without_validation_reports_the_best_training_loss(tmp_path):
    result = run("train", "--demo", "sine", *FAST, "--val-fraction", "0", "-o", tmp_path / "m.npz", "--json")
    assert_ok(result)
    records = json_lines(result.stdout)
    assert all("val_loss" not in record for record in records)
    best = min(records, key=lambda record: record["loss"])
    assert f"Best loss {best['loss']:.5g} at epoch {best['epoch']}." in result.stderr


# ---------------------------------------------------------------- train: data and options

def test_train_options_reach_the_checkpoint(tmp_path):
    output = tmp_path / "opts.npz"
    result = run("train", "--demo", "sine", "--cell", "gru", "--layers", "2", "--hidden", "4",
                 "--init", "orthogonal", "--dtype", "float64", "--k1", "30", "--k2", "60",
                 "--clip-norm", "0", "--clip-value", "0.5", "--optimizer", "sgd", "--lr", "0.01",
                 "--schedule", "cosine", "--warmup", "5", "--epochs", "1", "--seed", "3",
                 "--streams", "4", "--val-fraction", "0.2", "--dropout", "0.25", "--recurrent-dropout", "0.1",
                 "--zoneout", "0.05", "-q", "-o", output)
    assert_ok(result)
    meta = engine.read_metadata(output)
    assert meta["model"] == dict(cell="gru", input_size=1, hidden_size=4, output_size=1, num_layers=2,
                                 nonlinearity="tanh", dtype="float64", init="orthogonal",
                                 forget_bias=0.0, seed=3, bidirectional=False, dropout=0.25,
                                 recurrent_dropout=0.1, zoneout=0.05,
                                 skip=False)   # the linear path: none, the demo has no known inputs
    config = meta["trainer"]["config"]
    assert (config["k1"], config["k2"], config["clip_norm"], config["clip_value"]) == (30, 60, None, 0.5)
    assert config["optimizer"]["name"] == "sgd" and config["optimizer"]["lr"] == 0.01
    schedule = config["schedule"]
    assert schedule["name"] == "warmup" and schedule["warmup_steps"] == 5
    # 20000 - 1 framed steps, 4000 held out, 4 streams of 3999 steps, 30 per update
    assert schedule["after"] == {"name": "cosine", "total_steps": 134 - 5, "min_lr": 0.0}
    data = meta["user"]["data"]
    assert (data["streams"], data["val_fraction"], data["train_steps"], data["val_steps"]) == (4, 0.2, 15999, 4000)
    values = load_demo("sine").values[:, 0]
    train_targets = values[1:1 + 15999]            # next-step targets of the training part only
    np.testing.assert_allclose(data["target_norm"]["mean"], [train_targets.mean()], rtol=1e-12)
    np.testing.assert_allclose(data["target_norm"]["std"], [train_targets.std()], rtol=1e-12)
    np.testing.assert_allclose(data["input_norm"]["mean"], [values[:15999].mean()], rtol=1e-12)


def test_train_shards_and_split_fix_the_thread_plan(tmp_path):
    """--shards and --split are Trainer(shards=..., split=...): recorded in the checkpoint's
    config and plan as an explicit choice; together, or with --ray, they are refused."""
    for option, value in (("--shards", 2), ("--split", 2)):
        output = tmp_path / f"{option[2:]}.npz"
        assert_ok(run("train", "--demo", "sine", *FAST, option, value, "-q", "-o", output))
        config = engine.read_metadata(output)["trainer"]["config"]
        assert config[option[2:]] == value
        assert config["thread_plan"]["chosen_by"] == "explicit" and config["thread_plan"][option[2:]] == value
    assert_bad_input(run("train", "--demo", "sine", *FAST, "--shards", 2, "--split", 2, "-o", tmp_path / "x.npz"),
                     "cannot be combined with shards=2")
    assert_bad_input(run("train", "--demo", "sine", *FAST, "--shards", 2, "--ray", "127.0.0.1:1",
                         "-o", tmp_path / "x.npz"), "--shards and --split apply to training on this machine")
    resumed = run("train", "--demo", "sine", *FAST, "--shards", 1, "--resume", "-o", tmp_path / "shards.npz")
    assert_bad_input(resumed, "--shards 1 conflicts with the checkpoint's shards 2")
    assert_ok(run("train", "--demo", "sine", *FAST[:-1], "3", "--resume", "-q", "-o", tmp_path / "shards.npz"))
    assert engine.read_metadata(tmp_path / "shards.npz")["trainer"]["config"]["thread_plan"]["shards"] == 2
    # trials run side by side, one thread each: no --shards option (other help texts may name it)
    assert not re.search(r"^\s+--shards\b", run("sweep", "--help").stdout, re.MULTILINE)


def test_train_lstm_forget_bias_and_rnn_nonlinearity(tmp_path):
    assert_ok(run("train", "--demo", "sine", *FAST, "--forget-bias", "1.5", "-q", "-o", tmp_path / "l.npz"))
    model, _ = engine.load(tmp_path / "l.npz")
    assert model.config["forget_bias"] == 1.5
    assert_ok(run("train", "--demo", "sine", *FAST, "--cell", "rnn", "--nonlinearity", "relu",
                  "--init", "identity", "-q", "-o", tmp_path / "r.npz"))
    model, _ = engine.load(tmp_path / "r.npz")
    assert (model.cell, model.nonlinearity, model.init) == ("rnn", "relu", "identity")


def test_train_csv_columns_by_name_and_index_npy_and_npz(tmp_path):
    steps = np.arange(600)
    load = 10 + np.sin(steps / 6)
    temp = 20 + np.cos(steps / 6)
    write_csv(tmp_path / "named.csv", ["date", "temp", "load"],
              [[f"d{step}", f"{a:.6f}", f"{b:.6f}"] for step, a, b in zip(steps, temp, load)])
    result = run("train", tmp_path / "named.csv", "--targets", "load", "--inputs", "temp,load",
                 *FAST, "--streams", "4", "-q", "-o", tmp_path / "named.npz")
    assert_ok(result)
    data = engine.read_metadata(tmp_path / "named.npz")["user"]["data"]
    assert (data["inputs"], data["targets"]) == (["temp", "load"], ["load"])
    # no header and ";" as delimiter: columns by index
    with open(tmp_path / "plain.txt", "w") as file:
        file.writelines(f"{a:.6f};{b:.6f}\n" for a, b in zip(temp, load))
    assert_ok(run("train", tmp_path / "plain.txt", "--targets", "1", "--inputs", "0,1", *FAST, "--streams", "4",
                  "-q", "-o", tmp_path / "plain.npz"))
    data = engine.read_metadata(tmp_path / "plain.npz")["user"]["data"]
    assert (data["inputs"], data["targets"]) == (["0", "1"], ["1"])
    np.save(tmp_path / "one.npy", load)
    assert_ok(run("train", tmp_path / "one.npy", *FAST, "--streams", "4", "-q", "-o", tmp_path / "npy.npz"))
    np.testing.assert_allclose(engine.read_metadata(tmp_path / "npy.npz")["user"]["data"]["target_norm"]["mean"],
                               [load[1:1 + 539].mean()], rtol=1e-12)
    np.savez(tmp_path / "columns.npz", temp=temp, load=load)
    assert_ok(run("train", tmp_path / "columns.npz", "--targets", "load", *FAST, "--streams", "4", "-q",
                  "-o", tmp_path / "npz.npz"))
    assert engine.read_metadata(tmp_path / "npz.npz")["user"]["data"]["columns"] == ["temp", "load"]
    # every column a target (the default), forecast together, one CSV column each
    assert_ok(run("train", tmp_path / "columns.npz", *FAST, "--streams", "4", "-q", "-o", tmp_path / "both.npz"))
    result = run("forecast", tmp_path / "both.npz", tmp_path / "columns.npz", "--steps", "3")
    assert_ok(result)
    header, forecasts = read_forecast(result.stdout)
    assert header == ["step", "temp", "load"] and forecasts.shape == (3, 2)
    assert np.all(np.abs(forecasts - [20, 10]) < 2)
    # the text column "date" is no error while unused, in forecast and evaluate too
    assert_ok(run("forecast", tmp_path / "named.npz", tmp_path / "named.csv"))
    assert_ok(run("evaluate", tmp_path / "named.npz", tmp_path / "named.csv"))


def test_train_horizon_forecasts_that_far_without_feedback(tmp_path):
    output = tmp_path / "h3.npz"
    assert_ok(run("train", "--demo", "sine", *FAST, "--horizon", "3", "-q", "-o", output))
    result = run("forecast", output, "--demo", "sine", "--steps", "3")
    assert_ok(result)
    assert read_forecast(result.stdout)[1].shape == (3, 1)
    # past the horizon: rolled forward in blocks of 3 (the inputs are the targets), no bounds there
    result = run("forecast", output, "--demo", "sine", "--steps", "4")
    assert_ok(result)
    assert read_forecast(result.stdout)[1].shape == (4, 1)
    assert "nan" in result.stdout.splitlines()[4] and "nan" not in result.stdout.splitlines()[3]
    result = run("evaluate", output, "--demo", "sine", "--json")
    assert_ok(result)
    metrics = json.loads(result.stdout)
    assert metrics["steps"] == 20000 - 1   # origins: every row but the last
    assert [record["count"] for record in metrics["per_step"]] == [20000 - 1, 20000 - 2, 20000 - 3]


def test_missing_targets_are_masked_and_missing_inputs_need_fill(tmp_path):
    steps = np.arange(800)
    signal = np.sin(steps / 5)
    gaps = (steps % 37 == 5)
    rows = [[f"{driver:.6f}", "" if gap else f"{value:.6f}"]
            for driver, value, gap in zip(np.cos(steps / 5), signal, gaps)]
    path = write_csv(tmp_path / "gaps.csv", ["driver", "value"], rows)
    # an empty target cell is a missing target: trains without --fill, scored only where observed
    output = tmp_path / "masked.npz"
    result = run("train", path, "--targets", "value", "--inputs", "driver", *FAST, "--streams", "4",
                 "-o", output, "--json")
    assert_ok(result)
    assert all(np.isfinite(record["loss"]) and np.isfinite(record["val_loss"]) for record in json_lines(result.stdout))
    result = run("evaluate", output, path, "--json")
    assert_ok(result)
    metrics = json.loads(result.stdout)
    assert all(np.isfinite(metrics[key]) for key in METRIC_KEYS)
    assert metrics["steps"] == int((~gaps[1:]).sum())   # next-step targets that are observed
    # the same column as input: missing inputs are an error naming --fill, unless filled
    before = run("train", path, "--targets", "value", *FAST, "-o", tmp_path / "unfilled.npz")
    assert_bad_input(before, "inputs hold", "missing values", '"value"', "--fill ffill|zero|linear")
    assert_nothing_written(tmp_path, "unfilled.npz")
    for fill in ("ffill", "zero", "linear"):
        output = tmp_path / f"{fill}.npz"
        result = run("train", path, "--targets", "value", "--fill", fill, *FAST, "--streams", "4", "-q", "-o", output)
        assert_ok(result)
        assert engine.read_metadata(output)["user"]["data"]["fill"] == fill
        forecast = run("forecast", output, path, "--steps", "5")
        assert_ok(forecast)
        assert np.all(np.isfinite(read_forecast(forecast.stdout)[1]))


# ---------------------------------------------------------------- end to end

def test_end_to_end_beats_persistence_in_original_units(sine_model, tmp_path):
    path, records = sine_model
    result = run("evaluate", path, "--demo", "sine", "--json")
    assert_ok(result)
    metrics = json.loads(result.stdout)
    assert METRIC_KEYS | {"steps", "per_step", "intervals"} <= set(metrics)
    assert metrics["steps"] == 20000 - 1
    assert metrics["mse"] < 0.8 * metrics["baseline_mse"], metrics
    assert metrics["mae"] < metrics["baseline_mae"]
    assert metrics["rmse"] == pytest.approx(np.sqrt(metrics["mse"]))
    values = load_demo("sine").values[:, 0]
    assert metrics["baseline_mse"] == pytest.approx(np.mean(np.diff(values) ** 2), rel=1e-12)
    table = run("evaluate", path, "--demo", "sine")
    assert_ok(table)
    assert re.search(r"^MSE\s+(\S+)\s+(\S+)$", table.stdout, re.MULTILINE).groups() == (
        f"{metrics['mse']:.6g}", f"{metrics['baseline_mse']:.6g}")
    assert "persistence" in table.stdout and "19999 steps scored" in table.stdout


def test_forecast_writes_csv_to_stdout_or_a_file(sine_model, tmp_path):
    path, _ = sine_model
    result = run("forecast", path, "--demo", "sine", "--steps", "48")
    assert_ok(result)
    header, forecasts = read_forecast(result.stdout)
    assert header == ["step", "value"]
    assert [int(line.split(",")[0]) for line in result.stdout.splitlines()[1:]] == list(range(1, 49))
    assert forecasts.shape == (48, 1) and np.all(np.isfinite(forecasts))
    assert np.abs(forecasts).max() < 3                 # the demo's own range, not z-scores gone wild
    to_file = run("forecast", path, "--demo", "sine", "--steps", "48", "-o", tmp_path / "f.csv")
    assert_ok(to_file)
    assert to_file.stdout == "" and (tmp_path / "f.csv").read_text() == result.stdout
    # the first forecast is the model's next-step forecast after the warm-up over the series
    first = engine.forecast_series(path, load_demo("sine"), 1).column("value").to_numpy()
    np.testing.assert_allclose(forecasts[:1, 0], first, rtol=1e-9)


def test_forecast_and_evaluate_are_in_original_units(tmp_path):
    steps = np.arange(1200)
    values = 1000 + 50 * np.sin(2 * np.pi * steps / 24)
    path = write_csv(tmp_path / "units.csv", ["level"], [[f"{value:.6f}"] for value in values])
    output = tmp_path / "units.npz"
    assert_ok(run("train", path, *FAST, "--epochs", "4", "--streams", "2", "--lr", "0.01", "-q", "-o", output))
    _, forecasts = read_forecast(run("forecast", output, path, "--steps", "24").stdout)
    assert np.all((forecasts > 900) & (forecasts < 1100)), forecasts.ravel()
    metrics = json.loads(run("evaluate", output, path, "--json").stdout)
    persistence = np.diff(np.loadtxt(path, skiprows=1))
    assert metrics["baseline_mse"] == pytest.approx(np.mean(persistence ** 2), rel=1e-12)
    assert metrics["baseline_mae"] == pytest.approx(np.mean(np.abs(persistence)), rel=1e-12)
    assert metrics["mse"] < 0.5 * metrics["baseline_mse"], metrics


def test_difference_forecasts_beyond_the_training_range(tmp_path):
    """--difference: trained on the first half of a trending series (levels up to ~6), the
    model still forecasts and beats persistence on the second half (levels ~5..10); the same
    model on levels does not."""
    values = trend().values[:, 0]
    early = write_csv(tmp_path / "early.csv", ["value"], [[f"{value:.8f}"] for value in values[:2500]])
    late = write_csv(tmp_path / "late.csv", ["value"], [[f"{value:.8f}"] for value in values[2500:]])
    settings = ["--hidden", "8", "--k1", "25", "--epochs", "3", "-q"]
    assert_ok(run("train", early, *settings, "--difference", "-o", tmp_path / "diff.npz"))
    assert_ok(run("train", early, *settings, "--no-difference", "-o", tmp_path / "level.npz"))
    # left to the data, the trend is seen: the model of changes again
    assert_ok(run("train", early, *settings, "-o", tmp_path / "auto.npz"))
    assert engine.read_metadata(tmp_path / "auto.npz")["user"]["data"]["difference"] is True
    differenced = json.loads(run("evaluate", tmp_path / "diff.npz", late, "--json").stdout)
    levels = json.loads(run("evaluate", tmp_path / "level.npz", late, "--json").stdout)
    assert differenced["mse"] < differenced["baseline_mse"], differenced
    assert levels["mse"] > 10 * levels["baseline_mse"], levels        # why --difference exists
    assert differenced["steps"] == 2500 - 2                            # one step lost to differencing
    result = run("forecast", tmp_path / "diff.npz", late, "--steps", "50")
    assert_ok(result)
    forecasts = read_forecast(result.stdout)[1][:, 0]
    assert forecasts.min() > values[:2500].max() + 2                   # far above anything trained on
    assert np.abs(forecasts - values[-1]).max() < 1.5                  # and near where the series is


# ---------------------------------------------------------------- resume and early stopping

def test_resume_continues_exactly_where_it_stopped(tmp_path):
    straight, resumed = tmp_path / "straight.npz", tmp_path / "resumed.npz"
    settings = ["--demo", "sine", "--hidden", "8", "--k1", "20", "-q", "--json"]
    full = run("train", *settings, "--epochs", "3", "-o", straight)
    assert_ok(full)
    assert_ok(run("train", *settings, "--epochs", "1", "-o", resumed))
    # --resume keeps the checkpoint's own settings: a different --hidden is refused, the same one is fine
    before = resumed.read_bytes()
    assert_bad_input(run("train", *settings, "--epochs", "3", "--hidden", "32", "-o", resumed, "--resume"),
                     "--resume: --hidden 32 conflicts with the checkpoint's hidden size 8")
    assert resumed.read_bytes() == before
    second = run("train", *settings, "--epochs", "3", "-o", resumed, "--resume")
    assert_ok(second)
    assert [record["epoch"] for record in json_lines(second.stdout)] == [2, 3]
    for key in ("loss", "val_loss", "updates"):
        assert [record[key] for record in json_lines(second.stdout)] == \
               [record[key] for record in json_lines(full.stdout)[1:]]
    (model_a, trainer_a), (model_b, trainer_b) = engine.load(straight), engine.load(resumed)
    assert model_b.hidden_size == 8
    np.testing.assert_array_equal(model_a.params, model_b.params)
    assert (trainer_a.step, trainer_a.epoch) == (trainer_b.step, trainer_b.epoch)
    for key in trainer_a.optimizer_state:
        np.testing.assert_array_equal(trainer_a.optimizer_state[key], trainer_b.optimizer_state[key])


def test_resume_errors_leave_the_checkpoint_untouched(tmp_path):
    assert_bad_input(run("train", "--demo", "sine", "--resume", "-o", tmp_path / "none.npz"),
                     "none.npz: no such checkpoint file")
    assert_nothing_written(tmp_path, "none.npz")
    output = tmp_path / "m.npz"
    assert_ok(run("train", "--demo", "sine", *FAST, "-q", "-o", output))
    before = output.read_bytes()
    write_csv(tmp_path / "other.csv", ["x"], [[i] for i in range(300)])
    assert_bad_input(run("train", tmp_path / "other.csv", "--resume", "-o", output),
                     "unknown column 'value'")
    assert output.read_bytes() == before
    model_only = tmp_path / "model-only.npz"
    engine.save(model_only, engine.Model(hidden_size=4))
    before = model_only.read_bytes()
    assert_bad_input(run("train", "--demo", "sine", "--resume", "-o", model_only), "holds a model only")
    assert model_only.read_bytes() == before


def test_patience_stops_early_and_keeps_the_best_epoch(tmp_path):
    output = tmp_path / "m.npz"
    result = run("train", "--demo", "sine", "--hidden", "8", "--k1", "20", "--lr", "0.05", "--epochs", "12",
                 "--patience", "1", "-o", output, "--json")
    assert_ok(result)
    records = json_lines(result.stdout)
    best = min(records, key=lambda record: record["val_loss"])
    assert len(records) < 12 and records[-1]["epoch"] == best["epoch"] + 1
    assert f"Best validation loss {best['val_loss']:.5g} at epoch {best['epoch']} (parameters restored)." \
        in result.stderr
    model, trainer = engine.load(output)
    assert trainer.best["epoch"] == best["epoch"]
    x_val, y_val = _validation_of(output)
    assert trainer.evaluate(x_val, y_val) == pytest.approx(best["val_loss"], rel=1e-6)


def _validation_of(path):
    from engine.data import prepare_training_data
    data = engine.read_metadata(path)["user"]["data"]
    options = {key: data[key] for key in engine.pipeline.DATA_OPTIONS}
    prepared = prepare_training_data(load_demo("sine"), **options)
    return prepared.x_val, prepared.y_val


# ---------------------------------------------------------------- info and gradcheck

def test_info_text_and_json(sine_model, tmp_path):
    path, records = sine_model
    result = run("info", path)
    assert_ok(result)
    lines = result.stdout.splitlines()
    assert lines[0] == ("Model:    lstm, 1 layer(s) x 8 hidden, 1 input(s) -> 1 output(s), float32, "
                        "init default, seed 0")
    assert re.match(r"Training: 2 epochs, \d+ updates; gradient bptt, k1=20 k2=20, adam lr=0.003, clip_norm=1.0$", lines[1])
    assert f"validation loss {records[-1]['val_loss']:.5g}" in lines[2]
    assert lines[3].startswith("Data:     demo:sine; targets ['value'], inputs ['value'], horizon 1, 8 streams")
    result = run("info", path, "--json")
    assert_ok(result)
    meta = json.loads(result.stdout)
    assert meta["model"]["hidden_size"] == 8 and meta["trainer"]["epoch"] == 2
    assert meta["user"]["data"]["targets"] == ["value"]
    model_only = tmp_path / "model-only.npz"
    engine.save(model_only, engine.Model(cell="gru", hidden_size=4))
    result = run("info", model_only)
    assert_ok(result)
    lines = result.stdout.splitlines()  # no training or data lines: the model and the BLAS it was saved with
    assert lines[0].startswith("Model:    gru, 1 layer(s) x 4 hidden") and len(lines) == 2
    assert lines[1].startswith("BLAS:     ")


def test_gradcheck_passes_and_fails_by_tolerance():
    result = run("gradcheck", "--cell", "gru", "--layers", "1", "--hidden", "3")
    assert_ok(result)
    error = float(re.search(r"largest relative error (\S+) \(in \w+\): ok$", result.stdout).group(1))
    assert 0 < error < 1e-6
    failed = run("gradcheck", "--cell", "gru", "--layers", "1", "--hidden", "3", "--tolerance", "0")
    assert failed.exit_code == 1
    assert failed.stdout.rstrip().endswith(": FAILED") and f"{error:.3g}" in failed.stdout
    assert_bad_input(run("gradcheck", "--cell", "lstm", "--nonlinearity", "relu"),
                     "--nonlinearity applies to --cell rnn only")


def test_divergence_exits_1_with_one_line_and_no_checkpoint(tmp_path):
    result = run("train", "--demo", "sine", "--hidden", "8", "--k1", "20", "--optimizer", "sgd", "--lr", "1e30",
                 "--clip-norm", "0", "-q", "-o", tmp_path / "m.npz")
    assert_bad_input(result, "training diverged at update", "last good parameters are kept", code=1)
    assert_nothing_written(tmp_path, "m.npz")


def test_failed_write_and_interrupt_exit_without_traceback(tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine.pipeline, "save", disk_full)
    assert_bad_input(run("train", "--demo", "sine", *FAST, "-q", "-o", tmp_path / "m.npz"),
                     "[Errno 28] No space left on device", code=1)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "train_series", interrupted)
    result = run("train", "--demo", "sine", "-o", tmp_path / "m.npz")
    assert result.exit_code == 130
    assert result.stderr.strip() == "Interrupted: no epoch was completed in this run, nothing was saved."


# ---------------------------------------------------------------- --plot

def test_plot_without_matplotlib_says_how_to_install_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # `import matplotlib` raises ImportError
    message = "--plot needs matplotlib: pip install 'bptt[plot]'"
    assert_bad_input(run("train", "--demo", "sine", *FAST, "--plot", tmp_path / "p.png", "-o", tmp_path / "m.npz"),
                     message)
    assert_nothing_written(tmp_path, "m.npz", "p.png")
    checkpoint = tmp_path / "any.npz"   # checked before the checkpoint is even read
    assert_bad_input(run("forecast", checkpoint, "--demo", "sine", "--plot", tmp_path / "f.png"), message)


def test_plot_writes_png_files(sine_model, tmp_path):
    pytest.importorskip("matplotlib")
    assert_ok(run("train", "--demo", "sine", *FAST, "-q", "--plot", tmp_path / "train.png", "-o", tmp_path / "m.npz"))
    assert (tmp_path / "train.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = run("forecast", sine_model[0], "--demo", "sine", "--steps", "24", "--plot", tmp_path / "f.png")
    assert_ok(result)
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(read_forecast(result.stdout)[1]) == 24
    # an unsupported format is found before training, not after it
    assert_bad_input(run("train", "--demo", "sine", *FAST, "--plot", tmp_path / "curves.txt", "-o", tmp_path / "x.npz"),
                     "cannot save a plot as .txt; use .png")
    assert_nothing_written(tmp_path, "x.npz", "curves.txt")


# ---------------------------------------------------------------- bad input

@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    """Files of every kind of bad input, and one good series of 400 steps."""
    root = tmp_path_factory.mktemp("bad")
    write_csv(root / "good.csv", ["t", "v"], [[i, i % 7] for i in range(400)])
    (root / "text.csv").write_text("a,b\n1,2\n3,4\n5,oops\n")
    (root / "ragged.csv").write_text("a,b\n1,2\n3\n")
    (root / "empty.csv").write_text("# nothing\n\n")
    (root / "junk.npz").write_text("not a zip archive")
    np.savez(root / "foreign.npz", weights=np.ones(3))
    engine.save(root / "model-only.npz", engine.Model(hidden_size=4))
    np.save(root / "array.npy", np.arange(10.0))
    (root / "gaps.csv").write_text("v\n" + "\n".join("NaN" if i == 50 else str(np.sin(i)) for i in range(400)))
    return root


TRAIN_ERRORS = {
    "non-numeric cell": (["text.csv"], ['text.csv, line 4, column "b": not a finite number: \'oops\'']),
    "ragged line": (["ragged.csv"], ["ragged.csv, line 3: expected 2 cells", "found 1"]),
    "empty file": (["empty.csv"], ["empty.csv: the file holds no data"]),
    "missing data file": (["nope.csv"], ["nope.csv: no such data file"]),
    "unknown target": (["good.csv", "--targets", "price"], ["targets: unknown column 'price'", '"t", "v"']),
    "unknown input": (["good.csv", "--targets", "v", "--inputs", "v,7"], ["inputs: unknown column 7"]),
    "too short for k1": (["good.csv", "--targets", "v", "--k1", "100", "--streams", "8"],
                         ["cut into 8 streams that is 44 steps per stream, fewer than the 100 needed (k1)"]),
    "too many streams": (["good.csv", "--targets", "v", "--streams", "1000"],
                         ["cut into 1000 streams that is 0 steps per stream"]),
    "missing inputs": (["gaps.csv"], ["inputs hold 1 missing values", "--fill ffill|zero|linear"]),
    "data and demo": (["good.csv", "--demo", "sine"], ["give a DATA file or --demo NAME, not both"]),
    "no data": ([], ["give either a DATA file or --demo NAME"]),
    "unknown demo": (["--demo", "pi"], ["Invalid value for '--demo'", "'pi' is not one of"]),
    "unknown cell": (["--demo", "sine", "--cell", "transformer"], ["Invalid value for '--cell'"]),
    "zero hidden": (["--demo", "sine", "--hidden", "0"], ["Invalid value for '--hidden'", "x>=1"]),
    "zero epochs": (["--demo", "sine", "--epochs", "0"], ["Invalid value for '--epochs'"]),
    "val fraction 1": (["--demo", "sine", "--val-fraction", "1"], ["Invalid value for '--val-fraction'"]),
    "zero lr": (["--demo", "sine", "--lr", "0"], ["Invalid value for '--lr'"]),
    "infinite lr": (["--demo", "sine", "--lr", "inf"], ["lr must be finite"]),
    "nan forget bias": (["--demo", "sine", "--forget-bias", "nan"], ["forget_bias must be finite"]),
    "forget bias on gru": (["--demo", "sine", "--cell", "gru", "--forget-bias", "1"],
                           ["forget_bias applies to cell 'lstm' only"]),
    "not a number": (["--demo", "sine", "--k1", "ten"], ["Invalid value for '--k1'", "'ten' is not a valid integer"]),
    "k2 below k1": (["--demo", "sine", "--k1", "20", "--k2", "10"], ["k2 must be >= k1"]),
    "k2 with full bptt": (["--demo", "sine", "--full-bptt", "--k2", "10"], ["--k2", "--full-bptt"]),
    "relu on lstm": (["--demo", "sine", "--nonlinearity", "relu"], ["--nonlinearity applies to --cell rnn only"]),
    "unknown fill": (["--demo", "sine", "--fill", "mean"], ["Invalid value for '--fill'"]),
    "unknown option": (["--demo", "sine", "--epoch", "2"], ["No such option '--epoch'"]),
}


@pytest.mark.parametrize("case", sorted(TRAIN_ERRORS))
def test_train_bad_input(bad_files, tmp_path, case):
    args, fragments = TRAIN_ERRORS[case]
    args = [str(bad_files / arg) if arg.endswith(".csv") else arg for arg in args]   # files of bad_files
    assert_bad_input(run("train", "--hidden", "4", "-o", tmp_path / "m.npz", *args), *fragments)
    assert_nothing_written(tmp_path, "m.npz")


def test_train_output_path_problems_are_found_before_training(tmp_path):
    assert_bad_input(run("train", "--demo", "sine", "-o", tmp_path / "missing" / "m.npz"),
                     "Invalid value for '-o' / '--output'", "does not exist")
    assert_bad_input(run("train", "--demo", "sine", "-o", tmp_path), "Invalid value for '-o' / '--output'",
                     "is a directory")
    assert_bad_input(run("train", "--demo", "sine", "-o", tmp_path / "m.npz", "--plot", tmp_path / "no" / "p.png"),
                     "Invalid value for '--plot'", "does not exist")
    assert_nothing_written(tmp_path, "m.npz")
    assert_bad_input(run("forecast", tmp_path / "m.npz", "--demo", "sine", "-o", tmp_path / "no" / "f.csv"),
                     "Invalid value for '-o' / '--output'", "does not exist")


CHECKPOINT_ERRORS = {
    "missing": ("absent.npz", ["absent.npz: no such checkpoint file"]),
    "unreadable": ("junk.npz", ["junk.npz: not a bptt checkpoint (the file is not an .npz archive)"]),
    "foreign": ("foreign.npz", ["foreign.npz: not a bptt-checkpoint file"]),
    "a data file": ("good.csv", ["good.csv: not a bptt checkpoint"]),
    "an npy array": ("array.npy", ["array.npy: not a"]),
}


@pytest.mark.parametrize("command", ["forecast", "evaluate", "info"])
@pytest.mark.parametrize("case", sorted(CHECKPOINT_ERRORS))
def test_bad_checkpoint(bad_files, command, case):
    name, fragments = CHECKPOINT_ERRORS[case]
    data = [] if command == "info" else ["--demo", "sine"]
    assert_bad_input(run(command, bad_files / name, *data), *fragments)


@pytest.mark.parametrize("command", ["forecast", "evaluate"])
def test_checkpoint_without_data_recipe(bad_files, command):
    assert_bad_input(run(command, bad_files / "model-only.npz", "--demo", "sine"),
                     "checkpoint has no data recipe (not written by bptt train)")


def test_forecast_and_evaluate_bad_data(sine_model, bad_files):
    path, _ = sine_model
    for command in ("forecast", "evaluate"):
        assert_bad_input(run(command, path, bad_files / "good.csv"), "inputs: unknown column 'value'")
        # a non-numeric column is an error only when used
        assert_bad_input(run(command, path, bad_files / "text.csv"), "unknown column 'value'", '"a", "b"')
        assert_bad_input(run(command, path), "give either a DATA file or --demo NAME")
        assert_bad_input(run(command, path, bad_files / "nope.csv"), "nope.csv: no such data file")
    assert_bad_input(run("forecast", path, "--demo", "sine", "--steps", "0"), "Invalid value for '--steps'")
    short = bad_files / "short.csv"
    short.write_text("value\n1.5\n")
    assert_bad_input(run("evaluate", path, short), "the series has 1 rows, too few for horizon 1")


# ---------------------------------------------------------------- the installed command

def installed_bptt():
    """The `bptt` script installed beside this Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "bptt"
    return str(beside) if beside.is_file() else shutil.which("bptt")


def test_installed_command_in_a_subprocess(tmp_path):
    command = installed_bptt()
    assert command, "the bptt command is not installed (pip install -e .)"
    environment = dict(os.environ, PYTHONUNBUFFERED="1")

    def bptt(*args):
        return subprocess.run([command, *map(str, args)], cwd=tmp_path, capture_output=True, text=True,
                              env=environment, timeout=120)

    trained = bptt("train", "--demo", "sine", *FAST, "--json")
    assert trained.returncode == 0, trained.stderr
    assert [record["epoch"] for record in json_lines(trained.stdout)] == [1, 2]
    assert "Checkpoint: model.npz" in trained.stderr          # the default output
    evaluated = bptt("evaluate", "model.npz", "--demo", "sine", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert metrics["mse"] < metrics["baseline_mse"]
    (tmp_path / "bad.csv").write_text("a\n1\nx\n")
    failed = bptt("train", "bad.csv", "-o", "bad.npz")
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr == "Error: bad.csv, line 3, column \"a\": not a finite number: 'x'\n"
    assert not (tmp_path / "bad.npz").exists()


# ---------------------------------------------------------------- help texts, spellings, overwriting

def test_every_option_of_every_command_has_a_help_text():
    missing = [f"{name} {param.opts[0]}" for name, command in main.commands.items() for param in command.params
               if isinstance(param, click.Option) and not param.hidden and not (param.help or "").strip()]
    assert missing == []
    diagnostics = next(param.help for param in main.commands["train"].params if param.name == "diagnostics")
    assert diagnostics.count(". ") + diagnostics.count(": ") <= 2 and len(diagnostics) < 300, diagnostics
    for name in ("evaluate", "info", "sweep"):
        json_help = next(param.help for param in main.commands[name].params if param.name == "as_json")
        assert "train:" not in json_help, (name, json_help)


def test_train_options_come_from_engine_options():
    from engine.options import OPTIONS

    params = {param.name: param for param in main.commands["train"].params}
    for name, option in OPTIONS.items():
        assert option.flag in params[name].opts and params[name].help == option.help, name
        # the default as click resolves it (click 8.5 keeps a flag's unset default as a sentinel)
        default = params[name].get_default(click.Context(main.commands["train"]))
        assert default == option.default or (option.kind == "flag" and default is False), name


@pytest.mark.parametrize("old, new, notice", [
    (["gradcheck", "--inputs", "2", "--outputs", "1", "--hidden", "3", "--layers", "1", "--steps", "3"],
     ["gradcheck", "--input-size", "2", "--output-size", "1", "--hidden", "3", "--layers", "1", "--steps", "3"],
     "--inputs is deprecated here; use --input-size"),
])
def test_old_spellings_still_work_with_a_one_line_notice(old, new, notice):
    before, after = run(*old), run(*new)
    assert_ok(before)
    assert_ok(after)
    assert before.stdout == after.stdout
    assert notice in before.stderr and after.stderr == ""
    assert len([line for line in before.stderr.splitlines() if "deprecated" in line]) == 2  # --inputs, --outputs


def test_sweep_workers_is_the_old_spelling_of_parallel(tmp_path):
    pytest.importorskip("optuna")
    common = ["sweep", "--demo", "sine", "--space", "lr=1e-3,1e-2", "--sampler", "grid", "--trials", "1",
              "--hidden", "4", "--k1", "20", "--epochs", "1", "--streams", "2", "-q"]
    old = run(*common, "--workers", "1", "-o", tmp_path / "old")
    assert_ok(old)
    assert old.stderr.splitlines() == ["Warning: --workers is deprecated here; use --parallel (the old spelling "
                                       "goes in the next release)."]
    assert_ok(run(*common, "--parallel", "1", "-o", tmp_path / "new"))
    assert_bad_input(run(*common, "--parallel", "1", "--workers", "1", "-o", tmp_path / "both"),
                     "give --parallel or --workers (its old spelling), not both")


def test_bench_output_and_json_spellings(tmp_path, monkeypatch):
    """bench -o FILE writes the records, --json prints them; --json FILE is the deprecated -o."""
    import bench

    records = [{"config": "tiny", "steps_per_s": 1.0}]

    def fake_run_bench(configs, peers, quick, json_path, echo):
        if json_path is not None:
            Path(json_path).write_text(json.dumps(records))
        return records

    monkeypatch.setattr(bench, "run_bench", fake_run_bench)
    monkeypatch.setattr(bench, "format_table", lambda records: "the table")
    printed = run("bench", "--json")
    assert_ok(printed)
    assert json.loads(printed.stdout) == records
    written = run("bench", "-o", tmp_path / "b.json")
    assert_ok(written)
    assert json.loads((tmp_path / "b.json").read_text()) == records and written.stdout == "the table\n"
    old = run("bench", "--json", tmp_path / "old.json")
    assert_ok(old)
    assert json.loads((tmp_path / "old.json").read_text()) == records
    assert old.stderr.splitlines() == ["Warning: --json FILE is deprecated here; use -o FILE (the old spelling "
                                       "goes in the next release)."]
    refused = run("bench", "--json", "")  # bad input under an old spelling: the Error line alone
    assert_bad_input(refused, "path is empty")
    assert len(refused.stderr.splitlines()) == 1


def test_bench_quality_prints_the_quality_table_and_writes_its_json(tmp_path, monkeypatch):
    """bench --quality runs bench.quality instead of the speed benchmark: its table and the
    sweep's best settings on stdout, -o its JSON; the speed options are refused."""
    pytest.importorskip("statsmodels")
    import bench
    import bench.quality

    result = {"members": {"sine": {"horizon": 24, "season": 24, "origins": 125, "naive_mae": 0.34,
                                   "mase": {"defaults": 0.5, "sweep": 0.45, "ets": 0.7, "arima": 0.47},
                                   "step_mase": {"defaults": [0.3, 0.6], "sweep": [0.25, 0.5],
                                                 "ets": [0.6, 0.7], "arima": [0.4, 0.5]},
                                   "sweep_best": {"values": {"lr": 0.004, "hidden": 64}}}}}
    calls = []
    monkeypatch.setattr(bench.quality, "run", lambda quick, echo: calls.append(quick) or result)
    monkeypatch.setattr(bench, "run_bench", lambda *args, **kwargs: pytest.fail("the speed benchmark ran"))
    written = run("bench", "--quality", "--quick", "-o", tmp_path / "q.json")
    assert_ok(written)
    assert calls == [True] and json.loads((tmp_path / "q.json").read_text()) == result
    assert written.stdout.splitlines()[2] == "| sine | 24 | 24 | 125 | 0.500 | 0.450 | 0.700 | 0.470 | - | 0.34 |"
    assert written.stdout.splitlines()[6] == "| sine | 0.300 | 0.250 | 0.600 | 0.400 | - | - | - |"
    assert written.stdout.splitlines()[-1] == "sine: lr 0.004, hidden 64"
    assert json.loads(run("bench", "--quality", "--json").stdout) == result
    assert_bad_input(run("bench", "--quality", "--config", "tiny"), "--config time the training step")
    assert calls == [True, False]


def _prepared_outputs(tmp_path, sine_model):
    """{name: (argv writing tmp_path/name, argv with --force)} of every command that writes a file."""
    checkpoint, _ = sine_model
    train = ["train", "--demo", "sine", "--hidden", "4", "--k1", "20", "--epochs", "1", "-q"]
    return {
        "model.npz": train + ["-o", tmp_path / "model.npz"],
        "curves.png": train + ["-o", tmp_path / "other.npz", "--plot", tmp_path / "curves.png"],
        "forecast.csv": ["forecast", checkpoint, "--demo", "sine", "--steps", "2", "-o", tmp_path / "forecast.csv"],
        "forecast.png": ["forecast", checkpoint, "--demo", "sine", "--steps", "2", "--plot", tmp_path / "forecast.png"],
        "model.onnx": ["export", checkpoint, "--format", "onnx", "-o", tmp_path / "model.onnx"],
        "bench.json": ["bench", "-o", tmp_path / "bench.json"],
    }


@pytest.mark.parametrize("name", ["model.npz", "curves.png", "forecast.csv", "forecast.png", "model.onnx",
                                  "bench.json"])
def test_every_writing_command_refuses_an_existing_output_without_force(sine_model, tmp_path, monkeypatch, name):
    """One rule: an existing file is refused (exit 2, one Error line, the file unchanged, no
    work done) unless --force, which replaces it."""
    if name.endswith(".png"):
        pytest.importorskip("matplotlib")
    if name.endswith(".onnx"):
        pytest.importorskip("onnx")
    if name == "bench.json":
        import bench

        monkeypatch.setattr(bench, "run_bench", lambda configs, peers, quick, json_path, echo:
                            Path(json_path).write_text("[]") and [])
        monkeypatch.setattr(bench, "format_table", lambda records: "the table")
    argv = _prepared_outputs(tmp_path, sine_model)[name]
    target = tmp_path / name
    target.write_bytes(b"the user's own work")
    hint = " or --resume to continue it" if name == "model.npz" else ""
    assert_bad_input(run(*argv), f"{target} exists; pass --force to replace it{hint}")
    assert target.read_bytes() == b"the user's own work"
    assert_nothing_written(tmp_path, "other.npz")
    replaced = run(*argv, "--force")
    assert_ok(replaced)
    assert target.read_bytes() != b"the user's own work" and target.stat().st_size > 0


def test_train_resume_continues_an_existing_checkpoint_without_force(tmp_path):
    path = tmp_path / "m.npz"
    assert_ok(run("train", "--demo", "sine", "--hidden", "4", "--k1", "20", "--epochs", "1", "-q", "-o", path))
    assert_ok(run("train", "--demo", "sine", "--epochs", "2", "--resume", "-q", "-o", path))
    assert engine.read_metadata(path)["trainer"]["epoch"] == 2
