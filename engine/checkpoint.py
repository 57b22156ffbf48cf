"""Checkpoints: one .npz of arrays plus a JSON metadata entry (DESIGN.md section 7).

Entries: "metadata" (JSON: format, version, model and trainer config, counters, epoch
records, best epoch, user data such as the normalisation); "model/<name>" the
parameters under PyTorch's names; "optimizer/<key>" the optimizer state; "trainer/..."
the carried stream state and early-stopping copy; "history/<field>" per-update records.
Loaded with allow_pickle=False: reading a checkpoint never executes code.
"""
import json
import os

import numpy as np

from engine.files import atomic_write
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


def load(path, trainer_factory=None):
    """Read a checkpoint written by `save`: returns (model, trainer), trainer None when the
    file holds a model only. Raises CheckpointError with the reason otherwise.
    trainer_factory(model, config): builds the trainer to restore (default
    Trainer.from_config; RayTrainer.from_checkpoint continues on a cluster)."""
    from engine.trainer import Trainer

    arrays, meta = _read(path)
    try:
        model = Model(**meta["model"])
        model.load_state_dict({name: arrays[f"model/{name}"] for name in model.views})
        if meta["trainer"] is None:
            return model, None
        trainer = (trainer_factory or Trainer.from_config)(model, meta["trainer"]["config"])
        _restore_trainer(trainer, meta["trainer"], arrays)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise CheckpointError(f"{path}: checkpoint content does not match format "
                              f"{FORMAT} v{VERSION} ({type(error).__name__}: {error})") from None
    return model, trainer


def read_metadata(path):
    """The metadata dict of a checkpoint (model config, trainer counters, user data)."""
    return _read(path)[1]


def _read(path):
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with open(path, "rb") as file:
            contents = np.load(file, allow_pickle=False)
            if not isinstance(contents, np.lib.npyio.NpzFile):
                raise CheckpointError(f"{path}: not a {FORMAT} file (a single .npy array, not an .npz archive)")
            with contents as archive:
                arrays = {name: archive[name] for name in archive.files}
    except CheckpointError:
        raise
    except Exception as error:  # a damaged zip can raise almost anything (NotImplementedError, ...)
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupted?): "
                              f"{type(error).__name__}: {error}") from None
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
    """Fill a fresh trainer from the checkpoint, every array checked against the model."""
    model = trainer.model
    for key in trainer.optimizer_state:
        stored = arrays[f"optimizer/{key}"]
        if stored.shape != trainer.optimizer_state[key].shape:
            raise ValueError(f"optimizer/{key} has shape {stored.shape}, expected {trainer.optimizer_state[key].shape}")
        trainer.optimizer_state[key][...] = stored
    trainer.step, trainer.epoch, trainer.skipped = meta["step"], meta["epoch"], meta["skipped"]
    columns = {f: arrays[f"history/{f}"] for f in UPDATE_FIELDS}
    if any(column.shape != (trainer.step,) for column in columns.values()):
        raise ValueError(f"history columns must hold one entry per update ({trainer.step}); got shapes "
                         f"{ {f: column.shape for f, column in columns.items()} }")
    trainer.history = History.from_arrays(columns, meta["epochs"])
    trainer.state = _state_entry(model, arrays, "state")
    trainer._history_state = _state_entry(model, arrays, "history_state")
    history_x = arrays.get("trainer/history_x")
    if history_x is not None:
        state = trainer._history_state
        if (state is None or history_x.ndim != 3 or history_x.shape[1:] != (_batch(state), model.input_size)
                or not np.all(np.isfinite(history_x))):
            raise ValueError(f"trainer/history_x (shape {history_x.shape}) does not match the carried "
                             "state and the model's input_size, or is not finite")
        trainer._history_x = np.ascontiguousarray(history_x, dtype=model.dtype)
    trainer._last_good[...] = model.params
    if meta["best"] is not None:
        best_params = arrays["trainer/best_params"]
        if best_params.shape != model.params.shape:
            raise ValueError(f"trainer/best_params has shape {best_params.shape}, expected {model.params.shape}")
        trainer.best = dict(meta["best"], params=best_params.astype(model.dtype))


def _state_entry(model, arrays, name):
    """The stored state `name` checked against the model: h (L, B, H), for LSTM (h, c)."""
    if f"trainer/{name}_h" not in arrays:
        return None
    parts = [arrays[f"trainer/{name}_{part}"] for part in ("hc" if model.cell == "lstm" else "h")]
    for part in parts:
        if part.ndim != 3 or part.shape != parts[0].shape or part.shape[::2] != (model.num_layers, model.hidden_size):
            raise ValueError(f"trainer/{name} has shape {part.shape}, expected "
                             f"({model.num_layers}, B, {model.hidden_size})")
    parts = tuple(np.ascontiguousarray(part, dtype=model.dtype) for part in parts)
    return parts if model.cell == "lstm" else parts[0]


def _batch(state):
    return (state[0] if isinstance(state, tuple) else state).shape[1]


def _atomic_savez(path, arrays):
    """np.savez through engine.files.atomic_write: a crash leaves any previous file intact."""
    with atomic_write(path) as file:
        np.savez(file, **arrays)
