"""`bptt sweep` and engine.sweep.run against bad or unusual inputs (issue 28, classes 2, 8,
10, 16, 17, 18): each CLI case ends with exit status 2, exactly one `Error:` line on
stderr, no traceback, before any trial, and leaves the working directory (the sweep
folder inside it included) as it was: names, sizes, modes, contents and link targets.
Library cases raise before any trial and create nothing."""
import json
import os
import re
import shutil
import subprocess
import sys

# Before Ray is imported (the --ray cases import it): loopback stays loopback.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

import engine  # noqa: E402
import engine.sweep  # noqa: E402
from cli import main  # noqa: E402
from engine.sweep import folder, report  # noqa: E402
from engine.sweep.space import SweepError  # noqa: E402
from cli_checks import assert_bad_input, snapshot  # noqa: E402

pytest.importorskip("optuna")

TINY = ["--hidden", "4", "--epochs", "1", "--k1", "20", "--streams", "4", "-q"]
SPACE = ["--space", "lr=1e-3,1e-2", "--sampler", "grid"]
SERIES = np.sin(np.arange(400) / 5)


def sweep(*args):
    return CliRunner().invoke(main, ["sweep", *map(str, args)], prog_name="bptt")


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """Two series and a finished two-trial sweep of the first, in sw/."""
    root = tmp_path_factory.mktemp("originals")
    np.savetxt(root / "a.csv", SERIES, header="v", comments="")
    np.savetxt(root / "b.csv", np.cos(np.arange(400) / 5), header="v", comments="")
    result = CliRunner().invoke(main, ["sweep", str(root / "a.csv"), *SPACE, "--trials", "2", *TINY,
                                       "-o", str(root / "sw")], prog_name="bptt")
    assert result.exit_code == 0, result.stderr
    return root


def assert_refused(workdir, args, *fragments):
    before = snapshot(workdir)
    assert_bad_input(sweep(*args), *fragments)
    assert snapshot(workdir) == before


RESUME = ["a.csv", *SPACE, "--trials", "3", *TINY, "-o", "sw", "--resume"]

SPACES = {
    "an infinite range end": (["lr=1..inf"], ["--space lr=1..inf", "not a finite number"]),
    "an infinite list value": (["lr=1e-3,inf"], ["inf is not a finite number"]),
    "a NaN value": (["lr=nan"], ["nan is not in the range x>0"]),
    "NaN first in a list (forget-bias)": (["forget-bias=nan,1"], ["forget-bias=nan,1", "nan"]),
    "NaN first in a list (clip-norm)": (["clip-norm=nan,1"], ["clip-norm=nan,1", "nan"]),
    "an infinite :int range": (["lr=1..inf:int"], ["not a finite number"]),
    "a range whose width overflows": (["forget-bias=-1e308..1e308"], ["too wide"]),
    "an integer beyond floats": (["hidden=1..1" + "0" * 30], ["too large"]),
    "a setting given twice": (["hidden=4,8", "hidden=16"], ["hidden=4,8", "hidden=16", "given twice"]),
    "a setting given twice by two spellings": (["forget-bias=0,1", "forget_bias=2"], ["given twice"]),
}


@pytest.mark.parametrize("case", list(SPACES))
def test_a_bad_space_is_one_error_line_before_any_trial(workdir, case):
    texts, fragments = SPACES[case]
    spaces = [argument for text in texts for argument in ("--space", text)]
    assert_refused(workdir, ["a.csv", *spaces, *TINY, "-o", "new"], *fragments)


def test_workers_zero_is_refused(workdir):
    assert_refused(workdir, ["a.csv", *SPACE, *TINY, "-o", "new", "--workers", "0"], "--workers")


def test_workers_with_ray_is_refused_not_ignored(workdir):
    assert_refused(workdir, ["a.csv", *SPACE, *TINY, "-o", "new", "--workers", "2", "--ray", "127.0.0.1:1"],
                   "--workers", "Ray sweep")


def test_resume_on_another_data_file_names_what_differs(workdir):
    args = list(RESUME)
    args[0] = "b.csv"
    assert_refused(workdir, args, "other data", "content", "a.csv", "b.csv")


def test_resume_with_other_data_options_names_them(workdir):
    assert_refused(workdir, [*RESUME, "--val-fraction", "0.2"], "other data", "--val-fraction (0.1 then, 0.2 now)")
    assert_refused(workdir, [*RESUME, "--difference"], "other data", "--difference")


def test_resume_on_the_same_file_after_a_change_is_refused(workdir):
    with open("a.csv", "a") as file:
        file.write("0.5\n")
    assert_refused(workdir, RESUME, "other data", "content")


def test_resume_on_a_copy_of_the_same_data_continues(workdir):
    shutil.copy("a.csv", "copy.csv")
    result = sweep("copy.csv", *RESUME[1:])
    assert result.exit_code == 0, result.stderr
    assert len(report_rows(workdir / "sw")) == 3
    # data.json keeps what the sweep was started on
    assert json.loads((workdir / "sw" / "data.json").read_text())["file"]["path"].endswith("a.csv")


