"""Lock files: one process at a time writes a checkpoint (bptt train) or a sweep folder
(bptt sweep), so that two runs started together cannot interleave their writes.

A lock is a file holding its owner's process id and host, created atomically
(O_CREAT | O_EXCL: of two processes starting together exactly one creates it). A lock
whose process is gone on this host (a run killed with SIGKILL) is stale and taken over;
a live one is refused with its pid.
"""
import contextlib
import os
import socket
import time

from engine.files import process_alive

_STARTING_GRACE = 2.0  # seconds an empty lock may be a starting run's, before its pid is written
_ATTEMPTS = 50
_held = set()  # lock paths this process holds (a lock naming this pid but not here is stale)


@contextlib.contextmanager
def held(path, refusal):
    """Hold the lock file `path` for the body. refusal(pid): the exception to raise when a
    live process (pid, text) holds it, or (pid None) when other processes keep replacing it."""
    mine = _owner_text()
    _acquire(path, mine, refusal)
    _held.add(os.path.realpath(path))
    try:
        yield
    finally:
        _held.discard(os.path.realpath(path))
        with contextlib.suppress(OSError):
            if _read(path) == mine:
                os.unlink(path)


def _owner_text():
    return f"{os.getpid()} {socket.gethostname()}\n"


def _acquire(path, mine, refusal):
    empty_since = None
    for _ in range(_ATTEMPTS):
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = _read(path)
            if owner is None:
                continue  # released meanwhile: try again
            if owner == "":  # created, its pid not yet written, or a crash in between
                empty_since = empty_since or time.monotonic()
                if time.monotonic() - empty_since < _STARTING_GRACE:
                    time.sleep(0.05)
                    continue
            elif _alive(owner) and not _stale_own(path, owner):
                raise refusal(owner.split()[0])
            _take_over(path, owner)
            continue
        with os.fdopen(descriptor, "w") as file:
            file.write(mine)
            file.flush()
            os.fsync(file.fileno())
        return
    raise refusal(None)


def _take_over(path, stale):
    """Remove the stale lock `stale` (its text), unless another process replaced it
    meanwhile: moved aside first, so only one process removes a given lock file."""
    aside = f"{path}.stale-{os.getpid()}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another process took it over first
    if _read(aside) != stale:  # a fresh lock taken meanwhile: put it back
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
    os.unlink(aside)


def _read(path):
    """The lock's text, or None when there is no lock."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read()
    except FileNotFoundError:
        return None


def _stale_own(path, owner):
    """A lock naming this process that this process does not hold (its pid reused)."""
    return owner == _owner_text() and os.path.realpath(path) not in _held


def _alive(owner):
    """Is the lock's owner ("pid host") running? On another host it cannot be told: yes."""
    pid, _, host = owner.strip().partition(" ")
    if not pid.isdigit():
        return False  # not a lock this engine wrote: stale
    if host and host != socket.gethostname():
        return True
    return process_alive(int(pid))
