"""Whole jobs on a series, as library functions the `bptt` command only wraps:
train with checkpoints, forecast ahead, evaluate against the persistence baseline."""
import math
import numbers
import os

import numpy as np

from engine.checkpoint import load, read_metadata, save
from engine.data import (DataError, Normalizer, mae, mse, persistence_baseline,
                         prepare_forecast_data, prepare_training_data, rmse, to_original_units)
from engine.model import Model
from engine.schedules import make_schedule
from engine.series import as_series
from engine.series.times import infer_frequency, next_stamps, row_at
from engine.trainer import Trainer
from engine.validation import check_int

DATA_OPTIONS = ("inputs", "targets", "horizon", "streams", "val_fraction", "fill", "difference")


def train_series(source, output, model_options=None, trainer_options=None, data_options=None,
                 schedule=None, epochs=10, patience=None, resume=False, on_start=None,
                 on_update=None, on_epoch=None, key=None):
    """Train on a series (path, demo Series or array) and checkpoint to `output` after
    every epoch, so an interrupted run loses at most one epoch.

    model_options / trainer_options: keyword arguments of Model / Trainer (input_size and
    output_size come from the data). data_options: keyword arguments of
    prepare_training_data. schedule: keyword arguments of engine.schedules.make_schedule;
    a "cosine" schedule without total_steps runs over all the updates of the run.
    resume: continue the checkpoint at `output` up to `epochs` epochs in all, with its
    own model, trainer and data settings. on_start(info) gets {"epochs",
    "updates_per_epoch", "steps_per_update"} before training; on_update / on_epoch as in
    Trainer.fit. Returns (model, trainer, data)."""
    epochs = check_int("epochs", epochs)
    _check_writable(output)
    if resume:
        model, trainer = load(output)
        if trainer is None:
            raise DataError(f"{output}: holds a model only, no training state to resume")
        data_options = _stored_data_options(read_metadata(output))
    data = prepare_training_data(source, key=key, **(data_options or {}))
    steps, streams = data.x_train.shape[:2]
    k1 = trainer.k1 if resume else (trainer_options or {}).get("k1", 50)
    if k1 is not None:
        k1 = check_int("k1", k1)  # before the schedule divides by it
    updates_per_epoch = 1 if k1 is None else math.ceil(steps / k1)
    if not resume:
        schedule = _resolve_schedule(schedule, updates_per_epoch * epochs)
        model = Model(input_size=data.x_train.shape[2], output_size=data.y_train.shape[2],
                      **(model_options or {}))
        trainer = Trainer(model, schedule=schedule, **(trainer_options or {}))
    _check_data_fits(model, trainer, data)
    validation = None if data.x_val is None else (data.x_val, data.y_val)
    metadata = {"data": data.metadata}
    remaining = epochs - trainer.epoch
    if on_start is not None:
        on_start({"epochs": epochs, "done": trainer.epoch, "updates_per_epoch": updates_per_epoch,
                  "steps_per_update": (steps if k1 is None else k1) * streams})

    def checkpoint(record):
        save(output, model, trainer, metadata)
        if on_epoch is not None:
            on_epoch(record)

    if remaining > 0:
        trainer.fit(data.x_train, data.y_train, epochs=remaining, validation=validation,
                    patience=patience, on_update=on_update, on_epoch=checkpoint)
    save(output, model, trainer, metadata)  # early stopping may have restored the best
    return model, trainer, data


def _resolve_schedule(options, total_updates):
    """make_schedule(**options), giving a cosine the run's length after warm-up."""
    options = dict(options or {})
    if options.get("name") == "cosine" and "total_steps" not in options:
        options["total_steps"] = max(total_updates - options.get("warmup_steps", 0), 1)
    return make_schedule(**options)


def forecast_series(model, metadata, source, steps, key=None):
    """Forecast `steps` steps past the end of a series, in original units (steps, O).

    The state warms up over the whole series; beyond the model's horizon the forecasts
    are fed back as inputs, which needs a model whose inputs are its targets."""
    steps = check_int("steps", steps)
    recipe = metadata["data"]
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
    training), or None when the series has no time column or no regular frequency."""
    series = as_series(source, key)
    if series.time is None:
        return None
    frequency = infer_frequency(series.time) or (metadata["data"].get("time") or {}).get("frequency")
    return None if frequency is None else next_stamps(series.time[-1], frequency, check_int("steps", steps))


def evaluate_series(model, metadata, source, key=None, start=None):
    """MSE, MAE and RMSE of the model's forecasts over a series, in original units, beside
    the persistence baseline on the same targets. start: score only the rows from this
    one on (a row number, or a date/time of a series with a time column: its first row at
    or after it), the state warmed up on every row before. Returns a dict of floats."""
    recipe = metadata["data"]
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


def _start_row(series, start):
    """The row `start` names: a row number (0-based), or a date/time in the series' times."""
    if start is None:
        return 0
    steps = len(series.values)
    if isinstance(start, numbers.Integral) and not isinstance(start, bool):
        if not 0 <= start < steps:
            raise DataError(f"from: row {start} is outside the series (rows 0..{steps - 1})")
        return int(start)
    if series.time is None:
        raise DataError(f"from: {series.source} has no time column; give a row number (0..{steps - 1})")
    return row_at(series.time, start)


def load_for_inference(path):
    """(model, metadata) of a checkpoint written by train_series; errors if it has no data recipe."""
    model, _ = load(path)
    metadata = read_metadata(path)["user"]
    if "data" not in metadata:
        raise DataError(f"{path}: checkpoint has no data recipe (not written by bptt train)")
    return model, metadata


def _check_writable(output):
    """The checkpoint's directory must exist before training starts, not at the first save."""
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise ValueError(f"output: cannot write {output}: directory {directory} does not exist")


def _stored_data_options(metadata):
    recipe = metadata["user"].get("data")
    if recipe is None:
        raise DataError("the checkpoint has no data recipe (not written by bptt train)")
    return {name: recipe[name] for name in DATA_OPTIONS}


def _check_data_fits(model, trainer, data):
    """Shapes of the data against the model, and enough steps per stream for k1."""
    if data.x_train.shape[2] != model.input_size or data.y_train.shape[2] != model.output_size:
        raise DataError(f"the data has {data.x_train.shape[2]} inputs and {data.y_train.shape[2]} "
                        f"targets; the model expects {model.input_size} and {model.output_size}")
    steps = data.x_train.shape[0]
    if trainer.k1 is not None and steps < trainer.k1:
        raise DataError(f"each of the {data.x_train.shape[1]} streams has {steps} steps, fewer than "
                        f"--k1 {trainer.k1}; lower --k1 or --streams, or use a longer series")
