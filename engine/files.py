"""Output files: refuse paths that would destroy something, and write atomically.

Every file the engine writes (checkpoints, forecast CSVs, plots, JSON, exports, sweep
results) goes through `atomic_write`: the bytes go to a hidden temporary file beside the
target, are flushed to disk, and only then renamed over the target, so a crash, a full
disk or a kill mid-write leaves any previous file intact. `check_output` refuses, before
any work, a target that is an input of the same command, a symbolic link, a device,
FIFO or directory, or a file the user may not write. An input that is a directory or a
glob pattern (a panel: one series per file) stands for every file it names, and for any
new file it would name: an output may not join the panel either.
"""
import contextlib
import fnmatch
import glob
import hashlib
import os
import re
import secrets
import signal
import stat
import threading

_TEMPORARY_PREFIX = ".bptt-"
_TEMPORARY_SUFFIX = ".tmp"
_READABLE_BYTES = 64  # of the target's name kept in its temporary's (names are at most 255 bytes)


class OutputError(ValueError):
    """An output path that must not be written (bad input: the CLI exits with 2)."""


def check_output(path, inputs=(), what="output", outputs=(), replace=True, hint=""):
    """Raise OutputError unless `path` can be written without destroying anything.

    inputs: paths this command reads; the output may not be any of them (compared after
    resolving links); an input that is a directory or a glob pattern (see listed_files) stands
    for the files it names, and the output may not be a new file it would name (the panel
    would read it as a series next time). outputs: the command's other outputs, which it
    may not be either. An existing output must be a regular file (not a link, device,
    FIFO, socket or directory) that its owner may write (the mode bits, since root passes
    every access check). Its directory must exist and be writable. An empty path is refused.
    replace False: an existing file is refused too, the user's --force (force=True) being
    what replaces it; hint: more to say in that refusal (" or --resume to continue it")."""
    path = os.fsdecode(path)
    if not path:
        raise OutputError(f"the {what} path is empty; give a file name")
    if path.endswith((os.sep, "/")):
        raise OutputError(f"{path}: the {what} path names a directory (it ends with a slash); "
                          "give a file name")
    check_not_an_input(path, inputs, what)
    target = os.path.realpath(path)
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
    except OSError as error:  # a name too long, a loop of links above it, ...
        raise OutputError(f"cannot write {path}: {error.strerror}") from None
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


def is_file_pattern(source):
    """A directory, or a glob pattern naming no existing file: a panel of one series per file."""
    source = os.fspath(source)
    return os.path.isdir(source) or (not os.path.exists(source) and glob.has_magic(source))


def listed_files(source):
    """The data files a directory or glob pattern names, in name order: every regular file
    of a directory whose name does not start with a dot (the engine's temporaries are such
    hidden files), or the regular files matching the pattern (as in the shell, `*` matches
    no name starting with a dot)."""
    source = os.fspath(source)
    if os.path.isdir(source):
        return [os.path.join(source, name) for name in sorted(os.listdir(source))
                if not name.startswith(".") and os.path.isfile(os.path.join(source, name))]
    return sorted(path for path in glob.glob(source) if os.path.isfile(path))


def check_not_an_input(path, inputs, what="output"):
    """Raise OutputError if `path` is one of `inputs` (after resolving links) or, for an
    input that is a directory or glob pattern, a file it names or would name once written
    (its directory need not exist yet)."""
    target = os.path.realpath(path)
    for source in (os.fspath(source) for source in inputs if source is not None):
        if is_file_pattern(source):
            _check_not_in_panel(path, target, source, what)
        elif os.path.exists(source) and os.path.realpath(source) == target:
            raise OutputError(f"{path}: the {what} would overwrite the input {source}; "
                              "choose another path")


def _check_not_in_panel(path, target, source, what):
    """Refuse an output that is, or would become, one of the files the panel `source` names."""
    for member in listed_files(source):
        if os.path.realpath(member) == target:
            raise OutputError(f"{path}: the {what} would overwrite {member}, a file of the input "
                              f"{source}; choose another path")
    if _would_be_listed(path, source):
        raise OutputError(f"{path}: the {what} would be written among the files of the input {source} "
                          "and read as one of its series next time; write it outside the panel's "
                          "files (another directory, or a name the pattern does not match)")


