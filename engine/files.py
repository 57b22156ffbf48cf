"""Output files: refuse paths that would destroy something, and write atomically.

Every file the engine writes (checkpoints, forecast CSVs, plots, JSON, exports, sweep
results) goes through `atomic_write`: the bytes go to a hidden temporary file beside the
target, are flushed to disk, and only then renamed over the target, so a crash, a full
disk or a kill mid-write leaves any previous file intact. `check_output` refuses, before
any work, a target that is an input of the same command, a symbolic link, a device,
FIFO or directory, or a file the user may not write.
"""
import contextlib
import glob
import os
import secrets
import signal
import stat
import threading

_TEMPORARY_PREFIX = ".bptt-"
_TEMPORARY_SUFFIX = ".tmp"


class OutputError(ValueError):
    """An output path that must not be written (bad input: the CLI exits with 2)."""


def check_output(path, inputs=(), what="output", outputs=(), replace=True, hint=""):
    """Raise OutputError unless `path` can be written without destroying anything.

    inputs: paths this command reads; the output may not be any of them (compared after
    resolving links). outputs: the command's other outputs, which it may not be either.
    An existing output must be a regular file (not a link, device,
    FIFO, socket or directory) that its owner may write (the mode bits, since root passes
    every access check). Its directory must exist and be writable. replace False: an
    existing file is refused too, the user's --force (force=True) being what replaces it;
    hint: more to say in that refusal (" or --resume to continue it")."""
    path = os.fspath(path)
    target = os.path.realpath(path)
    for source in inputs:
        if source is not None and os.path.exists(source) and os.path.realpath(source) == target:
            raise OutputError(f"{path}: the {what} would overwrite the input {os.fspath(source)}; "
                              "choose another path")
    for other in outputs:
        if other is not None and os.path.realpath(other) == target:
            raise OutputError(f"{path}: the {what} is also the path of another output of this "
                              "command; choose another path")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OutputError(f"cannot write {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: directory {directory} is not writable")
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(status.st_mode):
        raise OutputError(f"{path} is a symbolic link (to {os.readlink(path)}); refusing to "
                          "replace it or write through it: give the real path")
    if not stat.S_ISREG(status.st_mode):
        raise OutputError(f"{path} exists and is not a regular file ({_kind(status.st_mode)}); "
                          "refusing to replace it")
    if not status.st_mode & stat.S_IWUSR:
        raise OutputError(f"{path} is read-only; refusing to overwrite it")
    if not replace:
        raise OutputError(f"{path} exists; pass --force to replace it{hint}")


@contextlib.contextmanager
def atomic_write(path, mode="wb", **open_options):
    """Context manager: a file object to write `path` through a temporary file beside it.

    On a clean exit the data are flushed, fsynced and renamed over `path` (and the
    directory fsynced); on any exception, SIGTERM included, the temporary is removed and
    `path` is untouched. Stale temporaries of the same target left by a killed process are
    removed first. A file that replaces another keeps the old file's permission bits (a
    private file stays private); a new one gets those of any file the user creates."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{path}: cannot write, directory {directory} does not exist")
    name = os.path.basename(path)
    _remove_stale_temporaries(directory, name)
    temporary = os.path.join(directory, f"{_TEMPORARY_PREFIX}{name}-{os.getpid()}-"
                                        f"{secrets.token_hex(4)}{_TEMPORARY_SUFFIX}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        _keep_permissions(descriptor, path)
        with _sigterm_raises(), os.fdopen(descriptor, mode, **open_options) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(error, OSError) and error.errno is not None and error.filename is None:
            error.filename = path  # "File too large: 'f.csv'", not only "File too large"
        if isinstance(error, Terminated):  # cleaned up: now end as SIGTERM would have
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        raise
    _fsync_directory(directory)


def _keep_permissions(descriptor, path):
    """Give the temporary behind `descriptor` the permission bits of the regular file at `path`."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(status.st_mode):
        os.fchmod(descriptor, stat.S_IMODE(status.st_mode))


def _remove_stale_temporaries(directory, name):
    """Temporaries of `name` whose writing process is gone (killed mid-write)."""
    pattern = os.path.join(glob.escape(directory), f"{_TEMPORARY_PREFIX}{glob.escape(name)}-*{_TEMPORARY_SUFFIX}")
    for temporary in glob.glob(pattern):
        pid = temporary[len(os.path.join(directory, _TEMPORARY_PREFIX + name)) + 1:].split("-")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Terminated(BaseException):
    """SIGTERM arrived while a file was being written (raised to clean up, then re-sent)."""


@contextlib.contextmanager
def _sigterm_raises():
    """While writing, turn SIGTERM into Terminated so the temporary can be removed. Only
    where the default action is in force, and in the main thread (where Python delivers
    signals); a program with its own SIGTERM handler keeps it."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _fsync_directory(directory):
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)  # make the rename itself durable
    finally:
        os.close(descriptor)


def _kind(mode):
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"
