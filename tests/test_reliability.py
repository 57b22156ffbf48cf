"""Issue 10, data safety and reliability: checkpoint metadata validated as a whole, robust
normalisation statistics and strict JSON, divergence advice in CLI terms, the bounded
update history, clear errors of fit / partial_fit, memory estimates and --resume."""
import json

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
