"""Local sweeps (issue 14): `bptt sweep` and engine.sweep.run on tiny trials. The outputs
of the issue's Done-when command, pruning that really stops trials, seeds, resume after
an interruption, every train option a fixed setting, bad specs (one Error line, exit 2,
nothing written) and the missing-extra messages."""
import csv
import json
import math
import os
import sys

# Before Ray is imported (test of an unreachable address): loopback stays loopback.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"

import numpy as np
import pytest
from click.testing import CliRunner

import engine
import engine.sweep
from cli import main, sweep, train
from engine.demos import mackey_glass
from engine.options import OPTIONS
from engine.sweep.space import NOT_SETTINGS

pytest.importorskip("optuna")

SERIES = mackey_glass(length=1500)        # short: a trial of 3 epochs takes ~0.1 s
TINY = dict(hidden=8, k1=20, streams=4)   # fixed settings of the library sweeps
OUTPUTS = ("results.csv", "summary.json", "best.npz", "sensitivity.png")


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], prog_name="bptt")


def assert_ok(result):
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"


def assert_one_error(result, *fragments):
    assert result.exit_code == 2, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def read_rows(directory):
    with open(directory / "results.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_done_when_command_writes_the_four_outputs_with_one_row_per_trial_and_seed(tmp_path):
    out = tmp_path / "sw"
    result = run("sweep", "--demo", "mackey-glass", "--space", "lr=1e-3..3e-2:log", "--space", "hidden=8,16,32",
                 "--trials", 6, "--seeds", 2, "--epochs", 6, "-o", out)
    assert_ok(result)
    assert sorted(p.name for p in out.iterdir() if p.name in OUTPUTS) == sorted(OUTPUTS)
    rows = read_rows(out)
    assert len(rows) == 12
    assert list(rows[0]) == ["trial", "lr", "hidden", "seed", "epochs", "best_val_loss", "score", "state",
                             "seconds", "error"]
    assert {row["seed"] for row in rows} == {"0", "1"}
    # one series, the default objective: a seed's score is its best validation loss (its model restored)
    for row in rows:
        if row["state"] == "complete":
            assert float(row["score"]) == pytest.approx(float(row["best_val_loss"]), rel=1e-5)
        else:
            assert row["score"] == ""
    assert all(row["state"] in ("complete", "pruned") for row in rows)
    assert all(1e-3 <= float(row["lr"]) <= 3e-2 and row["hidden"] in ("8", "16", "32") for row in rows)
    # a progress line per finished trial on stderr, the best settings at the end
    assert len([line for line in result.stderr.splitlines() if line.startswith("trial ")]) == 6
    assert "Best: --lr" in result.stderr

    summary = json.loads((out / "summary.json").read_text())
    best = summary["best"]
    complete = {}
    for row in rows:
        if row["state"] == "complete":
            complete.setdefault(int(row["trial"]), []).append(float(row["best_val_loss"]))
    means = {trial: np.mean(losses) for trial, losses in complete.items()}
    assert best["trial"] == min(means, key=means.get)
    assert best["val_loss"] == pytest.approx(means[best["trial"]])
    assert best["val_loss_std"] == pytest.approx(np.std(complete[best["trial"]]))
    assert set(best["settings"]) == {"lr", "hidden"}
    if summary["importance"] is None:
        assert "completed" in summary["importance_note"]
    else:
        assert set(summary["importance"]) <= {"lr", "hidden"}
        assert sum(summary["importance"].values()) == pytest.approx(1.0)

    # best.npz is a checkpoint evaluate, forecast and info use as they are, with the best settings
    metadata = engine.read_metadata(out / "best.npz")
    assert metadata["model"]["hidden_size"] == best["settings"]["hidden"]
    assert metadata["trainer"]["config"]["optimizer"]["lr"] == pytest.approx(best["settings"]["lr"])
    assert metadata["user"]["sweep"]["trial"] == best["trial"]
    evaluated = run("evaluate", out / "best.npz", "--demo", "mackey-glass", "--json")
    assert_ok(evaluated)
    assert json.loads(evaluated.stdout)["mse"] < json.loads(evaluated.stdout)["baseline_mse"]
    assert_ok(run("forecast", out / "best.npz", "--demo", "mackey-glass", "--steps", 3))
    # the model restored is the best epoch's: its validation loss is the one reported
    model, trainer = engine.load(out / "best.npz")
    seed = metadata["user"]["sweep"]["seed"]
    assert min(record["val_loss"] for record in trainer.history.epochs) == pytest.approx(
        best["val_loss_per_seed"][str(seed)])


def test_pruning_stops_poor_trials_early_and_no_prune_runs_every_epoch(tmp_path):
    settings = dict(space={"lr": "1e-4..1e-1:log"}, trials=8, epochs=4, sampler="random", workers=1, **TINY)
    pruned = engine.sweep.run(SERIES, output_dir=tmp_path / "pruned", prune=True, **settings)
    full = engine.sweep.run(SERIES, output_dir=tmp_path / "full", prune=False, **settings)
    stopped = [row for row in pruned["results"] if row["state"] == "pruned"]
    assert stopped and all(row["epochs"] < 4 for row in stopped)
    assert sum(row["epochs"] for row in pruned["results"]) < sum(row["epochs"] for row in full["results"])
    assert all(row["epochs"] == 4 and row["state"] == "complete" for row in full["results"])
    # the same sampler seed proposes the same configurations: only the pruner differs
    assert [row["lr"] for row in pruned["results"]] == [row["lr"] for row in full["results"]]
    assert read_rows(tmp_path / "pruned")[stopped[0]["trial"]]["state"] == "pruned"


def test_seeds_give_one_row_each_and_the_mean_and_spread(tmp_path):
    outcome = engine.sweep.run(SERIES, {"hidden": [4, 8]}, trials=2, seeds=3, epochs=2, sampler="grid",
                               prune=False, output_dir=tmp_path / "sw", seed=5, k1=20, streams=4)
    assert sorted(row["hidden"] for row in outcome["results"]) == [4, 4, 4, 8, 8, 8]
    for configuration in outcome["configurations"]:
        losses = [row["best_val_loss"] for row in configuration["rows"]]
        assert [row["seed"] for row in configuration["rows"]] == [5, 6, 7]
        assert len(set(losses)) == 3  # different initialisations, different results
        assert configuration["mean_val_loss"] == pytest.approx(np.mean(losses))
        assert configuration["std_val_loss"] == pytest.approx(np.std(losses))


def test_an_interrupted_sweep_resumes_to_the_number_of_trials_asked(tmp_path):
    out = tmp_path / "sw"

    class Interrupt:  # the progress stream: Ctrl-C after the second finished trial
        lines = 0

        def isatty(self):
            return False

        def write(self, text):
            if text.startswith("trial "):
                Interrupt.lines += 1
                if Interrupt.lines == 2:
                    raise KeyboardInterrupt

        def flush(self):
            pass

    options = dict(space={"lr": "1e-3..1e-1:log", "layers": "1..2"}, trials=5, epochs=2, workers=1, **TINY)
    with pytest.raises(KeyboardInterrupt):
        engine.sweep.run(SERIES, output_dir=out, progress=Interrupt(), **options)
    before = read_rows(out)
    assert len(before) in (1, 2)  # written after each trial, so the interrupted folder is current

    refused = run("sweep", "--space", "lr=1e-3..1e-1:log", "-o", out, "--demo", "sine")
    assert_one_error(refused, "not empty", "--resume")
    with pytest.raises(ValueError, match="other settings"):
        engine.sweep.run(SERIES, output_dir=out, resume=True, **dict(options, epochs=3))

    outcome = engine.sweep.run(SERIES, output_dir=out, resume=True, **options)
    rows = read_rows(out)
    assert len(outcome["configurations"]) == 5 and len(rows) == 5
    assert rows[:len(before)] == before
    assert len({row["trial"] for row in rows}) == 5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == 5
    assert engine.read_metadata(out / "best.npz")["user"]["sweep"]["trial"] == summary["best"]["trial"]


def test_every_train_option_is_a_fixed_setting_and_takes_effect(tmp_path):
    train_names = set(OPTIONS) - set(NOT_SETTINGS)  # every training option, as train has it too
    assert train_names <= {param.name for param in train.params}
    assert train_names <= {param.name for param in sweep.params}
    out = tmp_path / "sw"
    series = tmp_path / "series.csv"
    np.savetxt(series, SERIES.values, header="value", comments="")
    result = run("sweep", series, "--space", "lr=1e-3,1e-2", "--sampler", "grid", "--cell", "gru",
                 "--hidden", 6, "--k1", 10, "--k2", 20, "--clip-norm", 0.5, "--streams", 4, "--epochs", 2,
                 "--trials", 2, "-o", out, "--json")
    assert_ok(result)
    record = json.loads(result.stdout)
    assert len(record["results"]) == 2 and record["summary"]["fixed"]["cell"] == "gru"
    metadata = engine.read_metadata(out / "best.npz")
    assert (metadata["model"]["cell"], metadata["model"]["hidden_size"]) == ("gru", 6)
    config = metadata["trainer"]["config"]
    assert (config["k1"], config["k2"], config["clip_norm"], config["shards"]) == (10, 20, 0.5, 1)
    assert metadata["user"]["data"]["streams"] == 4


def test_categorical_flag_and_integer_dimensions(tmp_path):
    outcome = engine.sweep.run(SERIES, {"cell": "lstm,gru,rnn", "init": ["default", "xavier"], "layers": "1..2:int"},
                               trials=3, epochs=1, prune=False, output_dir=tmp_path / "sw", **TINY)
    for row in outcome["results"]:
        assert row["cell"] in ("lstm", "gru", "rnn") and row["init"] in ("default", "xavier")
        assert row["layers"] in (1, 2)
    assert (tmp_path / "sw" / "sensitivity.png").stat().st_size > 0


def test_an_invalid_combination_fails_its_trial_not_the_sweep(tmp_path):
    outcome = engine.sweep.run(SERIES, {"k2": [10, 40]}, trials=2, sampler="grid", epochs=1, prune=False,
                               output_dir=tmp_path / "sw", hidden=8, k1=20, streams=4)
    states = {row["k2"]: row for row in outcome["results"]}
    assert states[10]["state"] == "failed" and "k2 must be >= k1" in states[10]["error"]
    assert states[40]["state"] == "complete"
    assert outcome["best"]["values"] == {"k2": 40}
    # --json stays strict JSON with a failed trial (no NaN)
    result = run("sweep", "--demo", "sine", "--space", "k2=10,40", "--sampler", "grid", "--trials", 2,
                 "--epochs", 1, "--hidden", 4, "--k1", 20, "-o", tmp_path / "cli", "--json", "--no-prune")
    assert_ok(result)
    record = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} in --json output"))
    rows = {row["k2"]: row for row in record["results"]}
    assert (rows[10]["state"], rows[40]["state"]) == ("failed", "complete")
    assert rows[10]["best_val_loss"] is None


