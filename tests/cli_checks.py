"""What every bad-input test of the command checks, in one place: the refusal is one
"Error: ..." line on stderr, the exit status, no traceback, nothing on stdout, and (with
snapshot) nothing in the working directory created or changed."""
import hashlib
import os
import stat


def assert_bad_input(result, *fragments, code=2):
    """One line "Error: ..." on stderr holding every fragment, nothing on stdout, exit `code`,
    and the error left the command through sys.exit, not as a traceback. Returns the line."""
    assert result.exit_code == code, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert result.stdout == ""
    return lines[0]


def snapshot(directory):
    """Every entry under `directory`, recursively, with what a write could change: size,
    mode, link target, and for a regular file its modification time and a hash of its
    contents."""
    entries = {}
    for root, directories, files in os.walk(directory):
        for name in sorted(directories + files):
            path = os.path.join(root, name)
            status = os.lstat(path)
            link = os.readlink(path) if stat.S_ISLNK(status.st_mode) else None
            content = modified = None
            if stat.S_ISREG(status.st_mode):
                modified = status.st_mtime_ns
                with open(path, "rb") as file:
                    content = hashlib.sha256(file.read()).hexdigest()
            entries[os.path.relpath(path, directory)] = (status.st_size, status.st_mode, link, modified, content)
    return entries
