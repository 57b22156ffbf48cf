"""Sweeps on panels and over data options (issue 30, items 1 and 2): `bptt sweep` on every
panel form, the data prepared once per data setting, the objective (the validation loss
averaged over series, or --metric in original units) and what ranks the trials, data
options that change the loss's units, the default space, --resume on other panel data."""
import csv
import json
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from click.testing import CliRunner

import engine
import engine.sweep
import engine.sweep.trial
from cli import main
from cli_checks import assert_bad_input, snapshot
from engine.forecasting.prepare import prepare
from engine.sweep.default_space import default_space

pytest.importorskip("optuna")

LENGTHS = (60, 90, 400)          # three short hourly series of different scales
TINY = ["--hidden", "4", "--epochs", "1", "--k1", "5", "--streams", "2", "-q"]
LIBRARY_TINY = dict(hidden=4, k1=5, streams=2, epochs=1)
START = np.datetime64("2024-01-01T00:00", "ns")


def series_values(index, length):
    steps = np.arange(length)
    return (10.0 ** index) * (np.sin(steps / (3 + index)) + 0.1 * np.cos(steps * 1.7))


def hours(length):
    return START + np.arange(length) * np.timedelta64(1, "h")


@pytest.fixture(scope="module")
def panel_files(tmp_path_factory):
    """The same panel as a long CSV, a wide CSV and a directory of one CSV per series."""
    root = tmp_path_factory.mktemp("panels")
    (root / "files").mkdir()
    longest = max(LENGTHS)
    ids, times, values, wide = [], [], [], {"time": hours(longest)}
    for index, length in enumerate(LENGTHS):
        name, series = f"s{index}", series_values(index, length)
        ids += [name] * length
        times.append(hours(length))
        values.append(series)
        pa_csv.write_csv(pa.table({"time": hours(length), "value": series}), root / "files" / f"{name}.csv")
        wide[name] = np.r_[np.full(longest - length, np.nan), series]   # wide: each series ends last
    pa_csv.write_csv(pa.table({"id": ids, "time": np.concatenate(times), "value": np.concatenate(values)}),
                     root / "long.csv")
    pa_csv.write_csv(pa.table(wide), root / "wide.csv")
    return root


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], prog_name="bptt")


def assert_ok(result):
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"


def read_rows(directory):
    with open(os.path.join(directory, "results.csv"), newline="") as file:
        return list(csv.DictReader(file))


