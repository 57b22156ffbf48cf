"""Issue 10, data safety and reliability: checkpoint metadata validated as a whole, robust
normalisation statistics and strict JSON, divergence advice in CLI terms, the bounded
update history, clear errors of fit / partial_fit, memory estimates and --resume."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import engine
from cli import main
from engine.checkpoint import CheckpointError
from engine.data import Normalizer

FAST = ["--hidden", "4", "--k1", "20", "--epochs", "1", "-q"]


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], prog_name="bptt")


def error_line(result, code=2):
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("trained") / "m.npz"
    result = run("train", "--demo", "sine", *FAST, "-o", path)
    assert result.exit_code == 0, result.stderr
    return path


def rewrite(source, target, change):
    """Copy the checkpoint `source` to `target` after change(meta) of its metadata."""
    with np.load(source, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(str(arrays["metadata"]))
    change(meta)
    arrays["metadata"] = np.array(json.dumps(meta))
    np.savez(target, **arrays)
    return target


# ---------------------------------------------------------------- 8: metadata schema

METADATA_DAMAGE = {
    "model.cell missing": (lambda m: m["model"].pop("cell"), "metadata.model.cell is missing"),
    "optimizer without lr": (lambda m: m["trainer"]["config"]["optimizer"].pop("lr"),
                             "metadata.trainer.config.optimizer.lr is missing"),
    "optimizer without betas": (lambda m: m["trainer"]["config"]["optimizer"].pop("betas"),
                                "metadata.trainer.config.optimizer.betas is missing"),
    "user not a dict": (lambda m: m.update(user=[1]), "metadata.user must be a dict"),
    "hidden a string": (lambda m: m["model"].update(hidden_size="8"), "metadata.model.hidden_size must be an integer"),
    "epoch without loss": (lambda m: m["trainer"]["epochs"][0].pop("loss"), "metadata.trainer.epochs[0].loss is missing"),
    "recipe without targets": (lambda m: m["user"]["data"].pop("targets"), "metadata.user.data.targets is missing"),
    "norm not a list": (lambda m: m["user"]["data"]["input_norm"].update(mean=3), "input_norm.mean must be a list"),
}


@pytest.mark.parametrize("case", sorted(METADATA_DAMAGE))
def test_damaged_metadata_is_named_by_info_evaluate_and_forecast(trained, tmp_path, case):
    change, fragment = METADATA_DAMAGE[case]
    path = rewrite(trained, tmp_path / "damaged.npz", change)
    for args in (["info", path], ["info", path, "--json"], ["evaluate", path, "--demo", "sine"],
                 ["forecast", path, "--demo", "sine"]):
        line = error_line(run(*args))
        assert fragment in line and "does not match format bptt-checkpoint v1" in line, line


def test_several_problems_are_named_together(trained, tmp_path):
    def change(meta):
        meta["model"].pop("cell")
        meta["model"].pop("seed")
    with pytest.raises(CheckpointError, match="model.cell is missing; metadata.model.seed is missing"):
        engine.read_metadata(rewrite(trained, tmp_path / "two.npz", change))


# ---------------------------------------------------------------- 9: statistics and JSON

def test_normalisation_of_huge_values_is_finite_and_exact_for_ordinary_ones():
    huge = np.array([[1e300], [-1e300], [5e299], [np.nan]])
    norm = Normalizer.fit(huge)
    np.testing.assert_allclose(norm.mean, [np.mean([1e300, -1e300, 5e299])], rtol=1e-12)
    np.testing.assert_allclose(norm.std, [np.std([1, -1, 0.5]) * 1e300], rtol=1e-12)
    ordinary = np.random.default_rng(0).standard_normal((1000, 3)) * [1, 1e-3, 1e6]
    norm = Normalizer.fit(ordinary)
    assert np.array_equal(norm.mean, ordinary.mean(axis=0))  # scaling by powers of two is exact
    assert np.array_equal(norm.std, ordinary.std(axis=0))
    np.testing.assert_array_equal(Normalizer.fit(np.zeros((3, 1))).std, [1.0])


def test_huge_values_train_and_json_outputs_stay_valid_json(tmp_path):
    rng = np.random.default_rng(0)
    values = 1e300 * (np.sin(np.arange(400) / 5) + 0.1 * rng.standard_normal(400))
    data = tmp_path / "big.csv"
    np.savetxt(data, values, header="v", comments="")
    output = tmp_path / "big.npz"
    result = run("train", data, *FAST, "-o", output)
    assert result.exit_code == 0 and result.stderr == "", result.stderr   # no RuntimeWarning
    norm = engine.read_metadata(output)["user"]["data"]["target_norm"]
    assert np.all(np.isfinite(norm["std"])) and norm["std"][0] > 1e299
    for args in (["info", output, "--json"], ["evaluate", output, data, "--json"]):
        result = run(*args)
        assert result.exit_code == 0 and result.stderr == "", result.stderr
        assert "Infinity" not in result.stdout and "NaN" not in result.stdout
        parsed = json.loads(result.stdout)
    assert parsed["mse"] is None and parsed["mae"] > 1e299  # the squares overflow: null, documented


# ---------------------------------------------------------------- 11: divergence in CLI terms

def test_divergence_advice_names_cli_options_and_skip_goes_on(tmp_path):
    diverging = ["--demo", "sine", "--hidden", "4", "--k1", "20", "--epochs", "1", "--optimizer", "sgd",
                 "--lr", "1e30", "--clip-norm", "0", "-q"]
    line = error_line(run("train", *diverging, "-o", tmp_path / "a.npz"), code=1)
    assert "--lr" in line and "--on-divergence skip" in line, line
    assert "on_divergence=" not in line and "clip_norm" not in line, line
    assert not (tmp_path / "a.npz").exists()
    result = run("train", *diverging, "--on-divergence", "skip", "-o", tmp_path / "b.npz")
    assert result.exit_code == 0, result.stderr
    meta = engine.read_metadata(tmp_path / "b.npz")
    assert meta["trainer"]["config"]["on_divergence"] == "skip" and meta["trainer"]["skipped"] > 0


# ---------------------------------------------------------------- 15: bounded update history

def small_trainer(**options):
    model = engine.Model(cell="lstm", input_size=1, hidden_size=4, output_size=1, num_layers=2, seed=0)
    return engine.Trainer(model, k1=50, **options)


def stream(trainer, pieces, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(pieces):
        x = rng.standard_normal((50, 1, 1)).astype(np.float32)
        trainer.partial_fit(x, 0.5 * x)


def test_history_keeps_the_latest_updates_and_exact_counters(tmp_path):
    trainer = small_trainer(history_updates=7)
    stream(trainer, 20)
    assert trainer.step == 20 and [r["step"] for r in trainer.history.updates] == list(range(14, 21))
    engine.save(tmp_path / "t.npz", trainer.model, trainer)  # checkpoints store what is kept
    _, loaded = engine.load(tmp_path / "t.npz")
    assert loaded.history_updates == 7 and loaded.history.updates == trainer.history.updates
    stream(loaded, 1)
    assert [r["step"] for r in loaded.history.updates] == list(range(15, 22))
    none = small_trainer(history_updates=0)
    stream(none, 5)
    assert none.step == 5 and none.history.updates == []
    engine.save(tmp_path / "n.npz", none.model, none)
    assert engine.load(tmp_path / "n.npz")[1].step == 5
    assert small_trainer().history_updates == engine.trainer.HISTORY_UPDATES == 1000
    with pytest.raises(ValueError, match="history_updates must be an integer >= 0"):
        small_trainer(history_updates=-1)


RSS_SCRIPT = """
import json, os, sys
import numpy as np
sys.path.insert(0, {project!r})
import engine