def _would_be_listed(path, source):
    """Whether a file at `path` would be one of listed_files(source) (compared with and
    without resolving links in the directories)."""
    name = os.path.basename(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(source):
        return not name.startswith(".") and os.path.realpath(directory) == os.path.realpath(source)
    patterns = {os.path.abspath(source)}
    head, tail = os.path.split(os.path.abspath(source))
    if not glob.has_magic(head):
        patterns.add(os.path.join(os.path.realpath(head), tail))
    paths = {os.path.join(directory, name), os.path.join(os.path.realpath(directory), name)}
    return any(_glob_matches(candidate, pattern) for candidate in paths for pattern in patterns)


def _glob_matches(path, pattern):
    """glob.glob's rule for one absolute path: part by part, a wildcard part never matching a
    name that starts with a dot unless the part does."""
    parts, pattern_parts = path.split(os.sep), pattern.split(os.sep)
    return len(parts) == len(pattern_parts) and all(
        fnmatch.fnmatchcase(part, wanted) and not (part.startswith(".") and not wanted.startswith(".")
                                                    and glob.has_magic(wanted))
        for part, wanted in zip(parts, pattern_parts))


@contextlib.contextmanager
def atomic_write(path, mode="wb", **open_options):
    """Context manager: a file object to write `path` through a temporary file beside it.

    On a clean exit the data are flushed, fsynced and renamed over `path` (and the
    directory fsynced); on any exception, SIGTERM included, the temporary is removed and
    `path` is untouched. Stale temporaries of the same target left by a killed process are
    removed first. A file that replaces another keeps the old file's permission bits (a
    private file stays private); a new one gets those of any file the user creates."""
    path = os.fspath(path)
    if not path:
        raise OutputError("cannot write to an empty path; give a file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{path}: cannot write, directory {directory} does not exist")
    name = os.path.basename(path)
    _remove_stale_temporaries(directory, name)
    temporary = os.path.join(directory, temporary_name(name, os.getpid(), secrets.token_hex(4)))
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


def temporary_name(name, pid, token):
    """The name of the temporary that process `pid` writes target `name` through (token: 8
    hex digits): ".bptt-<key>-<pid>-<token>.tmp", key = the name's first 64 bytes (cut at a
    character), "~" and 16 hex digits of the SHA-256 of the whole name: at most about 110
    bytes whatever the target's length (a name may have 255), and one key per name."""
    return f"{_TEMPORARY_PREFIX}{_temporary_key(name)}-{pid}-{token}{_TEMPORARY_SUFFIX}"


def lock_path(path):
    """The hidden lock file beside `path` that a writer of it holds (engine.locks):
    ".bptt-<key>.lock", the key as a temporary's (so also within the name limit)."""
    directory, name = os.path.split(os.fspath(path))
    return os.path.join(directory, f"{_TEMPORARY_PREFIX}{_temporary_key(name)}.lock")


def _temporary_key(name):
    encoded = os.fsencode(name)
    readable = name
    while len(os.fsencode(readable)) > _READABLE_BYTES:
        readable = readable[:-1]
    return f"{readable}~{hashlib.sha256(encoded).hexdigest()[:16]}"


def _remove_stale_temporaries(directory, name):
    """Temporaries of `name` (exactly: its key, then the pid and token) whose writing
    process is gone (killed mid-write); another target's temporaries are never touched."""
    stale = re.compile(re.escape(f"{_TEMPORARY_PREFIX}{_temporary_key(name)}-") + r"(\d+)-[0-9a-f]{8}"
                       + re.escape(_TEMPORARY_SUFFIX))
    for entry in os.listdir(directory):
        found = stale.fullmatch(entry)
        if found and not process_alive(int(found.group(1))):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, entry))


def process_alive(pid):
    """Whether process `pid` runs on this machine (another user's counts)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or no pid at all (too large)
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
