"""Whole jobs on a series, as library functions the `bptt` command only wraps:
train with checkpoints, forecast ahead, evaluate against the persistence baseline.
Each also takes a panel of many series (engine.panel, DESIGN.md section 13)."""
import functools
import glob
import inspect
import math
import os

import numpy as np

from engine.checkpoint import check_schema, load, read_metadata, save
from engine.data import (DataError, Normalizer, TrainingData, mae, mse, persistence_baseline,
                         prepare_forecast_data, prepare_training_data, rmse, to_original_units)
from engine.files import check_output
from engine.footprint import require, training_bytes
from engine.model import Model
from engine.optim import make_optimizer
from engine.panel import (PANEL_DATA_OPTIONS, PANEL_RECIPE_SCHEMA, Panel, evaluate_panel, forecast_panel,
                          is_panel_recipe, prepare_panel_training_data)
from engine.schedules import make_schedule
from engine.series import as_series
from engine.series import zones
from engine.series.times import infer_frequency, is_row, next_stamps, start_row
from engine.thread_plan import available_cores
from engine.trainer import Trainer
from engine.validation import check_float, check_int

DATA_OPTIONS = ("inputs", "targets", "horizon", "streams", "val_fraction", "fill", "difference")
RESUMABLE = ("lr", "memory")  # trainer options a resumed run may change
_NORM_SCHEMA = {"mean": ["number"], "std": ["number"]}
RECIPE_SCHEMA = {  # the data recipe train_series stores in a checkpoint's user metadata
    "source": "str", "columns": ["str"], "inputs": ["str"], "targets": ["str"], "horizon": "int",
    "fill": ("str", None), "difference": "bool", "streams": "int", "val_fraction": "number",
    "input_norm": _NORM_SCHEMA, "target_norm": _NORM_SCHEMA}


def train_series(source, output, model_options=None, trainer_options=None, data_options=None,
                 schedule=None, epochs=10, patience=None, resume=False, on_start=None,
                 on_update=None, on_epoch=None, key=None, cluster=None):
    """Train on a series (path, demo Series or array) and checkpoint to `output` after
    every epoch, so an interrupted run loses at most one epoch.

    model_options / trainer_options: keyword arguments of Model / Trainer (input_size and
    output_size come from the data). data_options: keyword arguments of
    prepare_training_data. schedule: keyword arguments of engine.schedules.make_schedule;
    a "cosine" schedule without total_steps runs over all the updates of the run.
    resume: continue the checkpoint at `output` up to `epochs` epochs in all, with its
    own model, trainer and data settings and its stored normalisation (never refitted).
    A panel (an engine.panel.Panel, a directory or glob of files, or data_options with
    id_column, series_columns or scale; see engine.panel.prepare_panel_training_data)
    trains on its series packed into the streams with resets.
    Options given with resume must agree with the checkpoint (ResumeConflict names the
    first that does not), except RESUMABLE trainer options (lr, memory), which apply.
    on_start(info) gets {"epochs",
    "updates_per_epoch", "steps_per_update"} before training; on_update / on_epoch as in
    Trainer.fit. cluster: optional {"address", "workers"}: train on a Ray cluster with
    engine.distributed.RayTrainer (also when resuming). source may also be TrainingData
    already prepared (a sweep prepares once for many runs); output None writes no
    checkpoint. Returns (model, trainer, data)."""
    epochs = check_int("epochs", epochs)
    if output is not None:  # before any work: never an input, a link or read-only
        check_output(output, inputs=[source] if isinstance(source, (str, os.PathLike)) else [],
                     what="checkpoint")
    new_trainer, restored_trainer = _trainer_makers(cluster)
    if resume:
        model, trainer = load(output, trainer_factory=restored_trainer)
        if trainer is None:
            raise DataError(f"{output}: holds a model only, no training state to resume")
        recipe = read_recipe(output, read_metadata(output)["user"])
        _check_resume_options(model, trainer, recipe, model_options or {}, trainer_options or {},
                              data_options or {}, schedule or {})
        for name in RESUMABLE:
            if name in (trainer_options or {}):
                _resume_with(trainer, name, trainer_options[name])
        data_options = {name: recipe[name] for name in DATA_OPTIONS + _panel_options(recipe)}
        if is_panel_recipe(recipe):
            data_options["scaling"] = recipe["scaling"]  # the statistics of each series, kept
    data = source if isinstance(source, TrainingData) else _prepare_training_data(source, key, data_options)
    if resume:
        _check_resume_time_column(data.metadata, recipe)
        data = _with_normalisation(data, recipe)
    steps, streams = data.x_train.shape[:2]
    k1 = trainer.k1 if resume else (trainer_options or {}).get("k1", 50)
    if k1 is not None:
        k1 = check_int("k1", k1)  # before the schedule divides by it
    updates_per_epoch = 1 if k1 is None else math.ceil(steps / k1)
    if not resume:
        _require_training_memory(model_options or {}, trainer_options or {}, data)
        schedule = _resolve_schedule(schedule, updates_per_epoch * epochs)
        model = Model(input_size=data.x_train.shape[2], output_size=data.y_train.shape[2],
                      **(model_options or {}))
        trainer = new_trainer(model, schedule=schedule, **(trainer_options or {}))
    _check_data_fits(model, trainer, data)
    validation = None if data.x_val is None else (data.x_val, data.y_val)
    metadata = {"data": data.metadata}
    remaining = epochs - trainer.epoch
    if on_start is not None:
        on_start({"epochs": epochs, "done": trainer.epoch, "updates_per_epoch": updates_per_epoch,
                  "steps_per_update": (steps if k1 is None else k1) * streams})

    def checkpoint(record):
        if output is not None:
            save(output, model, trainer, metadata)
        if on_epoch is not None:
            on_epoch(record)

    if remaining > 0:
        trainer.fit(data.x_train, data.y_train, epochs=remaining, validation=validation,
                    patience=patience, on_update=on_update, on_epoch=checkpoint,
                    resets=getattr(data, "resets", None))
    if output is not None:
        save(output, model, trainer, metadata)  # early stopping may have restored the best
    return model, trainer, data