FORMS = {"long": ("long.csv", "--id-column", "id"), "wide": ("wide.csv", "--series-columns", "s0,s1,s2"),
         "directory": ("files",), "glob": ("files/*.csv",)}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_a_sweep_runs_on_each_panel_form_and_best_npz_evaluates_per_series(panel_files, tmp_path, form):
    data, *reading = FORMS[form]
    source = str(panel_files / data)
    out = tmp_path / "sw"
    assert_ok(run("sweep", source, *reading, "--space", "lr=1e-3,1e-2", "--sampler", "grid", "--trials", 2,
                  "--no-prune", *TINY, "-o", out))
    rows = read_rows(out)
    assert len(rows) == 2 and all(row["state"] == "complete" for row in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objective"]["name"] == "val_loss" and "mean over series" in summary["objective"]["description"]
    metadata = engine.read_metadata(out / "best.npz")
    assert metadata["user"]["data"]["ids"] == ["s0", "s1", "s2"]
    # the checkpoint reads its panel as train's do: evaluate needs no reading options again
    evaluated = run("evaluate", out / "best.npz", source, "--json")
    assert_ok(evaluated)
    assert [record["id"] for record in json.loads(evaluated.stdout)["series"]] == ["s0", "s1", "s2"]


def test_a_sweep_of_the_sensors_demo(tmp_path):
    out = tmp_path / "sw"
    assert_ok(run("sweep", "--demo", "sensors", "--space", "lr=1e-2", "--trials", 1, *TINY, "-o", out))
    assert len(engine.read_metadata(out / "best.npz")["user"]["data"]["ids"]) == 50


def counting(monkeypatch, name):
    """Count the calls of engine.sweep.trial's `name` (a data preparation) by data options."""
    calls = []
    original = getattr(engine.sweep.trial, name)

    def counted(*args, **options):
        calls.append(options.get("streams"))
        return original(*args, **options)

    monkeypatch.setattr(engine.sweep.trial, name, counted)
    return calls


def test_panel_data_is_prepared_once_per_data_setting_not_once_per_trial(panel_files, tmp_path, monkeypatch):
    calls = counting(monkeypatch, "prepare")
    outcome = engine.sweep.run(str(panel_files / "files"), {"streams": [2, 3], "hidden": [4, 5], "lr": [1e-3, 1e-2]},
                               trials=8, seeds=2, sampler="grid", prune=False, workers=2,
                               output_dir=tmp_path / "sw", k1=5, epochs=1)
    assert len(outcome["results"]) == 16 and all(row["state"] == "complete" for row in outcome["results"])
    assert sorted(calls) == [2, 3]   # 8 trials x 2 seeds, 2 data settings: 2 preparations


def test_a_single_series_is_prepared_once_per_data_setting_too(tmp_path, monkeypatch):
    calls = counting(monkeypatch, "prepare")
    engine.sweep.run(np.sin(np.arange(300) / 4), {"streams": [2, 4], "lr": [1e-3, 1e-2]}, trials=4,
                     sampler="grid", prune=False, output_dir=tmp_path / "sw", hidden=4, k1=5, epochs=1)
    assert sorted(calls) == [2, 4]


def per_series_losses(model, data):
    """Each series' mean loss on its validation tail, by the trainer's own evaluation."""
    trainer = engine.Trainer(model)
    return [trainer.evaluate(data.x_val[:, [i]], data.y_val[:, [i]]) for i in range(data.x_val.shape[1])]


def test_the_default_objective_on_a_panel_is_the_mean_over_series_of_each_series_loss(panel_files, tmp_path):
    outcome = engine.sweep.run(str(panel_files / "long.csv"), {"lr": [1e-2]}, trials=1, output_dir=tmp_path / "sw",
                               id_column="id", **LIBRARY_TINY)
    best = outcome["summary"]["best"]
    model, _ = engine.load(tmp_path / "sw" / "best.npz")
    data = prepare(str(panel_files / "long.csv"), panel=True, id_column="id", streams=2, val_fraction=0.1)
    losses = per_series_losses(model, data)
    assert best["score"] == pytest.approx(np.mean(losses), rel=1e-5)
    # the pooled loss (what pruning sees) weighs the long tails more: not the objective
    pooled = engine.Trainer(model).evaluate(data.x_val, data.y_val)
    assert best["val_loss"] == pytest.approx(pooled, rel=1e-5)
    assert not math.isclose(np.mean(losses), pooled, rel_tol=1e-3)


def test_metric_on_a_panel_scores_the_validation_tails_in_original_units_and_ranks_by_it(panel_files, tmp_path):
    out = tmp_path / "sw"
    result = run("sweep", panel_files / "long.csv", "--id-column", "id", "--metric", "mase", "--no-prune",
                 "--space", "lr=1e-3,3e-3,1e-2,3e-2", "--sampler", "grid", "--trials", 4, "--seeds", 2, *TINY,
                 "-o", out)
    assert_ok(result)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objective"]["name"] == "mase" and "original units" in summary["objective"]["description"]
    rows = read_rows(out)
    means = {}
    for row in rows:
        means.setdefault(int(row["trial"]), []).append(float(row["score"]))
    means = {trial: np.mean(scores) for trial, scores in means.items()}
    assert summary["best"]["trial"] == min(means, key=means.get)
    assert summary["best"]["score"] == pytest.approx(means[summary["best"]["trial"]])
    # the score of best.npz's seed, by evaluate on each series' validation tail: the last
    # round(0.1 * (T_i - 1)) targets of series i (horizon 1), MASE against persistence
    seed = engine.read_metadata(out / "best.npz")["user"]["sweep"]["seed"]
    per_series = [engine.evaluate_series(str(out / "best.npz"), str(panel_files / "long.csv"), series_id=f"s{i}",
                                         start=-round(0.1 * (length - 1)))["mase"]
                  for i, length in enumerate(LENGTHS)]
    assert summary["best"]["score_per_seed"][str(seed)] == pytest.approx(np.mean(per_series), rel=1e-6)


def test_progress_lines_name_the_metric(panel_files, tmp_path):
    result = run("sweep", panel_files / "long.csv", "--id-column", "id", "--metric", "smape", "--space", "lr=1e-2",
                 "--trials", 1, *TINY[:-1], "-o", tmp_path / "sw")
    assert_ok(result)
    trial_lines = [line for line in result.stderr.splitlines() if line.startswith("trial ")]
    assert len(trial_lines) == 1 and " smape " in trial_lines[0]
    assert result.stderr.splitlines()[0] == ("objective: smape on the validation tails in original units, mean over "
                                             "series (pruning on the validation loss)")
    assert "smape" in result.stderr.splitlines()[-1] and "Best:" in result.stderr.splitlines()[-1]


@pytest.mark.parametrize("space", ["difference=false,true", "scale=series,global"])
def test_settings_that_change_the_loss_units_need_a_metric_and_no_pruning(panel_files, tmp_path, monkeypatch, space):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    common = ["sweep", panel_files / "long.csv", "--id-column", "id", "--space", space, *TINY, "-o", "sw"]
    assert_bad_input(run(*common), "--metric", "do not compare")
    assert_bad_input(run(*common, "--metric", "rmse"), "--no-prune")
    assert snapshot(tmp_path) == before
    assert_ok(run(*common, "--metric", "rmse", "--no-prune", "--sampler", "grid", "--trials", 2))
    rows = read_rows(tmp_path / "sw")
    name = space.partition("=")[0]
    assert len({row[name] for row in rows}) == 2 and all(math.isfinite(float(row["score"])) for row in rows)


def test_the_default_space_is_sized_to_the_data(panel_files, tmp_path):
    # the documented rule: k1 up to a tenth of the shortest training part or K1_REACH (60),
    # whichever is larger, at most half that part; from min(10, that // 2)
    assert default_space([10_000], 0.1, ())["k1"] == "10..200:log"
    assert default_space([300, 5000], 0.1, ())["k1"] == "10..60:log"   # holds the defaults' k1 (about 50)
    assert default_space([5000], 0.1, ())["k1"] == "10..200:log"
    assert default_space([60], 0.1, ())["k1"] == "10..27:log"          # at most half the training part
    assert default_space([8], 0.1, ())["k1"] == "2..3:log"
    assert set(default_space([1000], 0.1, ("lr", "k2"))) == {"hidden", "layers", "dropout"}
    assert "dropout" not in default_space([1000], 0.1, {"layers": 1})  # nothing between layers to drop
    assert default_space([1000], 0.1, {"layers": 3})["dropout"] == [0, 0.1, 0.3]
    out = tmp_path / "sw"
    assert_ok(run("sweep", panel_files / "files", "--trials", 2, "--epochs", 1, "--streams", 2, "-q", "-o", out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["space"] == {"lr": "0.001..0.03:log", "hidden": "16,32,64", "layers": "1,2",
                                "dropout": "0.0,0.1,0.3", "k1": "10..27:int:log"}
    assert (out / "best.npz").exists()
    rows = read_rows(out)
    assert all(10 <= int(row["k1"]) <= 27 and row["hidden"] in ("16", "32", "64") for row in rows)


def test_the_default_space_from_python_leaves_out_what_is_fixed(tmp_path):
    outcome = engine.sweep.run(np.sin(np.arange(400) / 4), trials=2, output_dir=tmp_path / "sw", hidden=4, epochs=1,
                               streams=2)
    assert set(outcome["summary"]["space"]) == {"lr", "layers", "dropout", "k1"}
    assert outcome["summary"]["space"]["k1"] == "10..60:int:log"   # K1_REACH: 400 * 0.9 // 10 is less
    assert outcome["summary"]["fixed"]["hidden"] == 4


def test_resume_on_another_panel_of_files_is_refused(panel_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = tmp_path / "files"
    files.mkdir()
    for path in (panel_files / "files").iterdir():
        (files / path.name).write_bytes(path.read_bytes())
    args = ["sweep", "files", "--space", "lr=1e-3,1e-2", "--sampler", "grid", *TINY, "-o", "sw"]
    assert_ok(run(*args, "--trials", 1))
    assert [entry["path"] for entry in json.loads((tmp_path / "sw" / "data.json").read_text())["files"]] == \
        ["s0.csv", "s1.csv", "s2.csv"]
    # a changed file
    original = (files / "s1.csv").read_bytes()
    pa_csv.write_csv(pa.table({"time": hours(LENGTHS[1]), "value": series_values(1, LENGTHS[1]) + 1.0}),
                     files / "s1.csv")
    before = snapshot(tmp_path)
    assert_bad_input(run(*args, "--trials", 2, "--resume"), "other data", "s1.csv")
    assert snapshot(tmp_path) == before
    # a file more
    (files / "s1.csv").write_bytes(original)
    (files / "s3.csv").write_bytes((files / "s0.csv").read_bytes())
    assert_bad_input(run(*args, "--trials", 2, "--resume"), "other data", "s3.csv")
    # the same files again: it resumes
    (files / "s3.csv").unlink()
    assert_ok(run(*args, "--trials", 2, "--resume"))
    assert len(read_rows(tmp_path / "sw")) == 2


def test_metric_on_a_single_series_scores_its_validation_tail_as_evaluate_does(tmp_path):
    values = np.sin(np.arange(500) / 6) * 40 + 100
    outcome = engine.sweep.run(values, {"lr": [1e-2]}, trials=1, metric="rmse", output_dir=tmp_path / "sw",
                               **LIBRARY_TINY)
    best = outcome["summary"]["best"]
    tail = round(0.1 * (len(values) - 1))   # the validation targets: the last tenth of the framed rows
    evaluated = engine.evaluate_series(str(tmp_path / "sw" / "best.npz"), values, start=len(values) - tail)
    assert evaluated["steps"] == tail
    assert best["score"] == pytest.approx(evaluated["rmse"], rel=1e-6)
    assert outcome["summary"]["objective"]["name"] == "rmse"


def test_resume_keeps_the_metric(panel_files, tmp_path):
    settings = dict(space={"lr": [1e-3, 1e-2]}, sampler="grid", output_dir=tmp_path / "sw", id_column="id",
                    **LIBRARY_TINY)
    engine.sweep.run(str(panel_files / "long.csv"), trials=1, metric="mase", **settings)
    with pytest.raises(ValueError, match="metric"):
        engine.sweep.run(str(panel_files / "long.csv"), trials=2, metric="smape", resume=True, **settings)
    resumed = engine.sweep.run(str(panel_files / "long.csv"), trials=2, metric="mase", resume=True, **settings)
    assert len(resumed["configurations"]) == 2


def test_metric_on_a_differenced_panel_scores_each_series_tail_in_levels(panel_files, tmp_path):
    outcome = engine.sweep.run(str(panel_files / "long.csv"), {"lr": [1e-2]}, trials=1, metric="rmse",
                               output_dir=tmp_path / "sw", id_column="id", difference=True, **LIBRARY_TINY)
    # differencing drops each series' first row: round(0.1 * (T_i - 2)) validation targets
    per_series = [engine.evaluate_series(str(tmp_path / "sw" / "best.npz"), str(panel_files / "long.csv"),
                                         series_id=f"s{i}", start=-round(0.1 * (length - 2)))
                  for i, length in enumerate(LENGTHS)]
    assert [record["steps"] for record in per_series] == [round(0.1 * (length - 2)) for length in LENGTHS]
    assert outcome["summary"]["best"]["score"] == pytest.approx(np.mean([r["rmse"] for r in per_series]), rel=1e-6)


@pytest.mark.parametrize("options, error, fragment", [
    (dict(metric="mape"), ValueError, "metric"),
    (dict(metric="mase", season=0), ValueError, "season"),
    (dict(season=1.5), TypeError, "season"),
])
def test_bad_metric_or_season_is_refused_before_anything_is_written(tmp_path, options, error, fragment):
    with pytest.raises(error, match=fragment):
        engine.sweep.run(np.sin(np.arange(300) / 4), {"lr": [1e-2]}, output_dir=tmp_path / "sw", **options)
    assert not (tmp_path / "sw").exists()


@pytest.mark.parametrize("args, fragment", [
    (["nothere/*.csv"], "no data files found"),
    (["long.csv", "--id-column", "meter"], "no column 'meter'"),
    (["long.csv", "--id-column", "id", "--series-columns", "s0"], "not both"),
    (["files", "--id-column", "id"], "names files of one series each"),
])
def test_bad_panel_sources_give_one_error_line_and_write_nothing(panel_files, tmp_path, monkeypatch, args, fragment):
    for name in ("long.csv", "files"):
        os.symlink(panel_files / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    assert_bad_input(run("sweep", *args, "--space", "lr=1e-2", *TINY, "-o", "sw"), fragment)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("space, prepared", [
    ({"streams": "2..5:log"}, {2, 3, 4, 5}),                          # an integer range, log or not
    ({"streams": [2, 3], "difference": [False, True]}, {2, 3}),       # 4 settings
    ({"streams": "1..40"}, set()),                                    # more than 16: left to the trials
    ({"streams": "1..9", "difference": [False, True]}, set()),        # 18
    ({"lr": [1e-3, 1e-2]}, set()),                                    # no data setting swept
])
def test_a_ray_sweep_prepares_its_data_settings_ahead_up_to_sixteen(monkeypatch, space, prepared):
    from engine.sweep.space import default_settings, parse_space, train_arguments

    calls = counting(monkeypatch, "prepare")
    settings = {**default_settings(), "streams": 8}
    ahead = engine.sweep.trial.Prepared(np.sin(np.arange(400) / 4), train_arguments(settings)["data_options"])
    ahead.prepare_ahead(settings, parse_space(space))
    assert calls[0] == 8 and set(calls[1:]) == prepared
    assert len(calls) == 1 + len(prepared) * (2 if "difference" in space else 1)


def test_a_new_sweep_folder_whose_files_the_panel_would_read_is_refused(panel_files, tmp_path, monkeypatch):
    # -o nested/sw with the panel nested/*/*.csv: results.csv would join the panel's series
    for name in ("a", "b"):
        (tmp_path / "nested" / name).mkdir(parents=True)
        (tmp_path / "nested" / name / f"{name}.csv").write_bytes((panel_files / "files" / "s0.csv").read_bytes())
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    assert_bad_input(run("sweep", "nested/*/*.csv", "--space", "lr=1e-2", *TINY, "-o", "nested/sw"),
                     "results.csv", "among the files of the input")
    assert snapshot(tmp_path) == before
    assert_ok(run("sweep", "nested/*/*.csv", "--space", "lr=1e-2", "--trials", 1, *TINY, "-o", "sw"))


@pytest.mark.parametrize("form", ["long", "directory"])
def test_best_npz_holds_the_data_recipe_train_writes_for_the_same_options(panel_files, tmp_path, form):
    data, *reading = FORMS[form]
    source = str(panel_files / data)
    options = [*reading, "--time-column", "none", "--targets", "value", "--hidden", "4", "--epochs", "1",
               "--k1", "5", "--streams", "2", "-q"]
    assert_ok(run("sweep", source, *options, "--space", "lr=1e-2", "--trials", 1, "-o", tmp_path / "sw"))
    assert_ok(run("train", source, *options, "--lr", "1e-2", "-o", tmp_path / "train.npz"))
    swept = engine.read_metadata(tmp_path / "sw" / "best.npz")["user"]["data"]
    trained = engine.read_metadata(tmp_path / "train.npz")["user"]["data"]
    assert swept == trained and swept["time_column"] is False
