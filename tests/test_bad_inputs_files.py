"""The `bptt` command against bad inputs about files, checkpoints and messages (issue 28:
outputs among a panel's files, empty output paths, long names, damaged or oversized
checkpoints, messages that must name the problem as the user wrote it). Each case: its
exit status, exactly one line on stderr starting with "Error:", no traceback, and the
working directory unchanged (names, sizes, modification times, modes, link targets)."""
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

import engine
from cli import main
from cli_checks import assert_bad_input, snapshot
from test_bad_inputs import TINY

PANEL_TINY = ["--hidden", "4", "--epochs", "1", "--k1", "5", "--streams", "2", "-q"]


def invoke(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], prog_name="bptt")


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """A series and its model, a panel directory of three series and its model, and
    checkpoints damaged in the ways a reader must survive."""
    root = tmp_path_factory.mktemp("originals")
    np.savetxt(root / "data.csv", np.sin(np.arange(400) / 5), header="v", comments="")
    assert invoke("train", root / "data.csv", *TINY, "-o", root / "model.npz").exit_code == 0
    (root / "panel").mkdir()
    for index in range(3):
        np.savetxt(root / "panel" / f"s{index}.csv", np.cos(np.arange(60) / (3 + index)), header="v", comments="")
    result = invoke("train", root / "panel", *PANEL_TINY, "-o", root / "panel.npz")
    assert result.exit_code == 0, result.stderr
    shutil.copytree(root / "panel", root / "legacy")   # a panel where an older version wrote a checkpoint
    shutil.copy(root / "model.npz", root / "legacy" / "model.npz")
    (root / "huge.csv").write_text("v\n1\n1e400\n2\n")
    np.savetxt(root / "edge.csv", np.full(400, 1.7e308), header="v", comments="")
    with np.load(root / "model.npz", allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    deep = dict(arrays, metadata=np.array("[" * 200_000 + "]" * 200_000))
    np.savez(root / "deep.npz", **deep)
    shutil.copy(root / "model.npz", root / "bomb.npz")
    with zipfile.ZipFile(root / "bomb.npz", "a", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("extra.npy", "w", force_zip64=True) as member:
            block = bytes(2 ** 20)
            for _ in range(64):  # 64 MiB declared, about 64 KiB stored
                member.write(block)
    return root


CASES = {
    # 1: an output never replaces a file of a panel input, nor joins the panel
    "train DIR -o DIR/s0.csv": (["train", "panel", *PANEL_TINY, "-o", "panel/s0.csv"], "a file of the input panel"),
    "train glob -o DIR/s1.csv": (["train", "panel/*.csv", *PANEL_TINY, "-o", "panel/s1.csv"],
                                 "would overwrite panel/s1.csv, a file of the input panel/*.csv"),
    "forecast -o DIR/s2.csv": (["forecast", "panel.npz", "panel", "-o", "panel/s2.csv"], "a file of the input"),
    "train DIR -o DIR/model.npz": (["train", "panel", *PANEL_TINY, "-o", "panel/model.npz"],
                                   "would be written among the files of the input panel"),
    "train DIR --plot DIR/curve.png": (["train", "panel", *PANEL_TINY, "-o", "new.npz", "--plot", "panel/curve.png"],
                                       "among the files of the input panel"),
    "forecast glob -o a new match": (["forecast", "panel.npz", "panel/s*", "-o", "panel/s9.csv"],
                                     "among the files of the input panel/s*"),
    "evaluate a panel holding a checkpoint": (["evaluate", "panel.npz", "legacy"],
                                              "legacy/model.npz: is a bptt checkpoint, not a data series"),
    # 12: an empty output path, refused before any work
    "train -o ''": (["train", "data.csv", *TINY, "-o", ""], "path is empty"),
    "train --plot ''": (["train", "data.csv", *TINY, "-o", "new.npz", "--plot", ""], "path is empty"),
    "forecast -o ''": (["forecast", "model.npz", "data.csv", "-o", ""], "path is empty"),
    "forecast --plot ''": (["forecast", "model.npz", "data.csv", "--plot", ""], "path is empty"),
    "export -o ''": (["export", "model.npz", "--format", "safetensors", "-o", ""], "path is empty"),
    "bench -o ''": (["bench", "--quick", "-o", ""], "path is empty"),
    "sweep -o ''": (["sweep", "data.csv", "--space", "hidden=4,5", "--trials", "2", "--epochs", "1",
                     "-o", "", "-q"], "path is empty"),
    # 9, 11: checkpoints whose reading would take unbounded memory or recursion
    "info: metadata nested 200k deep": (["info", "deep.npz"], "nests 200000 levels deep"),
    "info: an extra compressed member": (["info", "bomb.npz"], "unexpected member 'extra'"),
    "evaluate: an extra compressed member": (["evaluate", "bomb.npz", "data.csv"], "unexpected member"),
    "panel forecast of 10**10 steps": (["forecast", "panel.npz", "panel", "--steps", str(10 ** 10)],
                                       "forecasts of 3 series needs about"),
    # 19: messages
    "a cell 1e400": (["train", "huge.csv", *TINY, "-o", "new.npz"], "line 3, column \"v\": not a finite number: '1e400'"),
    "evaluate a single-series model on a directory": (["evaluate", "model.npz", "panel"],
                                                      "panel: is a directory of files (a panel of series); "
                                                      "the model was trained on one series"),
    "forecast a single-series model on a glob": (["forecast", "model.npz", "panel/*.csv"],
                                                 "is a glob pattern of files"),
    # 17: model options beyond the dtype's range
    "forget-bias beyond float32": (["train", "data.csv", *TINY, "-o", "new.npz", "--forget-bias", "1e300"],
                                   "forget_bias must be within the range of float32"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line_and_touches_nothing(workdir, case):
    args, fragment = CASES[case]
    before = snapshot(workdir)  # recursive: the panel directory's files included
    assert_bad_input(invoke(*args), fragment)
    assert snapshot(workdir) == before


@pytest.mark.parametrize("length", [231, 255])
def test_outputs_with_names_of_up_to_255_bytes_are_written(workdir, length):
    name = "m" * (length - 4) + ".npz"
    result = invoke("train", "data.csv", *TINY, "-o", name)
    assert result.exit_code == 0, result.stderr
    result = invoke("forecast", name, "data.csv", "-o", "f" * (length - 4) + ".csv")
    assert result.exit_code == 0, result.stderr
    assert not [entry for entry in os.listdir(workdir) if entry.startswith(".bptt-")]


def test_a_checkpoint_beside_a_panel_keeps_the_panel_readable(workdir):
    # the refused -o DIR/model.npz would have made every later read of DIR fail; a hidden
    # name or another directory is fine, and DIR still trains and evaluates
    result = invoke("train", "panel", *PANEL_TINY, "-o", "panel/.model.npz")
    assert result.exit_code == 0, result.stderr
    result = invoke("evaluate", "panel/.model.npz", "panel", "--json")
    assert result.exit_code == 0, result.stderr
    assert [one["id"] for one in json.loads(result.stdout)["series"]] == ["s0", "s1", "s2"]


PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(engine.__file__)))


@pytest.mark.parametrize("args, fragment", [
    (["evaluate", "model.npz", "edge.csv"], "must be finite in float32"),
    (["forecast", "model.npz", "edge.csv"], "must be finite in float32"),
], ids=["evaluate", "forecast"])
def test_values_at_the_float64_limit_give_no_warning_lines(workdir, args, fragment):
    # a process of its own: pytest records warnings instead of printing them
    result = subprocess.run([sys.executable, "-c", "from cli import main; main()", *args], cwd=workdir,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": PROJECT})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], result.stderr


def test_a_series_at_the_float64_limit_trains_without_warnings(workdir):
    result = subprocess.run([sys.executable, "-c", "from cli import main; main()", "train", "edge.csv", *TINY,
                             "-o", "edge.npz"], cwd=workdir, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": PROJECT})
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_a_second_run_writing_the_same_checkpoint_is_refused_naming_the_pid(workdir):
    """Two runs writing one checkpoint at once would interleave their epochs: the second is
    refused while the first lives (its pid in the checkpoint's hidden lock file), and a
    lock whose process is gone is taken over."""
    lock = engine.files.lock_path("model.npz")
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with open(lock, "w") as file:
            file.write(f"{owner.pid} {os.uname().nodename}\n")
        before = snapshot(workdir)
        for args in (["--resume"], ["--force"]):
            assert_bad_input(invoke("train", "data.csv", *TINY, "--epochs", "2", "-o", "model.npz", *args),
                             "another bptt train", f"pid {owner.pid}", os.path.basename(lock))
        assert snapshot(workdir) == before
    finally:
        owner.kill()
        owner.wait()
    result = invoke("train", "data.csv", *TINY, "--epochs", "2", "-o", "model.npz", "--resume")
    assert result.exit_code == 0, result.stderr
    assert engine.read_metadata("model.npz")["trainer"]["epoch"] == 2
    assert not os.path.exists(lock)  # released at the end


def test_the_checkpoint_lock_is_held_while_training_and_refuses_a_second_run(workdir):
    """While train_series runs, its checkpoint's lock names this process; a second
    train_series of the same checkpoint started meanwhile in this process is refused."""
    seen = []

    def on_epoch(record):
        seen.append(open(engine.files.lock_path("held.npz")).read().split()[0])
        with pytest.raises(engine.files.OutputError, match="another bptt train"):
            engine.train_series("data.csv", "held.npz", hidden=4, k1=20, epochs=1, force=True)

    engine.train_series("data.csv", "held.npz", hidden=4, k1=20, epochs=1, on_epoch=on_epoch)
    assert seen == [str(os.getpid())]
    assert not os.path.exists(engine.files.lock_path("held.npz"))