def _prepare_training_data(source, key, options):
    """prepare_training_data, or prepare_panel_training_data for a panel source."""
    options = dict(options or {})
    panel_options = {name: options.pop(name) for name in PANEL_DATA_OPTIONS if name in options}
    if is_panel_source(source, panel_options):
        return prepare_panel_training_data(source, key=key, **options, **panel_options)
    given = [name for name, value in panel_options.items() if value is not None]
    if given:
        raise DataError(f"{', '.join(given)}: only for a panel of series (give id_column or "
                        "series_columns, or a directory of files)")
    return prepare_training_data(source, key=key, **options)


def is_panel_source(source, options):
    """A Panel, a directory or glob of files, or options naming ids or series columns."""
    if isinstance(source, Panel):
        return True
    if any(options.get(name) is not None for name in ("id_column", "series_columns", "scale")):
        return True
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        return os.path.isdir(path) or (not os.path.exists(path) and glob.has_magic(path))
    return False


def _panel_options(recipe):
    """The panel data options a recipe stores (none for a single series)."""
    return PANEL_DATA_OPTIONS if is_panel_recipe(recipe) else ()


def _trainer_makers(cluster):
    """(new, from_config) trainer constructors: Trainer's, or RayTrainer's on `cluster`."""
    if cluster is None:
        return Trainer, None
    from engine.distributed import RayTrainer

    return (functools.partial(RayTrainer, **cluster),
            lambda model, config: RayTrainer.from_config(model, config, **cluster))


def _resolve_schedule(options, total_updates):
    """make_schedule(**options), giving a cosine the run's length after warm-up."""
    options = dict(options or {})
    if options.get("name") == "cosine" and "total_steps" not in options:
        options["total_steps"] = max(total_updates - options.get("warmup_steps", 0), 1)
    return make_schedule(**options)