def report_rows(directory):
    return (directory / "results.csv").read_text().splitlines()[1:]


@pytest.mark.parametrize("name", ["results.csv", "summary.json", "best.npz", "sensitivity.png",
                                  "study.journal", "data.json", "sweep.lock"])
def test_every_output_of_the_folder_is_checked_before_any_trial(workdir, name):
    target = workdir / "sw" / name
    elsewhere = workdir / f"elsewhere-{name}"
    if target.exists():
        shutil.move(target, elsewhere)
    else:
        elsewhere.write_text("x")
    target.symlink_to(elsewhere)
    assert_refused(workdir, RESUME, f"sw/{name} is a symbolic link")


def test_a_read_only_summary_and_a_directory_best_npz_are_refused_before_any_trial(workdir):
    (workdir / "sw" / "summary.json").chmod(0o444)
    assert_refused(workdir, RESUME, "sw/summary.json is read-only")
    (workdir / "sw" / "summary.json").chmod(0o644)
    (workdir / "sw" / "best.npz").unlink()
    (workdir / "sw" / "best.npz").mkdir()
    assert_refused(workdir, RESUME, "sw/best.npz exists and is not a regular file (a directory)")


def test_the_data_file_may_not_be_an_output_of_the_folder(workdir):
    shutil.copy("a.csv", "sw/results.csv")
    args = list(RESUME)
    args[0] = "sw/results.csv"
    assert_refused(workdir, args, "would overwrite the input")


def test_a_second_sweep_in_a_locked_folder_is_refused_naming_the_pid(workdir):
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (workdir / "sw" / folder.LOCK).write_text(f"{owner.pid} {os.uname().nodename}\n")
        assert_refused(workdir, RESUME, "another bptt sweep", f"pid {owner.pid}", "sweep.lock")
    finally:
        owner.kill()
        owner.wait()
    # its process gone, the lock is stale: the next sweep takes it over and releases it
    result = sweep(*RESUME)
    assert result.exit_code == 0, result.stderr
    assert len(report_rows(workdir / "sw")) == 3
    assert not (workdir / "sw" / folder.LOCK).exists()


def test_a_new_sweep_cannot_start_in_a_folder_a_live_sweep_just_created(workdir):
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (workdir / "fresh").mkdir()
        (workdir / "fresh" / folder.LOCK).write_text(f"{owner.pid} {os.uname().nodename}\n")
        assert_refused(workdir, ["a.csv", *SPACE, *TINY, "-o", "fresh"], f"pid {owner.pid}")
    finally:
        owner.kill()
        owner.wait()


# ---------------------------------------------------------------- library calls