def resident_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def stream(trainer, pieces, seed):
    rng = np.random.default_rng(seed)
    for _ in range(pieces):
        x = rng.standard_normal((50, 1, 1)).astype(np.float32)
        trainer.partial_fit(x, 0.5 * x)

growth = {{}}
for keep in ("default", None):  # the default bound, then unbounded to show what it prevents
    model = engine.Model(cell="lstm", input_size=1, hidden_size=4, output_size=1, num_layers=2, seed=0)
    options = {{}} if keep == "default" else {{"history_updates": keep}}
    trainer = engine.Trainer(model, k1=50, diagnostics=True, **options)
    stream(trainer, 1000, 0)  # warm-up: compiles, fills the default history bound
    before = resident_bytes()
    stream(trainer, 2000, 1)
    growth[str(keep)] = resident_bytes() - before
print(json.dumps(growth))
"""


def test_streaming_with_diagnostics_holds_its_memory_flat_by_default():
    """3,000 pieces with diagnostics (about 1 kB of records per update), in a fresh process:
    after the default history bound fills, resident memory stays flat; unbounded, it grows
    about 2 MB over the last 2,000 updates (which shows the measurement can see growth)."""
    project = os.path.dirname(os.path.dirname(os.path.abspath(engine.__file__)))
    result = subprocess.run([sys.executable, "-c", RSS_SCRIPT.format(project=project)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    growth = json.loads(result.stdout)
    assert growth["None"] > 1.0 * 2 ** 20, growth
    assert growth["default"] < 0.5 * 2 ** 20, growth


# ---------------------------------------------------------------- 16: fit and partial_fit

def test_fit_with_no_target_at_all_is_an_error_not_a_nan_loss():
    trainer = small_trainer()
    x = np.zeros((60, 2, 1), np.float32)
    with pytest.raises(ValueError, match="no target to learn from"):
        trainer.fit(x, np.full((60, 2, 1), np.nan, np.float32))
    assert trainer.step == 0 and trainer.epoch == 0


def test_partial_fit_with_another_batch_size_needs_reset_state():
    trainer = small_trainer()
    x = np.ones((50, 2, 1), np.float32)
    trainer.partial_fit(x, x)
    carried = trainer.state[0].copy()
    with pytest.raises(ValueError, match=r"x has 3 streams but the carried state has 2; call reset_state\(\)"):
        trainer.partial_fit(np.ones((50, 3, 1), np.float32), np.ones((50, 3, 1), np.float32))
    np.testing.assert_array_equal(trainer.state[0], carried)
    trainer.reset_state()
    assert trainer.partial_fit(np.ones((50, 3, 1), np.float32), np.ones((50, 3, 1), np.float32))["updates"] == 1


# ---------------------------------------------------------------- 6: --resume

def test_resume_refuses_conflicting_options_and_applies_lr_and_memory(tmp_path):
    output = tmp_path / "m.npz"
    assert run("train", "--demo", "sine", *FAST, "-o", output).exit_code == 0
    before = output.read_bytes()
    conflicts = {("--cell", "gru"): "--cell gru conflicts with the checkpoint's cell 'lstm'",
                 ("--targets", "1"): "--targets 1 conflicts with the checkpoint's targets ['value']",
                 ("--full-bptt",): "--full-bptt conflicts with the checkpoint's k1 20",
                 ("--optimizer", "sgd"): "--optimizer sgd conflicts with the checkpoint's optimizer 'adam'",
                 ("--schedule", "cosine"): "--schedule cosine conflicts with the checkpoint's schedule 'constant'",
                 ("--streams", "4"): "--streams 4 conflicts with the checkpoint's streams 8",
                 ("--clip-norm", "0"): "--clip-norm 0.0 conflicts with the checkpoint's clip norm 1.0"}
    for args, fragment in conflicts.items():
        line = error_line(run("train", "--demo", "sine", "--epochs", "2", "-q", "--resume", "-o", output, *args))
        assert fragment in line and "only --epochs, --patience, --lr and --memory may change" in line, line
        assert output.read_bytes() == before
    # the same values as stored are no conflict (re-running the command with --resume added)
    result = run("train", "--demo", "sine", *FAST, "--epochs", "2", "--targets", "0", "--lr", "0.01",
                 "--memory", "sqrt", "--resume", "-o", output)
    assert result.exit_code == 0, result.stderr
    meta = engine.read_metadata(output)["trainer"]
    assert meta["epoch"] == 2 and meta["config"]["optimizer"]["lr"] == 0.01 and meta["config"]["memory"] == "sqrt"


def test_resume_on_other_data_keeps_the_stored_normalisation(tmp_path):
    rng = np.random.default_rng(0)
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    np.savetxt(first, np.sin(np.arange(800) / 5) + 0.1 * rng.standard_normal(800), header="v", comments="")
    np.savetxt(second, 100 + 10 * np.sin(np.arange(800) / 5), header="v", comments="")
    output = tmp_path / "m.npz"
    assert run("train", first, *FAST, "--streams", "4", "-o", output).exit_code == 0
    stored = engine.read_metadata(output)["user"]["data"]
    model, trainer, data = engine.train_series(str(second), str(output), epochs=2, resume=True)
    kept = engine.read_metadata(output)["user"]["data"]
    assert (kept["input_norm"], kept["target_norm"]) == (stored["input_norm"], stored["target_norm"])
    refitted = engine.data.prepare_training_data(str(second), streams=4, val_fraction=0.1)
    raw = Normalizer.from_dict(refitted.metadata["target_norm"]).inverse_transform(refitted.y_train)
    np.testing.assert_allclose(data.y_train, Normalizer.from_dict(stored["target_norm"]).transform(raw), rtol=1e-12)
    assert data.y_train.mean() > 50  # in the first file's units, the second file is far above zero


# ---------------------------------------------------------------- 4: plots are written atomically

def test_a_plot_that_fails_mid_write_leaves_no_file(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    def failing_savefig(self, file, **options):
        assert options["format"] == "png"
        file.write(b"\x89PNG half a plot")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", failing_savefig)
    history = engine.History()
    history.updates = [{"step": 1, "loss": 1.0, "grad_norm": 1.0, "clipped": False, "lr": 0.1}]
    history.epochs = [{"epoch": 1, "loss": 1.0, "updates": 1, "seconds": 0.1}]
    (tmp_path / "curves.png").write_bytes(b"old plot")
    with pytest.raises(OSError, match="No space left on device"):
        engine.plot_training(history, tmp_path / "curves.png")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["curves.png"]
    assert (tmp_path / "curves.png").read_bytes() == b"old plot"