@pytest.mark.parametrize("space, fragments", [
    ("lr=abc", ["--space lr=abc", "not a valid float"]),
    ("lr", ["expected NAME=SPEC"]),
    ("learning-rate=0.1", ["unknown setting", "clip-norm"]),
    ("lr=1e-1..1e-3", ["the range is empty"]),
    ("lr=1e-2..1e-2:log", ["the range is empty"]),
    ("lr=0..1e-2:log", ["lr=0..1e-2:log"]),
    ("hidden=0,8", ["hidden=0,8", "0"]),
    ("cell=1..3", ["--cell takes one of", "give a list"]),
    ("cell=lstm,cnn", ["cnn"]),
    ("seed=0,1", ["--seeds"]),
    ("val-fraction=0.1,0.2", ["cannot be swept"]),
    ("lr=1e-3..1e-1:cubic", ["unknown range modifier"]),
    ("hidden=8,,16", ["empty value"]),
])
def test_bad_specs_give_one_error_line_and_write_nothing(tmp_path, space, fragments):
    out = tmp_path / "sw"
    assert_one_error(run("sweep", "--demo", "sine", "--space", space, "-o", out), *fragments)
    assert not out.exists()


def test_bad_sweep_settings_give_one_error_line(tmp_path):
    out = tmp_path / "sw"
    cases = [
        (["--space", "lr=1e-3,1e-2", "--cell", "lstm", "--nonlinearity", "relu"], ["--nonlinearity"]),
        (["--space", "lr=1e-3,1e-2", "--val-fraction", "0"], ["validation"]),
        (["--space", "lr=1e-3..1e-2:log", "--sampler", "grid"], ["grid", "list"]),
        (["--space", "lr=1e-3,1e-2", "--resume"], ["no sweep to resume"]),
        (["--space", "lr=1e-3,1e-2", "--lr", "0.1"], ["both swept"]),
        (["--sampler", "grid"], ["grid", "default space", "--space"]),   # no --space: the default has ranges
        (["--lr", "0.01", "--hidden", "8", "--layers", "1", "--k1", "20"], ["no setting to sweep"]),
    ]
    for args, fragments in cases:
        assert_one_error(run("sweep", "--demo", "sine", "-o", out, *args), *fragments)
        assert not out.exists()
    (tmp_path / "file").write_text("x")
    assert_one_error(run("sweep", "--demo", "sine", "--space", "lr=1e-3,1e-2", "-o", tmp_path / "file"),
                     "is a file")