@pytest.mark.parametrize("space, options, message", [
    ({}, {}, "names no setting"),
    ({"hidden": [16.7]}, {}, "expected an integer; got 16.7"),
    ({"hidden": [True]}, {}, "expected an integer; got True"),
    ({"lr": [True, 0.01]}, {}, "expected a number; got True"),
    ({"lr": [float("nan"), 0.01]}, {}, "nan is not in the range x>0"),
    ({"lr": [np.float32("inf")]}, {}, "not a finite number"),
    ({"hidden": 16}, {}, "expected a SPEC string"),
    ({"lr": b"1e-3"}, {}, "expected a SPEC string"),
    ({"hidden": [[4, 8]]}, {}, "expected an integer; got [4, 8]"),
    ({"lr": [1e-3]}, {"workers": 0}, "workers must be an integer >= 1"),
    ({"lr": [1e-3]}, {"hidden": 16.5}, "--hidden 16.5: hidden (--hidden): expected an integer; got 16.5"),
    ({"lr": [1e-3]}, {"k1": True}, "--k1 True: k1 (--k1): expected an integer; got True"),
    ({"lr": [1e-3]}, {"forget_bias": float("inf")}, "not a finite number"),
    ({"lr": [1e-3]}, {"difference": 1}, "expected true or false; got 1"),
    ({"lr": [1e-3]}, {"cell": "cnn"}, "expected one of rnn, gru, lstm; got 'cnn'"),
    ({"lr": [1e-3]}, {"prune": "no"}, "prune must be True or False"),
    ({"lr": [1e-3]}, {"address": "auto"}, "applies to executor 'ray'"),
    ({"lr": [1e-3]}, {"executor": "ray", "address": 6379}, "address must be 'HOST:PORT'"),
])
def test_library_values_are_not_coerced(tmp_path, space, options, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        engine.sweep.run(SERIES, space, output_dir=tmp_path / "sw", epochs=1, **options)
    assert not (tmp_path / "sw").exists()


def test_resume_on_another_in_memory_array_is_refused(tmp_path):
    out = tmp_path / "sw"
    options = dict(space={"lr": [1e-3, 1e-2]}, sampler="grid", epochs=1, hidden=4, k1=20, streams=4)
    engine.sweep.run(SERIES, output_dir=out, trials=1, **options)
    before = snapshot(out)
    with pytest.raises(ValueError, match="other data: the series read \\(values differ"):
        engine.sweep.run(SERIES * 2, output_dir=out, trials=2, resume=True, **options)
    assert snapshot(out) == before
    outcome = engine.sweep.run(SERIES.copy(), output_dir=out, trials=2, resume=True, **options)
    assert len(outcome["configurations"]) == 2


def test_a_sweep_holding_the_folder_keeps_another_out(tmp_path):
    out = tmp_path / "sw"
    options = dict(space={"lr": [1e-3, 1e-2]}, sampler="grid", epochs=1, hidden=4, k1=20, streams=4)
    engine.sweep.run(SERIES, output_dir=out, trials=1, **options)
    with folder.locked(out):  # as a sweep running in another thread of this process holds it
        with pytest.raises(SweepError, match=f"another bptt sweep \\(pid {os.getpid()}\\)"):
            engine.sweep.run(SERIES, output_dir=out, trials=2, resume=True, **options)
        assert (out / folder.LOCK).exists()
    assert not (out / folder.LOCK).exists()


def test_an_interrupted_sweep_releases_its_lock(tmp_path):
    class Interrupt:  # the progress stream: Ctrl-C once the first trial is reported
        def isatty(self):
            return False

        def write(self, text):
            if text.startswith("trial "):
                assert (tmp_path / "sw" / folder.LOCK).read_text().split()[0] == str(os.getpid())
                raise KeyboardInterrupt

        def flush(self):
            pass

    with pytest.raises(KeyboardInterrupt):
        engine.sweep.run(SERIES, {"lr": [1e-3, 1e-2]}, output_dir=tmp_path / "sw", trials=2, epochs=1, hidden=4,
                         k1=20, streams=4, progress=Interrupt())
    assert not (tmp_path / "sw" / folder.LOCK).exists()


def test_a_lock_left_by_this_pid_in_an_earlier_life_is_stale(tmp_path):
    out = tmp_path / "sw"
    options = dict(space={"lr": [1e-3, 1e-2]}, sampler="grid", epochs=1, hidden=4, k1=20, streams=4)
    engine.sweep.run(SERIES, output_dir=out, trials=1, **options)
    (out / folder.LOCK).write_text(f"{os.getpid()} {os.uname().nodename}\n")  # a reused pid
    engine.sweep.run(SERIES, output_dir=out, trials=2, resume=True, **options)
    assert not (out / folder.LOCK).exists()


# ---------------------------------------------------------------- summary.json and best.npz agree


def _best_pair(out):
    summary = json.loads((out / "summary.json").read_text())
    best = summary["best"]["trial"] if summary["best"] else None
    saved = None
    if (out / "best.npz").exists():
        saved = engine.read_metadata(out / "best.npz")["user"]["sweep"]["trial"]
    return best, saved


@pytest.mark.parametrize("failing, call, holds", [
    ("write_results", 3, 1),   # after the pair was written: both name trial 1
    ("write_summary", 3, 0),   # best.npz written, then summary.json failed: best.npz put back
    ("save_best", 2, 0),       # best.npz failed: summary.json not rewritten
])
def test_summary_and_best_npz_agree_after_a_failure_mid_sweep(tmp_path, monkeypatch, failing, call, holds):
    """The grid's second learning rate trains better than its first: trial 1 replaces trial
    0 as the best, and the write that fails is one of those after trial 1 ended (results
    and summary are written once at the start, then after each trial)."""
    out = tmp_path / "sw"
    original = getattr(report, failing)
    calls = []

    def fail_at_trial_one(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == call:
            raise OSError(28, "No space left on device (injected)")
        return original(*args, **kwargs)

    monkeypatch.setattr(report, failing, fail_at_trial_one)
    # seed 1: the grid sampler's order is lr 1e-4, then 3e-2
    options = dict(space={"lr": [1e-4, 3e-2]}, sampler="grid", prune=False, epochs=2, hidden=4, k1=20,
                   streams=4, workers=1, seed=1)
    with pytest.raises(OSError, match="injected"):
        engine.sweep.run(SERIES, output_dir=out, trials=2, **options)
    best, saved = _best_pair(out)
    assert best == saved == holds
    assert json.loads((out / "summary.json").read_text())["best"]["settings"] == {"lr": [1e-4, 3e-2][holds]}
    assert not (out / ".best.npz.previous").exists()
    monkeypatch.undo()
    outcome = engine.sweep.run(SERIES, output_dir=out, trials=2, resume=True, **options)
    best, saved = _best_pair(out)
    assert best == saved == outcome["best"]["trial"] == 1
