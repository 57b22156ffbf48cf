"""Checkpoints: one .npz of arrays plus a JSON metadata entry, loaded without pickle.

Entries: "metadata" (JSON: format, version, the writer's BLAS backend, model and
trainer config, counters, epoch records, best epoch, user data such as the
normalisation); "model/<name>" the
parameters under PyTorch's names; "optimizer/<key>" the optimizer state; "trainer/..."
the carried stream state and early-stopping copy; "history/<field>" per-update records.
Loaded with allow_pickle=False: reading a checkpoint never executes code.
"""
import json
import math
import os
import re
import zipfile

import numpy as np

from engine.blas import backend
from engine.files import atomic_write, check_output
from engine.footprint import format_bytes, parameter_count, require
from engine.history import UPDATE_FIELDS, History
from engine.model import Model
from engine.parameters import GATES
from engine.validation import as_resets

FORMAT = "bptt-checkpoint"
VERSION = 1
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip
# Bounds checked before the metadata is parsed: one epoch record is about 60 characters,
# stored as 4 bytes each (numpy's str), and the schema below nests 5 levels (user data a few more).
MAX_METADATA_BYTES = 64 * 2 ** 20
MAX_METADATA_DEPTH = 64
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"')
_OPENING, _CLOSING = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, corrupted or not ours."""


# ---------------------------------------------------------------- metadata schema
# A schema is a type name ("int", "number", "str", "bool", "dict", "list"), a tuple of
# alternatives (None: null allowed), a dict {key: schema} of required keys (a key ending
# in "?" is optional; other keys are allowed, for forward compatibility) or a list
# [schema] of items. Types are JSON's: a bool is not an int, an int is a number.

MODEL_SCHEMA = {"cell": "str", "input_size": "int", "hidden_size": "int", "output_size": "int",
                "num_layers": "int", "nonlinearity": "str", "dtype": "str", "init": "str",
                "forget_bias": "number", "seed": "int", "bidirectional?": "bool",  # absent: False (older files)
                "dropout?": "number", "recurrent_dropout?": "number", "zoneout?": "number",  # absent: 0
                "skip?": "bool"}  # absent: False (no linear path: older files)
TRAINER_CONFIG_SCHEMA = {
    "loss": "str", "k1": ("int", None), "k2": ("int", None), "clip_norm": ("number", None),
    "clip_value": ("number", None), "on_divergence": "str", "diagnostics": "bool",
    "shards": ("int", None), "memory": ("int", "str", None), "history_updates?": ("int", None),
    "gradient?": "str", "seed?": "int", "quantiles?": (["number"], None),
    "optimizer": {"name": "str", "lr": "number"}, "schedule": {"name": "str"}}
SCHEMAS = {  # per format version: the whole metadata entry
    1: {"format": "str", "version": "int", "model": MODEL_SCHEMA, "user": "dict",
        "blas?": {"name": "str", "version": ("str", None)},  # the writer's BLAS (engine/blas.py); older files lack it
        "trainer": (None, {"config": TRAINER_CONFIG_SCHEMA, "step": "int", "epoch": "int",
                           "skipped": "int", "best": (None, {"loss": "number", "epoch": "int"}),
                           "generator?": "dict",
                           "epochs": [{"epoch": "int", "loss": "number", "val_loss?": "number"}]})},
}
_TYPES = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "str": lambda v: isinstance(v, str), "bool": lambda v: isinstance(v, bool),
          "dict": lambda v: isinstance(v, dict), "list": lambda v: isinstance(v, list)}


def schema_problems(value, schema, where):
    """Every way `value` departs from `schema` (see above), as ["where: what", ...]."""
    if schema is None:
        return [] if value is None else [f"{where} must be null; got {_describe(value)}"]
    if isinstance(schema, str):
        return [] if _TYPES[schema](value) else [f"{where} must be {_article(schema)}; got {_describe(value)}"]
    if isinstance(schema, tuple):
        if value is None and None in schema:
            return []
        for option in (option for option in schema if option is not None):
            problems = schema_problems(value, option, where)
            if not problems or not isinstance(option, str):
                return problems  # a dict alternative explains itself in detail
        return [f"{where} must be {' or '.join('null' if o is None else _article(o) for o in schema)}; "
                f"got {_describe(value)}"]
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{where} must be a list; got {_describe(value)}"]
        return [p for index, item in enumerate(value) for p in schema_problems(item, schema[0], f"{where}[{index}]")]
    if not isinstance(value, dict):
        return [f"{where} must be a dict; got {_describe(value)}"]
    problems = []
    for key, item_schema in schema.items():
        name = key.rstrip("?")
        if name in value:
            problems += schema_problems(value[name], item_schema, f"{where}.{name}")
        elif not key.endswith("?"):
            problems.append(f"{where}.{name} is missing")
    return problems


def check_schema(path, value, schema, where):
    """Raise CheckpointError naming every problem of `value` against `schema`."""
    problems = schema_problems(value, schema, where)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CheckpointError(f"{path}: checkpoint content does not match format {FORMAT} "
                              f"v{VERSION}: {shown}")


def _article(type_name):
    return {"int": "an integer", "number": "a number", "str": "a string", "bool": "true or false",
            "dict": "a dict", "list": "a list"}.get(type_name, "a dict")


def _describe(value):
    return "null" if value is None else f"{type(value).__name__} {json.dumps(value)[:40]}"


def save(path, model, trainer=None, metadata=None):
    """Write `model` (and `trainer`, if given, so training resumes exactly) to `path`
    atomically: a crash mid-write leaves any previous file intact. A `path` that is a
    symbolic link, a device, FIFO or directory, or read-only, is refused (OutputError).
    metadata: optional JSON-able dict stored as is (the CLI keeps the data normalisation there)."""
    check_output(path, what="checkpoint")
    blas = backend()
    meta = {"format": FORMAT, "version": VERSION, "model": model.config,
            "trainer": None, "user": metadata or {}, "blas": {"name": blas["name"], "version": blas["version"]}}
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
    with open(path, "rb") as file:
        magic = file.read(len(_NPY_MAGIC))
    if not magic:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupted?): the file is empty")
    if magic.startswith(_NPY_MAGIC):
        raise CheckpointError(f"{path}: not a {FORMAT} file (a single .npy array, not an .npz archive)")
    if not magic.startswith(_ZIP_MAGICS):
        raise CheckpointError(f"{path}: not a bptt checkpoint (the file is not an .npz archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {_entry_name(info): info for info in archive.infolist()}
            meta = _metadata(path, archive, members)
            arrays = _members(path, archive, members, meta)
    except CheckpointError:
        raise
    except Exception as error:  # a damaged zip can raise almost anything (BadZipFile, NotImplementedError, ...)
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupted?): "
                              f"{type(error).__name__}: {error}") from None
    return arrays, meta


def _entry_name(info):
    """np.savez's member "name.npy" as the array's name (anything else keeps its full name)."""
    return info.filename[:-4] if info.filename.endswith(".npy") else info.filename


def _metadata(path, archive, members):
    """The metadata entry, checked: bounded in size and nesting before JSON parses it, then
    against the schema of its format version."""
    info = members.get("metadata")
    if info is None:
        raise CheckpointError(f"{path}: not a {FORMAT} file (no bptt metadata entry)")
    if info.file_size > MAX_METADATA_BYTES:
        raise CheckpointError(f"{path}: not a {FORMAT} file (its metadata entry declares "
                              f"{format_bytes(info.file_size)}; bptt metadata is at most "
                              f"{format_bytes(MAX_METADATA_BYTES)})")
    entry = _array(path, archive, info)
    if entry.shape != () or entry.dtype.kind != "U":
        raise CheckpointError(f"{path}: not a {FORMAT} file (no bptt metadata entry)")
    text = str(entry)
    depth = _json_depth(text)
    if depth > MAX_METADATA_DEPTH:
        raise CheckpointError(f"{path}: not a {FORMAT} file (its metadata nests {depth} levels deep; "
                              f"bptt metadata has at most {MAX_METADATA_DEPTH})")
    try:
        meta = json.loads(text)
        known = meta.get("format") == FORMAT
    except (ValueError, AttributeError):
        known = False
    if not known:
        raise CheckpointError(f"{path}: not a {FORMAT} file (no bptt metadata entry)")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('version')} is not "
                              f"supported (this version reads {VERSION})")
    check_schema(path, meta, SCHEMAS[VERSION], "metadata")
    if meta["trainer"] is not None:
        _check_optimizer_config(path, meta["trainer"]["config"]["optimizer"])
    return meta


def _json_depth(text):
    """The deepest nesting of [ and { in JSON `text`, brackets inside strings not counted."""
    outside = _JSON_STRING.sub('""', text).encode("utf-8", "surrogatepass")
    codes = np.frombuffer(outside, np.uint8)
    steps = np.isin(codes, _OPENING).astype(np.int64) - np.isin(codes, _CLOSING)
    return int(np.cumsum(steps).max(initial=0))


def _members(path, archive, members, meta):
    """Every array of the archive but the metadata, each checked before it is read: a name
    the metadata expects, stored uncompressed (as np.savez writes), a shape the metadata
    implies, and a declared size that is the header's shape; all of them must fit in memory."""
    headers = {}
    for name, info in members.items():
        if name == "metadata":
            continue
        expected = _expected_shape(path, name, meta)
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"{path}: not a {FORMAT} file (member {info.filename} is compressed; "
                                  "bptt writes checkpoints uncompressed)")
        shape, dtype = headers[name] = _header(path, archive, info)
        if len(shape) != len(expected) or any(want is not None and got != want
                                              for got, want in zip(shape, expected)):
            implied = tuple("B" if want is None else want for want in expected)
            raise CheckpointError(f"{path}: checkpoint content does not match format {FORMAT} v{VERSION}: "
                                  f"{name} has shape {shape}, the metadata implies {implied}")
        if name.startswith("history/") and shape[0] > meta["trainer"]["step"]:
            raise CheckpointError(f"{path}: checkpoint content does not match format {FORMAT} v{VERSION}: "
                                  f"{name} holds {shape[0]} updates, more than the "
                                  f"{meta['trainer']['step']} the metadata counts")
    require(sum(info.file_size for info in members.values()), f"reading {path}")
    return {name: _array(path, archive, members[name]) for name in headers}


def _expected_shape(path, name, meta):
    """The shape the metadata implies for member `name` (None: an axis it does not fix, such
    as the number of streams); a CheckpointError for a member no checkpoint has."""
    model = meta["model"]
    if model["cell"] not in GATES:
        raise CheckpointError(f"{path}: checkpoint content does not match format {FORMAT} v{VERSION}: "
                              f"metadata.model.cell {model['cell']!r} is not one of {', '.join(GATES)}")
    rows, inputs, hidden = GATES[model["cell"]] * model["hidden_size"], model["input_size"], model["hidden_size"]
    bidirectional = model.get("bidirectional", False)
    skip = model.get("skip", False)
    directions = 2 if bidirectional else 1
    layer = re.fullmatch(r"model/(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?", name)
    if layer and int(layer[2]) < model["num_layers"] and (bidirectional or not layer[3]):
        return {"weight_ih": (rows, inputs if layer[2] == "0" else directions * hidden), "weight_hh": (rows, hidden),
                "bias_ih": (rows,), "bias_hh": (rows,)}[layer[1]]
    if name in ("model/head.weight", "model/head.bias"):
        return (model["output_size"], directions * hidden)[:2 if name.endswith("weight") else 1]
    if name == "model/skip.weight" and skip:
        return (model["output_size"], inputs)
    if meta["trainer"] is not None:
        parameters = parameter_count(model["cell"], inputs, hidden, model["output_size"], model["num_layers"],
                                     bidirectional, skip)
        if name == "optimizer/step":
            return ()
        if re.fullmatch(r"optimizer/\w+", name) or name == "trainer/best_params":
            return (parameters,)
        if name in {f"history/{field}" for field in UPDATE_FIELDS}:
            return (None,)
        if re.fullmatch(r"trainer/(state|history_state)_[hc]", name):
            return (directions * model["num_layers"], None, hidden)
        if name == "trainer/history_x":
            return (None, None, inputs)
        if name == "trainer/history_resets":
            return (None, None)
        recurrent = parameters - model["output_size"] * (hidden + 1 + (inputs if skip else 0))
        if name in ("trainer/influence_h", "trainer/influence_c"):  # rtrl: (B, L, H, P); uoro: s~ (B, L, H, 1)
            return (None, model["num_layers"], hidden,
                    1 if meta["trainer"]["config"].get("gradient") == "uoro" else recurrent)
        if name == "trainer/influence_theta":  # uoro: theta~ (B, P)
            return (None, recurrent)
    raise CheckpointError(f"{path}: not a {FORMAT} file (unexpected member {name!r}, which its "
                          "metadata does not describe)")


def _header(path, archive, info):
    """(shape, dtype) of the .npy member `info`, read from its header alone; its declared size
    must be the header plus exactly the data the shape needs."""
    with archive.open(info) as file:
        version = np.lib.format.read_magic(file)
        if version not in _HEADER_READERS:
            raise ValueError(f"{info.filename}: .npy format version {version} is not supported")
        shape, _, dtype = _HEADER_READERS[version](file)
        header = file.tell()
    if dtype.hasobject:  # numpy would need pickle to read it, and pickle runs code: never
        raise CheckpointError(f"{path}: not a bptt checkpoint (it holds pickled Python objects, "
                              "which a checkpoint never does)")
    if header + math.prod(shape) * dtype.itemsize != info.file_size:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupted?): member "
                              f"{info.filename} declares {info.file_size} bytes, its shape {shape} "
                              f"of {dtype} needs {header + math.prod(shape) * dtype.itemsize}")
    return shape, dtype