def forecast_series(model, metadata, source, steps, key=None, **panel_options):
    """Forecast `steps` steps past the end of a series, in original units (steps, O).

    The state warms up over the whole series; beyond the model's horizon the forecasts
    are fed back as inputs, which needs a model whose inputs are its targets. For a
    model trained on a panel: engine.panel.forecast_panel (a Table, one row per (id,
    time)), panel_options its series_id, id_column, series_columns, time_column."""
    steps = check_int("steps", steps)
    recipe = metadata["data"]
    if is_panel_recipe(recipe):
        return forecast_panel(model, metadata, source, steps, key=key, **panel_options)
    source = _single_series_only(source, panel_options)
    data = prepare_forecast_data(source, recipe, key=key)
    horizon = recipe["horizon"]
    y_hat, state = model.forward(data.x)  # (T', 1, O)
    if steps <= horizon:
        # The outputs of the last `horizon` rows already forecast the next `horizon` steps.
        rows = slice(len(y_hat) - horizon, len(y_hat) - horizon + steps)
        return to_original_units(y_hat[rows, 0], data.base[rows], recipe)
    if horizon != 1 or recipe["inputs"] != recipe["targets"]:
        raise DataError(f"--steps {steps} needs feeding forecasts back, which needs a model trained "
                        "with --horizon 1 and its inputs equal to its targets; "
                        f"this one has horizon {horizon}, inputs {recipe['inputs']}, targets {recipe['targets']}")
    input_norm = Normalizer.from_dict(recipe["input_norm"])
    level = data.base[-1].copy()  # (O,) last observed level
    require(steps * len(level) * 8, f"--steps {steps} forecasts")  # before allocating them
    forecasts = np.empty((steps, len(level)))
    output = y_hat[-1:]  # (1, 1, O)
    for step in range(steps):
        forecast = to_original_units(output[:, 0], level[None], recipe)[0]
        fed_back = forecast - level if recipe["difference"] else forecast
        forecasts[step], level = forecast, forecast
        if step + 1 < steps:
            x_next = input_norm.transform(fed_back[None])[:, None, :]  # (1, 1, I)
            output, state = model.forward(x_next, state)
    return forecasts


def forecast_times(metadata, source, steps, key=None):
    """The time stamps of forecast_series's `steps` forecasts: (steps,) datetime64 after the
    series' last time, at its frequency (inferred from the series, else the one stored at
    training), or None when the series has no time column or no frequency. For a series
    with a time zone the stamps are UTC instants (forecast_labels writes them in the zone)."""
    series = as_series(source, key)
    if series.time is None:
        return None
    frequency = (infer_frequency(series.time, series.time_zone)
                 or (metadata["data"].get("time") or {}).get("frequency"))
    if frequency is None:
        return None
    return next_stamps(series.time[-1], frequency, check_int("steps", steps), series.time_zone)


def forecast_labels(metadata, source, steps, key=None):
    """forecast_times as ISO 8601 text in the series' zone (with its offset), or None."""
    series = as_series(source, key)
    stamps = forecast_times(metadata, series, steps)
    return None if stamps is None else zones.labels(stamps, series.time_zone)


def evaluate_series(model, metadata, source, key=None, start=None, **panel_options):
    """MSE, MAE and RMSE of the model's forecasts over a series, in original units, beside
    the persistence baseline on the same targets. start: score only the rows from this
    one on (engine.series.times.start_row: a row number, negative from the end, -5 the last
    5 rows; or a date/time of a series with a time column, in its zone: its first row at
    or after it), the state warmed up on every row before. Returns a dict of floats. For
    a model trained on a panel: engine.panel.evaluate_panel (per-series and aggregate
    metrics), panel_options its season, series_id, id_column, series_columns, time_column."""
    recipe = metadata["data"]
    if is_panel_recipe(recipe):
        return evaluate_panel(model, metadata, source, key=key, start=start, **panel_options)
    source = _single_series_only(source, panel_options)
    series = as_series(source, key)
    first = _start_row(series, start)
    data = prepare_forecast_data(series, recipe)
    horizon = recipe["horizon"]
    if len(data.x) <= horizon:
        raise DataError(f"the series has {len(data.x)} usable steps; evaluation needs more than "
                        f"the horizon ({horizon})")
    y_hat, _ = model.forward(data.x)
    predictions = to_original_units(y_hat[:-horizon, 0], data.base[:-horizon], recipe)
    targets = data.levels[horizon:].copy()
    # targets[i] is row i + horizon of the series (one more with differencing)
    targets[:max(first - horizon - int(recipe["difference"]), 0)] = np.nan
    baseline = persistence_baseline(data.levels, horizon)
    scored = np.isfinite(targets) & np.isfinite(baseline)  # the baseline needs a past value
    targets = np.where(scored, targets, np.nan)
    if not scored.any():
        raise DataError("the series has no observed target to evaluate" +
                        (f" from row {first} on" if first else ""))
    return {"mse": mse(predictions, targets), "mae": mae(predictions, targets),
            "rmse": rmse(predictions, targets), "baseline_mse": mse(baseline, targets),
            "baseline_mae": mae(baseline, targets), "baseline_rmse": rmse(baseline, targets),
            "steps": int(scored.any(axis=1).sum())}