def test_without_the_extras_sweep_names_the_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    assert_one_error(run("sweep", "--demo", "sine", "--space", "lr=1e-3,1e-2", "-o", tmp_path / "a"),
                     "pip install 'bptt[sweep]'")
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "ray", None)
    assert_one_error(run("sweep", "--demo", "sine", "--space", "lr=1e-3,1e-2", "--ray", "auto",
                         "-o", tmp_path / "b", "--epochs", 1, "--hidden", 4), "pip install 'bptt[ray]'")
    assert not (tmp_path / "a").exists()


def test_an_unreachable_ray_address_fails_fast(tmp_path):
    pytest.importorskip("ray")
    import time

    started = time.perf_counter()
    result = run("sweep", "--demo", "sine", "--space", "lr=1e-3,1e-2", "--ray", "127.0.0.1:1",
                 "-o", tmp_path / "sw", "--epochs", 1, "--hidden", 4)
    assert_one_error(result, "127.0.0.1:1", "cannot reach the Ray cluster")
    assert time.perf_counter() - started < 10
    assert_one_error(run("sweep", "--demo", "sine", "--space", "lr=1e-3,1e-2", "--ray", "nowhere",
                         "-o", tmp_path / "sw"), "HOST:PORT")


def test_results_csv_rows_hold_nan_free_numbers_for_complete_rows(tmp_path):
    engine.sweep.run(SERIES, {"lr": [1e-3, 1e-2]}, trials=2, sampler="grid", epochs=1, prune=False,
                     output_dir=tmp_path / "sw", **TINY)
    for row in read_rows(tmp_path / "sw"):
        assert row["state"] == "complete" and math.isfinite(float(row["best_val_loss"]))
        assert float(row["seconds"]) > 0 and row["epochs"] == "1"


def test_library_sweep_takes_python_values_of_the_training_options(tmp_path):
    """Fixed settings as engine.train_series takes them (a list of columns, a bool), checked by
    engine.options like bptt train's; a bad one fails before any trial."""
    series = np.c_[SERIES.values, np.roll(SERIES.values, 3)]
    outcome = engine.sweep.run(series, {"hidden": [4, 8]}, trials=2, epochs=1, prune=False, sampler="grid",
                               output_dir=tmp_path / "sw", inputs=["0", 1], targets=["0"], k1=20, streams=4)
    assert [row["state"] for row in outcome["results"]] == ["complete", "complete"]
    assert engine.read_metadata(tmp_path / "sw" / "best.npz")["user"]["data"]["inputs"] == ["0", "1"]
    with pytest.raises(engine.sweep.SweepError, match=r"streams \(--streams\): 0 is not in the range x>=1"):
        engine.sweep.run(series, {"hidden": [4]}, trials=1, epochs=1, output_dir=tmp_path / "bad", streams=0)
    assert not (tmp_path / "bad").exists()
