"""A sweep's output folder: the files it holds, their checks before any trial, and the
lock that keeps a second sweep (a second --resume of the same folder) out while one runs.

The lock is engine.locks' (a file holding its owner's pid; a stale one taken over).
"""
import os

from engine import locks
from engine.files import check_not_an_input, check_output
from engine.sweep.data_identity import FILE_NAME as DATA_FILE
from engine.sweep.local import JOURNAL
from engine.sweep.space import SweepError

RESULTS = ("results.csv", "summary.json", "best.npz", "sensitivity.png")
LOCK = "sweep.lock"
FILES = RESULTS + (JOURNAL, DATA_FILE, LOCK)  # every file a sweep writes in its folder


def check_outputs(output_dir, inputs=()):
    """engine.files.check_output for every file of the folder (OutputError): none may be
    an input, a link, a directory or other non-regular file, or read-only. A folder the
    sweep will create holds nothing yet: its files may only not be (or, for a panel of
    files, join) an input."""
    for name in FILES:
        path, what = os.path.join(output_dir, name), f"sweep's {name}"
        if os.path.isdir(output_dir):
            check_output(path, inputs=inputs, what=what)
        else:
            check_not_an_input(path, inputs, what)


def locked(output_dir):
    """Hold the folder's lock for the body (a context manager); SweepError if another live
    sweep holds it."""
    path = os.path.join(output_dir, LOCK)

    def refusal(pid):
        if pid is None:
            return SweepError(f"-o {output_dir}: could not take the folder's lock {path}: other processes "
                              "keep replacing it")
        return SweepError(f"-o {output_dir}: another bptt sweep (pid {pid}) is running in this folder; "
                          f"wait for it to end (if no such sweep runs, delete {path})")

    return locks.held(path, refusal)