def _array(path, archive, info):
    """The array of member `info`, its header checked first (no pickle)."""
    _header(path, archive, info)
    with archive.open(info) as file:
        return np.lib.format.read_array(file, allow_pickle=False)


def _check_optimizer_config(path, config):
    """Every hyper-parameter of the stored optimizer is there: none may fall back to a default."""
    from engine.optim import OPTIMIZERS

    if config["name"] in OPTIMIZERS:  # an unknown name is reported when the trainer is rebuilt
        missing = [key for key in OPTIMIZERS[config["name"]].hyperparameters if key not in config]
        if missing:
            check_schema(path, config, dict.fromkeys(missing, "number"), "metadata.trainer.config.optimizer")


def _trainer_metadata(trainer):
    best = None if trainer.best is None else {k: trainer.best[k] for k in ("loss", "epoch")}
    return {"config": trainer.config, "step": trainer.step, "epoch": trainer.epoch,
            "skipped": trainer.skipped, "best": best, "epochs": trainer.history.epochs,
            "generator": trainer.rng.bit_generator.state}


def _trainer_arrays(trainer):
    arrays = {f"optimizer/{key}": value for key, value in trainer.optimizer_state.items()}
    arrays.update({f"history/{field}": column for field, column in trainer.history.to_arrays().items()})
    for name, state in (("state", trainer.state), ("history_state", trainer._history_state)):
        if state is not None:
            for part, array in zip("hc", state if isinstance(state, tuple) else (state,)):
                arrays[f"trainer/{name}_{part}"] = array
    if trainer._history_x is not None:
        arrays["trainer/history_x"] = trainer._history_x
    if trainer._history_resets is not None:
        arrays["trainer/history_resets"] = trainer._history_resets
    if trainer.best is not None:
        arrays["trainer/best_params"] = trainer.best["params"]
    if trainer._online is not None and trainer.state is not None:  # the influence goes with the state
        arrays.update({f"trainer/{name}": array for name, array in trainer._online.checkpoint_arrays().items()})
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
    kept = len(columns["step"])  # the latest updates (Trainer(history_updates=N) keeps N)
    if (any(column.shape != (kept,) for column in columns.values()) or kept > trainer.step
            or not np.array_equal(columns["step"], np.arange(trainer.step - kept + 1, trainer.step + 1))):
        raise ValueError(f"history columns must hold one entry per update for the latest updates, "
                         f"ending at update {trainer.step}; got shapes "
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
    history_resets = arrays.get("trainer/history_resets")
    if history_resets is not None:
        if trainer._history_x is None:
            raise ValueError("trainer/history_resets is stored without trainer/history_x")
        trainer._history_resets = as_resets(history_resets, *trainer._history_x.shape[:2],
                                            name="trainer/history_resets")
    if "generator" in meta:  # UORO's signs go on where they stopped
        trainer.rng.bit_generator.state = meta["generator"]
    _restore_online(trainer, arrays)
    trainer._last_good[...] = model.params
    if meta["best"] is not None:
        best_params = arrays["trainer/best_params"]
        if best_params.shape != model.params.shape:
            raise ValueError(f"trainer/best_params has shape {best_params.shape}, expected {model.params.shape}")
        trainer.best = dict(meta["best"], params=best_params.astype(model.dtype))


def _restore_online(trainer, arrays):
    """rtrl/uoro: the carried influence, for the streams of the carried state."""
    stored = {name[len("trainer/"):]: array for name, array in arrays.items()
              if name.startswith("trainer/influence_")}
    if not stored:
        return
    if trainer.gradient == "bptt" or trainer.state is None:
        raise ValueError("trainer/influence_* needs gradient 'rtrl' or 'uoro' and a carried state; "
                         f"got gradient {trainer.gradient!r}, state {'none' if trainer.state is None else 'stored'}")
    trainer._online_for(_batch(trainer.state), 1).restore(stored)


def _state_entry(model, arrays, name):
    """The stored state `name` checked against the model: h (L, B, H), for LSTM (h, c)."""
    if f"trainer/{name}_h" not in arrays:
        return None
    parts = [arrays[f"trainer/{name}_{part}"] for part in ("hc" if model.cell == "lstm" else "h")]
    for part in parts:
        rows = model.num_layers * model.directions
        if part.ndim != 3 or part.shape != parts[0].shape or part.shape[::2] != (rows, model.hidden_size):
            raise ValueError(f"trainer/{name} has shape {part.shape}, expected ({rows}, B, {model.hidden_size})")
    parts = tuple(np.ascontiguousarray(part, dtype=model.dtype) for part in parts)
    return parts if model.cell == "lstm" else parts[0]


def _batch(state):
    return (state[0] if isinstance(state, tuple) else state).shape[1]


def _atomic_savez(path, arrays):
    """np.savez through engine.files.atomic_write: a crash leaves any previous file intact."""
    with atomic_write(path) as file:
        np.savez(file, **arrays)