def _single_series_only(source, panel_options):
    """The source of a model trained on one series: no panel options, a panel of one."""
    given = [name for name, value in panel_options.items() if value is not None]
    if given:
        raise DataError(f"{', '.join(given)}: only for a model trained on a panel of series")
    if isinstance(source, Panel):
        if len(source) != 1:
            raise DataError(f"the model was trained on one series; {source.source} is a panel of "
                            f"{len(source)} series")
        return source.series[0]
    return source


def _start_row(series, start):
    """The row `start` names (engine.series.times.start_row: a row, negative from the end,
    or a date/time in the series' zone), which must be one of the series'."""
    steps = len(series.values)
    row = start_row(start, steps, series.time, series.time_zone, series.source)
    if is_row(start) and not -steps <= int(start) < steps:
        raise DataError(f"from: row {start} is outside the series (rows 0..{steps - 1}, or -{steps}..-1 "
                        "from the end)")
    if row >= steps:
        last = zones.labels(series.time[-1:], series.time_zone)[0]
        raise DataError(f"from: {start} is after the last time of the series ({last})")
    return row


def load_for_inference(path):
    """(model, metadata) of a checkpoint written by train_series; errors if it has no data recipe."""
    model, _ = load(path)
    metadata = read_metadata(path)["user"]
    read_recipe(path, metadata)
    return model, metadata


def read_recipe(path, user_metadata):
    """The data recipe in a checkpoint's user metadata, checked whole against RECIPE_SCHEMA
    (PANEL_RECIPE_SCHEMA for a panel's)."""
    if "data" not in user_metadata:
        raise DataError(f"{path}: checkpoint has no data recipe (not written by bptt train)")
    recipe = user_metadata["data"]
    check_schema(path, recipe, PANEL_RECIPE_SCHEMA if is_panel_recipe(recipe) else RECIPE_SCHEMA,
                 "metadata.user.data")
    return user_metadata["data"]


class ResumeConflict(ValueError):
    """An option given with resume disagrees with the checkpoint: option (its name here),
    given and stored (the values)."""

    def __init__(self, option, given, stored):
        super().__init__(f"resume: {option}={given!r} conflicts with the checkpoint's {option}={stored!r}; "
                         "a resumed run keeps the checkpoint's settings (only epochs, patience, "
                         f"{', '.join(RESUMABLE)} may change): drop the option or train a new model")
        self.option, self.given, self.stored = option, given, stored


def _check_resume_options(model, trainer, recipe, model_options, trainer_options, data_options, schedule):
    """Raise ResumeConflict for the first given option that differs from the checkpoint's."""
    stored = {**model.config, **trainer.config, "optimizer": trainer.optimizer.name,
              **{name: recipe[name] for name in DATA_OPTIONS + _panel_options(recipe)}}
    given = {**model_options, **data_options,
             **{name: value for name, value in trainer_options.items() if name not in RESUMABLE}}
    if "k2" in given and given["k2"] is None:  # k2 None means k2 = k1
        given["k2"] = given.get("k1", stored["k1"])
    for name in ("inputs", "targets"):  # a spec ("temp,2") as the column names it chooses
        if given.get(name) is not None:
            given[name] = _column_names(given[name], recipe["columns"])
    if "optimizer" in given and not isinstance(given["optimizer"], str):
        given["optimizer"] = given["optimizer"].name
    for name, value in given.items():
        if name in stored and value != stored[name]:
            raise ResumeConflict(name, value, stored[name])
        if name not in stored and name in PANEL_DATA_OPTIONS and value is not None:
            raise ResumeConflict(name, value, None)   # a panel option on a single-series checkpoint
    stored_schedule = _schedule_settings(trainer.schedule.config)
    for name, value in schedule.items():
        if value != stored_schedule.get(name, value):
            raise ResumeConflict("schedule" if name == "name" else name, value, stored_schedule[name])


def _check_resume_time_column(metadata, recipe):
    """A resumed single series keeps its checkpoint's time column (its record would be lost
    or replaced): ResumeConflict when the data's differs."""
    if is_panel_recipe(recipe):
        return   # the panel's time_column is a data option, compared with the others
    given, stored = ((record.get("time") or {}).get("column") for record in (metadata, recipe))
    if given != stored:
        raise ResumeConflict("time_column", False if given is None else given, stored)


