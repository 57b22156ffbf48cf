"""The first-run notice (engine/first_run.py): while the kernels compile for the first time,
one line on stderr says so; not when they are cached, never under --quiet. Run in fresh
processes on an empty NUMBA_CACHE_DIR: the smallest model, one epoch (one cold compile of
one dtype's serial RNN kernels, about 5 s on 2 cores), then a cached run, then a quiet run
that compiles one more kernel (--clip-value's) and must still say nothing."""
import os
import pathlib
import subprocess
import sys

from engine.first_run import NOTICE

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = ["--demo", "sine", "--cell", "rnn", "--hidden", "4", "--k1", "20", "--epochs", "1", "--streams", "2",
        "--shards", "1", "--force"]


def bptt(cache, directory, *args):
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(cache),
                       PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    environment.pop("NUMBA_DISABLE_JIT", None)
    result = subprocess.run([sys.executable, "-c", "from cli import main; main()", *args], cwd=directory,
                            capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stderr.splitlines()


def test_the_notice_appears_while_compiling_only(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    first = bptt(cache, tmp_path, "train", *TINY)
    assert first.count(NOTICE) == 1 and first[0] == NOTICE, first
    assert any(cache.glob("**/rnn.rnn_forward-*.nbi"))  # the kernels went to this cache
    cached = bptt(cache, tmp_path, "train", *TINY)
    assert NOTICE not in cached and cached[-1] == "Checkpoint: model.npz", cached
    assert not any(cache.glob("**/optim.clip_by_value-*.nbi"))
    assert bptt(cache, tmp_path, "train", *TINY, "--clip-value", "0.5", "-q") == []
    assert any(cache.glob("**/optim.clip_by_value-*.nbi"))  # a kernel compiled, silently
