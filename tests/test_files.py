"""engine.files: output paths that would destroy something are refused; writes are atomic,
clean up after themselves (exceptions, SIGTERM) and after killed writers."""
import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

import engine
from engine.files import OutputError, atomic_write, check_output, listed_files, temporary_name

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(engine.__file__)))


def test_a_new_file_in_an_existing_directory_is_fine(tmp_path):
    check_output(tmp_path / "new.csv")


def test_an_input_is_never_an_output(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("1\n2\n")
    with pytest.raises(OutputError, match="would overwrite the input"):
        check_output(data, inputs=[data])
    link_dir = tmp_path / "alias"
    link_dir.symlink_to(tmp_path)
    with pytest.raises(OutputError, match="would overwrite the input"):  # same file by another path
        check_output(link_dir / "data.csv", inputs=[data])


def test_a_symbolic_link_is_refused_and_left_alone(tmp_path):
    target = tmp_path / "real.npz"
    target.write_bytes(b"keep")
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    with pytest.raises(OutputError, match="symbolic link"):
        check_output(link)
    assert link.is_symlink() and target.read_bytes() == b"keep"


@pytest.mark.parametrize("make, kind", [(os.mkfifo, "FIFO"), (os.mkdir, "directory")])
def test_a_node_that_is_not_a_regular_file_is_refused(tmp_path, make, kind):
    node = tmp_path / "node"
    make(node)
    with pytest.raises(OutputError, match=kind):
        check_output(node)


def test_a_device_is_refused():
    with pytest.raises(OutputError, match="character device"):
        check_output("/dev/null")


def test_a_read_only_file_is_refused_even_for_root(tmp_path):
    locked = tmp_path / "locked.csv"
    locked.write_text("mine")
    locked.chmod(0o444)
    with pytest.raises(OutputError, match="read-only"):
        check_output(locked)


def test_an_existing_file_is_replaced_only_when_allowed(tmp_path):
    """replace=False (a command without --force) refuses an existing file, with the hint."""
    path = tmp_path / "model.npz"
    check_output(path, replace=False)  # not there yet
    path.write_bytes(b"work")
    check_output(path)  # replacing is the low-level default (engine.save, atomic_write)
    with pytest.raises(OutputError, match=r"model\.npz exists; pass --force to replace it or --resume to continue it$"):
        check_output(path, replace=False, hint=" or --resume to continue it")
    link = tmp_path / "link.npz"
    link.symlink_to(path)
    with pytest.raises(OutputError, match="symbolic link"):  # a link is refused even with --force
        check_output(link, replace=True)


def test_a_missing_directory_is_named(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        check_output(tmp_path / "missing" / "out.csv")


def test_atomic_write_replaces_only_on_success(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(path, "w") as file:
            file.write("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.csv"]  # no temporary left
    with atomic_write(path, "w") as file:
        file.write("new")
    assert path.read_text() == "new"
    assert os.listdir(tmp_path) == ["out.csv"]


def test_new_files_get_the_users_permissions(tmp_path):
    path = tmp_path / "out.bin"
    with atomic_write(path) as file:
        file.write(b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path):
    path = tmp_path / "model.npz"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    stale = tmp_path / temporary_name("model.npz", pid, "0123abcd")
    stale.write_bytes(b"\0" * 1000)
    other = tmp_path / temporary_name("other.npz", pid, "0123abcd")  # another target's
    other.write_bytes(b"\0")
    with atomic_write(path) as file:
        file.write(b"x")
    assert not stale.exists() and other.exists()


def test_a_live_temporary_of_a_longer_name_is_never_taken_for_a_stale_one(tmp_path):
    # a writer of "run" must not clean the temporaries of "run-99999" (a prefix of it), whoever wrote them
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    others = [tmp_path / temporary_name("run-99999", os.getpid(), "0123abcd"),   # live
              tmp_path / temporary_name("run-99999", int(dead.stdout), "0123abcd"),  # stale, not ours
              tmp_path / temporary_name("run~x", int(dead.stdout), "0123abcd")]
    for other in others:
        other.write_bytes(b"live")
    with atomic_write(tmp_path / "run") as file:
        file.write(b"x")
    assert all(other.read_bytes() == b"live" for other in others)
    assert (tmp_path / "run").read_bytes() == b"x"


@pytest.mark.parametrize("length", [231, 255])
def test_names_up_to_the_limit_can_be_written(tmp_path, length):
    name = "é" * ((length - 4) // 2) + "x" * ((length - 4) % 2) + ".npz"  # multibyte: the limit is in bytes
    assert len(os.fsencode(name)) == length
    assert len(os.fsencode(temporary_name(name, 4194304, "0123abcd"))) <= 255
    with atomic_write(tmp_path / name) as file:
        file.write(b"x")
    assert os.listdir(tmp_path) == [name]


def test_two_long_names_sharing_their_start_have_distinct_temporaries():
    first, second = "a" * 200 + "1", "a" * 200 + "2"
    assert temporary_name(first, 1, "0123abcd") != temporary_name(second, 1, "0123abcd")


@pytest.mark.parametrize("path", ["", b""])
def test_an_empty_path_is_refused(tmp_path, path):
    with pytest.raises(OutputError, match="path is empty"):
        check_output(path)
    with pytest.raises(OutputError, match="empty path"):
        with atomic_write(path) as file:
            file.write(b"x")


def _panel(tmp_path):
    panel = tmp_path / "panel"
    panel.mkdir()
    for name in ("s0.csv", "s1.csv"):
        (panel / name).write_text("x\n1\n")
    (panel / ".hidden.csv").write_text("x\n1\n")
    return panel


def test_a_file_of_a_panel_input_is_never_an_output(tmp_path):
    panel = _panel(tmp_path)
    for source in (panel, f"{panel}/*.csv", f"{panel}/s?.csv"):
        with pytest.raises(OutputError, match=r"would overwrite .*s1\.csv, a file of the input"):
            check_output(panel / "s1.csv", inputs=[source])
    link_dir = tmp_path / "alias"
    link_dir.symlink_to(panel)
    with pytest.raises(OutputError, match="a file of the input"):
        check_output(link_dir / "s0.csv", inputs=[f"{panel}/*.csv"])


def test_a_new_file_that_a_panel_input_would_read_is_refused(tmp_path):
    panel = _panel(tmp_path)
    for source in (panel, f"{panel}/*", f"{panel}/*.npz", str(tmp_path / "alias" / "*")):
        if "alias" in str(source):
            (tmp_path / "alias").symlink_to(panel)
        with pytest.raises(OutputError, match="would be written among the files of the input"):
            check_output(panel / "model.npz", inputs=[source])


def test_outputs_beside_a_panel_that_it_would_not_read_are_fine(tmp_path):
    panel = _panel(tmp_path)
    check_output(panel / ".model.npz", inputs=[panel])   # hidden: a directory lists no hidden file
    check_output(panel / "model.npz", inputs=[f"{panel}/*.csv"])
    check_output(panel / "sub.csv", inputs=[f"{panel}/s?.csv"])
    check_output(tmp_path / "model.npz", inputs=[panel, f"{panel}/*"])


def test_listed_files_are_the_regular_visible_files_in_name_order(tmp_path):
    panel = _panel(tmp_path)
    (panel / "sub").mkdir()
    assert listed_files(panel) == [str(panel / "s0.csv"), str(panel / "s1.csv")]
    assert listed_files(f"{panel}/*") == [str(panel / "s0.csv"), str(panel / "s1.csv")]


def test_sigterm_during_a_write_removes_the_temporary_and_ends_the_process(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {PROJECT!r})
        from engine.files import atomic_write
        with atomic_write({str(path)!r}) as file:
            file.write(b"partial")
            os.kill(os.getpid(), signal.SIGTERM)
            file.write(b"never")
        print("not reached")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == -signal.SIGTERM, result.stderr
    assert "not reached" not in result.stdout
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_a_replaced_file_keeps_its_permissions(tmp_path):
    private = tmp_path / "forecast.csv"
    private.write_text("old")
    private.chmod(0o600)
    with atomic_write(private, "w") as file:
        file.write("new")
    assert private.read_text() == "new"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_two_outputs_of_one_command_may_not_share_a_path(tmp_path):
    with pytest.raises(OutputError, match="another output"):
        check_output(tmp_path / "m.npz", outputs=[tmp_path / "." / "m.npz"])
    check_output(tmp_path / "plot.png", outputs=[tmp_path / "m.npz", None])


def test_ctrl_c_during_a_write_removes_the_temporary(tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(path) as file:
            file.write(b"partial")
            raise KeyboardInterrupt
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.npz"]


def test_a_failed_write_names_the_target(tmp_path):
    path = tmp_path / "f.csv"
    with pytest.raises(OSError, match=r"\[Errno 28\] No space left on device: '.*f\.csv'"):
        with atomic_write(path, "w"):
            raise OSError(28, "No space left on device")
    assert os.listdir(tmp_path) == []


def test_a_path_naming_a_directory_or_too_long_a_name_is_refused(tmp_path):
    for path in (f"{tmp_path}/new/", os.fsencode(f"{tmp_path}/new/")):
        with pytest.raises(OutputError, match="ends with a slash"):
            check_output(path)
    with pytest.raises(OutputError, match="File name too long"):
        check_output(tmp_path / ("n" * 256))
