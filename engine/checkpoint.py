"""Checkpoints: one .npz of arrays plus a JSON metadata entry (DESIGN.md section 7).

Entries: "metadata" (JSON: format, version, model and trainer config, counters, epoch
records, best epoch, user data such as the normalisation); "model/<name>" the
parameters under PyTorch's names; "optimizer/<key>" the optimizer state; "trainer/..."
the carried stream state and early-stopping copy; "history/<field>" per-update records.
Loaded with allow_pickle=False: reading a checkpoint never executes code.
"""
import json
import os
import tempfile
import zipfile

import numpy as np

from engine.history import UPDATE_FIELDS, History
from engine.model import Model

FORMAT = "bptt-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, corrupted or not ours."""


def save(path, model, trainer=None, metadata=None):
    """Write `model` (and `trainer`, if given, so training resumes exactly) to `path`
    atomically: a crash mid-write leaves any previous file intact. metadata: optional
    JSON-able dict stored as is (the CLI keeps the data normalisation there)."""
    meta = {"format": FORMAT, "version": VERSION, "model": model.config,
            "trainer": None, "user": metadata or {}}
    arrays = {f"model/{name}": view for name, view in model.views.items()}
    if trainer is not None:
        meta["trainer"] = _trainer_metadata(trainer)
        arrays.update(_trainer_arrays(trainer))
    arrays["metadata"] = np.array(json.dumps(meta))
    _atomic_savez(os.fspath(path), arrays)


def load(path):
    """Read a checkpoint written by `save`: returns (model, trainer), trainer None when the
    file holds a model only. Raises CheckpointError with the reason otherwise."""
    from engine.trainer import Trainer

    arrays, meta = _read(path)
    try:
        model = Model(**meta["model"])
        model.load_state_dict({name: arrays[f"model/{name}"] for name in model.views})
        if meta["trainer"] is None:
            return model, None
        trainer = Trainer.from_config(model, meta["trainer"]["config"])
        _restore_trainer(trainer, meta["trainer"], arrays)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: checkpoint content does not match format "
                              f"{FORMAT} v{VERSION} ({type(error).__name__}: {error})") from None
    return model, trainer


def read_metadata(path):
    """The metadata dict of a checkpoint (model config, trainer counters, user data)."""
    return _read(path)[1]


def _read(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupted?): {error}") from None
    try:
        meta = json.loads(str(arrays["metadata"]))
        known = meta.get("format") == FORMAT
    except (KeyError, ValueError, AttributeError):
        known = False
    if not known:
        raise CheckpointError(f"{path}: not a {FORMAT} file (no bptt metadata entry)")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('version')} is not "
                              f"supported (this version reads {VERSION})")
    return arrays, meta


def _trainer_metadata(trainer):
    best = None if trainer.best is None else {k: trainer.best[k] for k in ("loss", "epoch")}
    return {"config": trainer.config, "step": trainer.step, "epoch": trainer.epoch,
            "skipped": trainer.skipped, "best": best, "epochs": trainer.history.epochs}


def _trainer_arrays(trainer):
    arrays = {f"optimizer/{key}": value for key, value in trainer.optimizer_state.items()}
    arrays.update({f"history/{field}": column for field, column in trainer.history.to_arrays().items()})
    for name, state in (("state", trainer.state), ("history_state", trainer._history_state)):
        if state is not None:
            for part, array in zip("hc", state if isinstance(state, tuple) else (state,)):
                arrays[f"trainer/{name}_{part}"] = array
    if trainer._history_x is not None:
        arrays["trainer/history_x"] = trainer._history_x
    if trainer.best is not None:
        arrays["trainer/best_params"] = trainer.best["params"]
    return arrays


def _restore_trainer(trainer, meta, arrays):
    for key in trainer.optimizer_state:
        stored = arrays[f"optimizer/{key}"]
        if stored.shape != trainer.optimizer_state[key].shape:
            raise ValueError(f"optimizer/{key} has shape {stored.shape}, expected {trainer.optimizer_state[key].shape}")
        trainer.optimizer_state[key][...] = stored
    trainer.step, trainer.epoch, trainer.skipped = meta["step"], meta["epoch"], meta["skipped"]
    trainer.history = History.from_arrays({f: arrays[f"history/{f}"] for f in UPDATE_FIELDS},
                                          meta["epochs"])
    trainer.state = _state_entry(trainer.model, arrays, "state")
    trainer._history_state = _state_entry(trainer.model, arrays, "history_state")
    trainer._history_x = arrays.get("trainer/history_x")
    trainer._last_good[...] = trainer.model.params
    if meta["best"] is not None:
        trainer.best = dict(meta["best"], params=arrays["trainer/best_params"].astype(trainer.model.dtype))


def _state_entry(model, arrays, name):
    if f"trainer/{name}_h" not in arrays:
        return None
    h = arrays[f"trainer/{name}_h"].astype(model.dtype)
    if model.cell == "lstm":
        return h, arrays[f"trainer/{name}_c"].astype(model.dtype)
    return h


def _atomic_savez(path, arrays):
    """np.savez to a temporary file beside `path`, fsync, then rename over `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(prefix=".checkpoint-", suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    directory_descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_descriptor)  # make the rename itself durable
    finally:
        os.close(directory_descriptor)
