"""The `bptt` command against a table of bad inputs (issue 10): every class of problem a
new user ran into, and the ones that already held. For each: exit status 1 or 2, exactly
one line on stderr and it starts with "Error:", no traceback, and nothing in the working
directory created or changed (names, sizes, modification times, modes, link targets).
"""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import engine
from cli import main
from cli_checks import assert_bad_input, snapshot

TINY = ["--hidden", "4", "--epochs", "1", "--k1", "20", "-q"]


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """The files every case starts from: a series, a checkpoint trained on it, and damaged,
    foreign or dangerous neighbours."""
    root = tmp_path_factory.mktemp("originals")
    np.savetxt(root / "data.csv", np.sin(np.arange(400) / 5), header="v", comments="")
    result = CliRunner().invoke(main, ["train", str(root / "data.csv"), *TINY, "-o", str(root / "model.npz")])
    assert result.exit_code == 0, result.stderr
    (root / "text.csv").write_text("v\n1\n2\noops\n")
    (root / "random.npz").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8)))
    np.savez(root / "foreign.npz", weights=np.ones(3))
    with np.load(root / "model.npz", allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(str(arrays["metadata"]))
    del meta["model"]["cell"]
    arrays["metadata"] = np.array(json.dumps(meta))
    np.savez(root / "no-cell.npz", **arrays)
    return root


@pytest.fixture
def workdir(originals, tmp_path, monkeypatch):
    """A fresh copy of the originals, plus a read-only file, a symbolic link, a FIFO and a
    directory, as the current directory."""
    for path in originals.iterdir():
        shutil.copy2(path, tmp_path / path.name)
    (tmp_path / "locked.csv").write_text("keep me\n")
    (tmp_path / "locked.csv").chmod(0o444)
    (tmp_path / "link.npz").symlink_to("model.npz")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


CASES = {
    # -- data safety: an output never destroys an input or a non-regular file (items 1-3)
    "train -o its own data": (["train", "data.csv", *TINY, "-o", "data.csv"], 2, "would overwrite the input data.csv"),
    "forecast -o its data": (["forecast", "model.npz", "data.csv", "-o", "data.csv"], 2, "would overwrite the input"),
    "forecast -o its checkpoint": (["forecast", "model.npz", "data.csv", "-o", "model.npz"], 2,
                                   "would overwrite the input model.npz"),
    "--plot onto -o": (["train", "data.csv", *TINY, "-o", "new.npz", "--plot", "new.npz"], 2, "another output"),
    "-o a symbolic link": (["train", "data.csv", *TINY, "-o", "link.npz"], 2, "link.npz is a symbolic link"),
    "forecast -o a link to its input": (["forecast", "model.npz", "data.csv", "-o", "link.npz"], 2,
                                        "would overwrite the input model.npz"),
    "-o a FIFO": (["forecast", "model.npz", "data.csv", "-o", "fifo"], 2, "not a regular file (a FIFO)"),
    "-o a device": (["forecast", "model.npz", "data.csv", "-o", "/dev/null"], 2, "a character device"),
    "-o a directory": (["train", "data.csv", *TINY, "-o", "folder"], 2, "is a directory"),
    "-o a read-only file": (["forecast", "model.npz", "data.csv", "-o", "locked.csv"], 2, "locked.csv is read-only"),
    "train -o a read-only file": (["train", "data.csv", *TINY, "-o", "locked.csv"], 2, "is read-only"),
    "-o in a missing directory": (["train", "data.csv", *TINY, "-o", "nowhere/m.npz"], 2, "does not exist"),
    "bench -o onto a link": (["bench", "-o", "link.npz"], 2, "symbolic link"),
    # -- --resume conflicts (item 6)
    "resume with another --hidden": (["train", "data.csv", "--resume", "-o", "model.npz", "--hidden", "32"], 2,
                                     "--hidden 32 conflicts with the checkpoint's hidden size 4"),
    "resume with another --cell": (["train", "data.csv", "--resume", "-o", "model.npz", "--cell", "gru"], 2,
                                   "--cell gru conflicts"),
    "resume a model without training state": (["train", "data.csv", "--resume", "-o", "foreign.npz"], 2,
                                              "not a bptt-checkpoint file"),
    # -- resources (item 7)
    "--hidden 1000000": (["train", "data.csv", *TINY, "--hidden", "1000000", "-o", "new.npz"], 2, "TiB of memory"),
    "--layers 1000000": (["train", "data.csv", *TINY, "--hidden", "64", "--layers", "1000000", "-o", "new.npz"],
                         2, "1000000 layer(s) x 64 hidden on windows of 20 steps x 8 streams needs about"),
    "deep and narrow": (["train", "data.csv", *TINY, "--layers", "1000000", "-o", "new.npz"], 2,
                        "training 1000000 layer(s) x 4 hidden on windows of 20 steps x 8 streams needs about"),
    "forecast --steps 1e11": (["forecast", "model.npz", "data.csv", "--steps", "100000000000"], 2,
                              "--steps 100000000000 forecasts needs about"),
    "--memory inf": (["train", "data.csv", *TINY, "--memory", "inf", "-o", "new.npz"], 2, "finite byte count"),
    "--memory 1e400": (["train", "data.csv", *TINY, "--memory", "1e400", "-o", "new.npz"], 2, "finite byte count"),
    "--memory too small": (["train", "data.csv", *TINY, "--memory", "10", "-o", "new.npz"], 2, "is too small"),
    # -- checkpoints that are not ours or are damaged (items 8, 10)
    "info on hand-edited metadata": (["info", "no-cell.npz"], 2, "metadata.model.cell is missing"),
    "evaluate on hand-edited metadata": (["evaluate", "no-cell.npz", "data.csv"], 2, "metadata.model.cell is missing"),
    "info on random bytes": (["info", "random.npz"], 2, "not a bptt checkpoint"),
    "forecast with random bytes": (["forecast", "random.npz", "data.csv"], 2, "not a bptt checkpoint"),
    "evaluate with a foreign npz": (["evaluate", "foreign.npz", "data.csv"], 2, "not a bptt-checkpoint file"),
    "info on a data file": (["info", "data.csv"], 2, "not a bptt checkpoint"),
    "info on a missing file": (["info", "absent.npz"], 2, "no such checkpoint file"),
    # -- divergence (item 11)
    "divergence": (["train", "data.csv", *TINY, "--optimizer", "sgd", "--lr", "1e30", "--clip-norm", "0",
                    "-o", "new.npz"], 1, "--on-divergence skip"),
    # -- bad data and options (these held before issue 10)
    "a non-numeric cell": (["train", "text.csv", *TINY, "-o", "new.npz"], 2, 'line 4, column "v"'),
    "a missing data file": (["train", "absent.csv", *TINY, "-o", "new.npz"], 2, "no such data file"),
    "an unknown column": (["train", "data.csv", *TINY, "--targets", "price", "-o", "new.npz"], 2, "unknown column"),
    "k2 below k1": (["train", "data.csv", *TINY, "--k2", "10", "-o", "new.npz"], 2, "k2 must be >= k1"),
    "too short for k1": (["train", "data.csv", *TINY, "--k1", "100", "--streams", "8", "-o", "new.npz"], 2,
                         "fewer than the 100 needed (k1)"),   # the streams given: not lowered to fit
    "an infinite lr": (["train", "data.csv", *TINY, "--lr", "inf", "-o", "new.npz"], 2, "lr must be finite"),
    "an unknown option": (["train", "data.csv", "--hiden", "4"], 2, "No such option"),
    "data and a demo": (["train", "data.csv", "--demo", "sine", *TINY, "-o", "new.npz"], 2, "not both"),
    "forecast on a non-numeric cell": (["forecast", "model.npz", "text.csv"], 2, "not a finite number"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line_and_touches_nothing(workdir, case):
    args, code, fragment = CASES[case]
    before = snapshot(workdir)
    assert_bad_input(CliRunner().invoke(main, args, prog_name="bptt"), fragment, code=code)
    assert snapshot(workdir) == before


def test_a_file_size_limit_mid_forecast_leaves_no_truncated_csv(workdir):
    """Item 4: a write that fails part way (here RLIMIT_FSIZE, as a full disk would) leaves
    no partial output: the forecast CSV is written atomically."""
    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    before = snapshot(workdir)
    script = "import sys; from cli import main; sys.exit(main())"
    result = subprocess.run([sys.executable, "-c", script, "forecast", "model.npz", "data.csv", "--steps", "3000",
                             "-o", "f.csv"], preexec_fn=limit_file_size, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(engine.__file__))),
                            timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr == "Error: [Errno 27] File too large: 'f.csv'\n"
    assert snapshot(workdir) == before


def test_an_allocation_no_estimate_covers_is_one_error_line(workdir, monkeypatch):
    """The last line of defence: a MemoryError anywhere is one Error line, exit 2."""
    def too_big(*args, **kwargs):
        raise MemoryError("Unable to allocate 4.37 TiB for an array with shape (100000000000, 2, 3)")

    monkeypatch.setattr(engine, "gradient_check", too_big)
    before = snapshot(workdir)
    result = CliRunner().invoke(main, ["gradcheck", "--steps", "100000000000"], prog_name="bptt")
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert result.stderr == ("Error: out of memory: Unable to allocate 4.37 TiB for an array with shape "
                             "(100000000000, 2, 3); choose smaller sizes\n")
    assert snapshot(workdir) == before
