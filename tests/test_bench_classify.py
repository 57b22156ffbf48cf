"""bench.classify: the data set read from the package's files, the packing of variable
lengths, the validation split, one tiny run, and its refusals. Skipped without sktime
(the bench extra), whose files it reads (it never imports sktime)."""
import json
import subprocess
import sys

import numpy as np
import pytest

import engine
from bench.classify_data import Scaler, data_directory, load, pack, read_ts, validation_rows

try:
    data_directory()
except ImportError as error:
    pytest.skip(str(error), allow_module_level=True)


@pytest.fixture(scope="module")
def data():
    return load()


def test_the_official_split_as_documented(data):
    """The file headers' description: 270 training utterances, 30 per speaker, 370 test,
    9 speakers, 12 coefficients, 7 to 29 frames."""
    train, test, names = data
    assert (len(train), len(test), len(names)) == (270, 370, 9)
    assert np.array_equal(np.bincount(train.classes), np.full(9, 30))
    lengths = [len(sequence) for sequence in train.sequences + test.sequences]
    assert min(lengths) == 7 and max(lengths) == 29
    assert {sequence.shape[1] for sequence in train.sequences + test.sequences} == {12}


def test_read_ts_refuses_what_it_cannot_read(tmp_path):
    path = tmp_path / "bad_TRAIN.ts"
    path.write_text("@dimensions 2\n@classLabel true a b\n@data\n1,2:3,4:a\n1,2:3:b\n")
    with pytest.raises(ValueError, match=":5: the dimensions have different lengths"):
        read_ts(path)
    path.write_text("@dimensions 2\n@classLabel true a b\n@data\n1,2:3,4:c\n")
    with pytest.raises(ValueError, match=r"labels \['c'\] are not in the @classLabel header"):
        read_ts(path)


@pytest.mark.parametrize("label", ["last", "every"])
def test_pack_left_pads_and_resets_at_each_start(data, label):
    split = data[0].subset(np.arange(5))
    x, y, resets, steps = pack(split, label)
    T = max(len(sequence) for sequence in split.sequences)
    assert x.shape == (T, 5, 12) and y.shape == resets.shape == steps.shape == (T, 5)
    for b, sequence in enumerate(split.sequences):
        start = T - len(sequence)
        np.testing.assert_array_equal(x[start:, b], sequence.astype(np.float32))
        assert not x[:start, b].any() and steps[start:, b].all() and not steps[:start, b].any()
        assert np.flatnonzero(resets[:, b]).tolist() == [start]
        labelled = np.flatnonzero(y[:, b] >= 0)
        assert labelled.tolist() == ([T - 1] if label == "last" else list(range(start, T)))
        assert (y[labelled, b] == split.classes[b]).all()


def test_padded_sequences_run_as_if_alone(data):
    """The reset at each start makes the padding irrelevant: the packed batch's outputs at a
    sequence's steps equal those of the sequence run alone."""
    split = data[0].subset(np.arange(0, 270, 30))
    x, _, resets, steps = pack(split)
    model = engine.Model("gru", 12, 8, 9, seed=1)
    together, _ = model.forward(x, resets=resets)
    for b, sequence in enumerate(split.sequences):
        alone, _ = model.forward(sequence[:, None, :].astype(np.float32))
        np.testing.assert_allclose(together[steps[:, b], b], alone[:, 0], rtol=1e-5, atol=1e-6)


def test_validation_split_is_stratified_and_disjoint(data):
    classes = data[0].classes
    fit, held = validation_rows(classes, 0.2, seed=3)
    assert np.array_equal(np.sort(np.concatenate([fit, held])), np.arange(len(classes)))
    assert np.array_equal(np.bincount(classes[held]), np.full(9, 6))
    assert not np.array_equal(held, validation_rows(classes, 0.2, seed=4)[1])
    assert len(validation_rows(classes, 0.0, seed=3)[1]) == 0


def test_scaler_uses_the_fitting_sequences_only(data):
    train = data[0]
    fit = train.subset(np.arange(100))
    scaled = np.concatenate(Scaler(fit.sequences)(fit).sequences)
    np.testing.assert_allclose(scaled.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(scaled.std(axis=0), 1, atol=1e-12)
    others = np.concatenate(Scaler(fit.sequences)(train.subset(np.arange(100, 270))).sequences)
    assert np.abs(others.mean(axis=0)).max() > 1e-3  # not re-fitted on what it scales


@pytest.mark.parametrize("label", ["last", "every"])
def test_one_tiny_epoch(tmp_path, label):
    """The whole command on the real data, hidden 4, one epoch, one seed."""
    path = tmp_path / "result.json"
    done = subprocess.run([sys.executable, "-m", "bench.classify", "--hidden", "4", "--epochs", "1",
                           "--seeds", "1", "--label", label, "--json", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(path.read_text())
    config = result["configurations"][0]
    run = config["runs"][0]
    assert (result["train"], result["test"], result["chosen"]) == (270, 370, 0)
    assert (run["fit"], run["validation"], run["chosen_epoch"]) == (216, 54, 1)
    record = run["epochs"][0]
    assert 0 <= record["val_accuracy"] <= 1 and 0 <= record["test_accuracy"] <= 1 and record["seconds"] > 0
    assert np.isfinite(record["loss"]) and record["loss"] > 0
    assert f"| * | lstm H=4 L=1 lr=0.003 | {record['val_accuracy']:.4f} | {record['test_accuracy']:.4f} |" \
        in done.stdout


@pytest.mark.parametrize("arguments, message", [
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--dropout", "1.5", "--layers", "2"], "--dropout must be in [0, 1)"),
    (["--dropout", "0.3"], "with --layers 1 it has nothing to act on"),
    (["--hidden", "4,x"], "not a comma-separated list of int"),
    (["--hidden", "4,8", "--validation", "0"], "needs --validation > 0"),
    (["--cell", "tcn"], "cell must be one of"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, arguments, message):
    path = tmp_path / "result.json"
    done = subprocess.run([sys.executable, "-m", "bench.classify", *arguments, "--json", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1 and message in done.stderr
    assert not path.exists()


def test_an_unwritable_json_path_is_refused_first(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench.classify", "--json", str(tmp_path / "missing" / "r.json")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1
