"""engine.footprint: the estimates equal the buffers the engine allocates, and sizes beyond
the machine's memory fail at once with one line (issue 10, item 7)."""
import time

import numpy as np
import pytest

import engine
from engine import footprint
from engine.footprint import MemoryEstimateError
from engine.shards import ShardedChunk
from engine.workspace import Workspace

CELLS = ["lstm", "gru", "rnn"]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 3])
def test_estimates_equal_what_the_engine_allocates(cell, layers):
    model = engine.Model(cell=cell, input_size=3, hidden_size=5, output_size=2, num_layers=layers, dtype="float64")
    assert footprint.parameter_count(cell, 3, 5, 2, layers) == model.num_parameters
    assert footprint.workspace_bytes(cell, 5, 2, layers, 7, 4, 8) == Workspace(model, 7, 4).nbytes
    trainer = engine.Trainer(model, optimizer="adam")
    copies = trainer.grad.nbytes + trainer._last_good.nbytes + sum(
        trainer._last_good_state[k].nbytes + trainer.optimizer_state[k].nbytes for k in trainer.optimizer.buffer_names())
    assert footprint.trainer_bytes(model.params.nbytes, 2) == copies
    chunk = ShardedChunk(model, 7, 4, 2, trainer.grad)
    estimate = footprint.chunk_bytes(cell, 3, 5, 2, layers, 7, 4, 2, 8, model.params.nbytes)
    shard_copies = sum(array.nbytes for array in chunk.inputs) + 7 * 4 * 2 * 8 + model.params.nbytes
    assert estimate == chunk.nbytes + shard_copies
    split = ShardedChunk(model, 7, 4, 1, trainer.grad, split=5)  # 5 blocks of one unit
    assert footprint.chunk_bytes(cell, 3, 5, 2, layers, 7, 4, 1, 8, model.params.nbytes, split=5) == split.nbytes


def test_available_memory_is_read_from_meminfo_or_sysconf(monkeypatch, tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  1000 kB\nMemAvailable:   512 kB\n")
    monkeypatch.setattr(footprint, "_MEMINFO", str(meminfo))
    assert footprint.available_bytes() == 512 * 1024
    monkeypatch.setattr(footprint, "_MEMINFO", str(tmp_path / "absent"))
    assert footprint.available_bytes() > 0  # os.sysconf's free pages


def test_library_refuses_before_allocating(monkeypatch):
    started = time.perf_counter()
    with pytest.raises(MemoryEstimateError, match=r"a model of 1000000 layer\(s\) x 64 hidden needs about \d+ GiB"):
        engine.Model(num_layers=1_000_000)
    with pytest.raises(MemoryEstimateError, match="TiB of memory, but this machine has"):
        engine.Model(hidden_size=1_000_000)
    assert time.perf_counter() - started < 1
    model = engine.Model(hidden_size=8)
    monkeypatch.setattr(footprint, "available_bytes", lambda: 4 * model.params.nbytes)
    with pytest.raises(MemoryEstimateError, match="the trainer's gradient and optimizer state"):
        engine.Trainer(model, optimizer="adam")
    trainer = engine.Trainer(model, optimizer="sgd")  # gradient and last good copy only: fits
    x = np.zeros((200, 64, 1), np.float32)
    with pytest.raises(MemoryEstimateError, match="training on windows of 50 steps x 64 streams"):
        trainer.fit(x, x)
    assert trainer.step == 0