def _column_names(spec, columns):
    """The names a column spec (None, "a,2" or a list) chooses among `columns`."""
    tokens = [token.strip() for token in spec.split(",")] if isinstance(spec, str) else list(spec)
    return [columns[int(token)] if str(token).isdigit() and str(token) not in columns
            and int(token) < len(columns) else str(token) for token in tokens]


def _schedule_settings(config):
    """A schedule config as make_schedule's options: {"name", "warmup_steps"[, "step_size"]}."""
    warmup = config.get("warmup_steps", 0) if config["name"] == "warmup" else 0
    inner = config["after"] if config["name"] == "warmup" else config
    return {"warmup_steps": warmup, **{key: value for key, value in inner.items()
                                        if key in ("name", "step_size")}}


def _resume_with(trainer, name, value):
    """Apply a RESUMABLE option to a loaded trainer (validated as Trainer does)."""
    if name == "lr":
        trainer.optimizer.lr = check_float("lr", value, minimum=0, strictly_greater=True)
    else:
        trainer.memory = value if value in (None, "sqrt") else check_int("memory", value)


def _with_normalisation(data, recipe):
    """The training data normalised with the recipe's stored statistics, not refitted ones
    (a panel's data is prepared with them already)."""
    if is_panel_recipe(recipe):
        return data
    stored = {part: recipe[f"{part}_norm"] for part in ("input", "target")}
    if all(data.metadata[f"{part}_norm"] == stored[part] for part in stored):
        return data  # the same data: the same statistics, bit for bit
    norms = {part: (Normalizer.from_dict(data.metadata[f"{part}_norm"]), Normalizer.from_dict(stored[part]))
             for part in stored}

    def renormalise(values, part):
        refitted, kept = norms[part]
        return None if values is None else kept.transform(refitted.inverse_transform(values))
    return data._replace(x_train=renormalise(data.x_train, "input"), y_train=renormalise(data.y_train, "target"),
                         x_val=renormalise(data.x_val, "input"), y_val=renormalise(data.y_val, "target"),
                         metadata={**data.metadata, "input_norm": stored["input"], "target_norm": stored["target"]})


def _require_training_memory(model_options, trainer_options, data):
    """Before the model is made, the whole run's buffers must fit in memory (a model that fits
    alone may not with its optimizer state). Invalid options are left to Model and Trainer."""
    model, trainer = {**_defaults(Model), **model_options}, {**_defaults(Trainer), **trainer_options}
    steps, streams, inputs = data.x_train.shape
    try:
        k1 = trainer["k1"] and check_int("k1", trainer["k1"])
        window = steps if k1 is None else min(max(check_int("k2", trainer["k2"] or k1), k1), steps)
        needed = training_bytes(
            model["cell"], inputs, check_int("hidden_size", model["hidden_size"]), data.y_train.shape[2],
            check_int("num_layers", model["num_layers"]), np.dtype(model["dtype"]).itemsize, window, streams,
            min(trainer["shards"] or available_cores(), streams),  # the most shards a plan may use
            len(make_optimizer(trainer["optimizer"], trainer["lr"]).buffer_names()), trainer["memory"])
    except (KeyError, TypeError, ValueError):
        return
    require(needed, f"training {model['num_layers']} layer(s) x {model['hidden_size']} hidden on windows "
                    f"of {window} steps x {streams} streams")


def _defaults(cls):
    return {name: parameter.default for name, parameter in inspect.signature(cls).parameters.items()
            if parameter.default is not inspect.Parameter.empty}


def _check_data_fits(model, trainer, data):
    """Shapes of the data against the model, and enough steps per stream for k1."""
    if data.x_train.shape[2] != model.input_size or data.y_train.shape[2] != model.output_size:
        raise DataError(f"the data has {data.x_train.shape[2]} inputs and {data.y_train.shape[2]} "
                        f"targets; the model expects {model.input_size} and {model.output_size}")
    steps = data.x_train.shape[0]
    if trainer.k1 is not None and steps < trainer.k1:
        raise DataError(f"each of the {data.x_train.shape[1]} streams has {steps} steps, fewer than "
                        f"--k1 {trainer.k1}; lower --k1 or --streams, or use a longer series")
