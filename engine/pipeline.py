"""Whole jobs on a series, as library functions the `bptt` command only wraps:
train with checkpoints, forecast ahead, evaluate against the persistence baseline.
Each also takes a panel of many series (engine.panel, docs/data.md)."""
import functools
import inspect
import math
import os
import warnings

import numpy as np
import pyarrow as pa

from engine.checkpoint import check_schema, load, read_metadata, save
from engine.data import (DataError, Normalizer, TrainingData, mae, mse, persistence_baseline,
                         prepare_forecast_data, prepare_training_data, rmse, to_original_units)
from engine import locks
from engine.files import OutputError, check_output, is_file_pattern, lock_path
from engine.forecasting.prepare import FORECAST_RECIPE_SCHEMA, describe_inputs, is_forecasting_recipe, prepare, \
    with_derived_k1
from engine.forecasting import forecast as forecasting, outputs as forecast_outputs
from engine.forecasting.backtest import backtest as run_backtest
from engine.forecasting.evaluate import evaluate as evaluate_forecasts
from engine.forecasting.outputs import DEFAULT_LEVELS
from engine.losses import parameter_count
from engine.footprint import forecast_bytes, require, training_bytes
from engine.model import Model
from engine.options import K1_FROM_DATA, OPTIONS, given_only, parse_options, train_arguments
from engine.optim import make_optimizer
from engine.panel import (PANEL_DATA_OPTIONS, PANEL_RECIPE_SCHEMA, Panel, PanelTrainingData, evaluate_panel,
                          forecast_panel, is_panel_recipe, prepare_panel_training_data)
from engine.schedules import make_schedule
from engine.series import Series, as_series
from engine.series.times import checked_start_row, infer_frequency, next_stamps
from engine.thread_plan import available_cores
from engine.trainer import Trainer
from engine.validation import check_float, check_in_dtype, check_int

DATA_OPTIONS = ("inputs", "targets", "horizon", "streams", "val_fraction", "fill", "difference")
FORECAST_OPTIONS = ("known", "calendar", "lags", "static")   # data options of a forecasting (version 2) recipe
RESUMABLE = ("lr", "memory")  # trainer options a resumed run may change
_NORM_SCHEMA = {"mean": ["number"], "std": ["number"]}
RECIPE_SCHEMA = {  # the data recipe train_series stores in a checkpoint's user metadata
    "source": "str", "columns": ["str"], "inputs": ["str"], "targets": ["str"], "horizon": "int",
    "fill": ("str", None), "difference": "bool", "streams": "int", "val_fraction": "number",
    "input_norm": _NORM_SCHEMA, "target_norm": _NORM_SCHEMA, **FORECAST_RECIPE_SCHEMA}


def train_series(data, output="model.npz", *legacy, resume=False, force=False, on_start=None,
                 on_update=None, on_epoch=None, cluster=None, **options):
    """Train on a series and checkpoint to `output` after every epoch, as `bptt train` does,
    so an interrupted run loses at most one epoch. Returns (model, trainer, data).

    data: a path (CSV, Parquet, Arrow, .npy, .npz), a directory or glob of files (a panel),
    a numpy array, a pandas DataFrame / Series, a pyarrow Table, an engine Series or Panel,
    or TrainingData / PanelTrainingData already prepared (a sweep prepares once for many
    runs; its data options are then not used). options: `bptt train`'s options by their
    Python names (engine.options.OPTIONS: hidden=16, k1=50, streams=16, epochs=5, inputs="a,b", ...),
    with the same defaults; an unknown name is a TypeError naming the valid ones.
    output: never replaced unless force (nor an input, a link or read-only); None writes
    no checkpoint. resume: continue the checkpoint at `output` up to `epochs` epochs in
    all, with its own model, trainer and data settings and its stored normalisation (never
    refitted); the options given must agree with it (ResumeConflict names the first that
    does not), except epochs, patience, lr and memory, which apply. on_start(info) gets
    {"epochs", "done", "updates_per_epoch", "steps_per_update", "inputs"} before training
    ("inputs": a line naming the lags and calendar features chosen from the data, or None); on_update /
    on_epoch as in Trainer.fit. cluster: optional {"address", "workers"}: train on a Ray
    cluster with engine.distributed.RayTrainer (also when resuming).

    The form train_series(source, output, model_options=, trainer_options=, data_options=,
    schedule=, epochs=, patience=, key=) with dicts of Model / Trainer / data-preparation /
    make_schedule keywords is deprecated and still works for this release."""
    if legacy or _legacy_form(options):
        warnings.warn("train_series(source, output, model_options=, trainer_options=, data_options=, "
                      "schedule=, ...) is deprecated; use train_series(data, output, **options) with "
                      "bptt train's option names (hidden=, k1=, streams=, epochs=, ...)",
                      DeprecationWarning, stacklevel=2)
        return _train_legacy(data, output, *legacy, resume=resume, force=force, on_start=on_start,
                             on_update=on_update, on_epoch=on_epoch, cluster=cluster, **options)
    arguments = train_arguments(parse_options(options))
    if resume:  # only what was given goes on, to be checked against the checkpoint
        arguments = given_only(arguments, options)
    return _train(data, output, **arguments, resume=resume, force=force, on_start=on_start,
                  on_update=on_update, on_epoch=on_epoch, cluster=cluster)


_LEGACY_KEYWORDS = ("model_options", "trainer_options", "data_options")


def _legacy_form(options):
    """The old call form: option dicts (or a schedule given as a dict)."""
    return any(name in options for name in _LEGACY_KEYWORDS) or isinstance(options.get("schedule"), dict)


def _train_legacy(source, output, model_options=None, trainer_options=None, data_options=None,
                  schedule=None, epochs=10, patience=None, resume=False, on_start=None, on_update=None,
                  on_epoch=None, key=None, cluster=None, force=False):
    """The deprecated form of train_series, with its own defaults (Model's and Trainer's, 10 epochs)."""
    return _train(source, output, model_options=model_options or {}, trainer_options=trainer_options or {},
                  data_options=data_options or {}, schedule=schedule or {}, epochs=epochs, patience=patience,
                  key=key, time_column=None, resume=resume, force=force, on_start=on_start,
                  on_update=on_update, on_epoch=on_epoch, cluster=cluster)


def _train(source, output, *, epochs, resume, force, **arguments):
    """train_series with the arguments of engine.options.train_arguments. The checkpoint is
    checked before any work and locked while the run writes it (engine.locks): a second run
    writing the same checkpoint at the same time is refused."""
    epochs = check_int("epochs", epochs)
    if output is None:
        return _train_checked(source, output, epochs=epochs, resume=resume, **arguments)
    # never an input, a link or read-only, nor replaced unforced
    check_output(output, inputs=[source] if isinstance(source, (str, os.PathLike)) else [],
                 what="checkpoint", replace=force or resume, hint=" or --resume to continue it")
    lock = lock_path(output)

    def refusal(pid):
        return OutputError(f"{os.fspath(output)}: another bptt train (pid {pid}) is writing this checkpoint; "
                           f"wait for it to end (if none runs, delete {lock})" if pid is not None else
                           f"{os.fspath(output)}: could not take its lock {lock}: other processes keep replacing it")

    with locks.held(lock, refusal):
        return _train_checked(source, output, epochs=epochs, resume=resume, **arguments)


def _train_checked(source, output, *, model_options, trainer_options, data_options, schedule, epochs, patience,
                   key, time_column, resume, on_start, on_update, on_epoch, cluster):
    """_train once the output is checked (and locked)."""
    new_trainer, restored_trainer = _trainer_makers(cluster)
    if resume:
        model, trainer = load(output, trainer_factory=restored_trainer)
        if trainer is None:
            raise DataError(f"{output}: holds a model only, no training state to resume")
        _refuse_bidirectional(output, model)
        recipe = read_recipe(output, read_metadata(output)["user"])
        _check_resume_options(model, trainer, recipe, model_options or {}, trainer_options or {},
                              data_options or {}, schedule or {})
        for name in RESUMABLE:
            if name in (trainer_options or {}):
                _resume_with(trainer, name, trainer_options[name])
        data_options = {name: recipe[name] for name in DATA_OPTIONS + _panel_options(recipe)
                        + (FORECAST_OPTIONS if is_forecasting_recipe(recipe) else ())}
        if is_panel_recipe(recipe):
            data_options["scaling"] = recipe["scaling"]  # the statistics of each series, kept
        if is_forecasting_recipe(recipe) and is_panel_recipe(recipe):
            data_options["static_norm"] = recipe["static_norm"]
    if isinstance(source, (TrainingData, PanelTrainingData)):
        data = source
    else:
        source, data_options = _with_time_column(source, key, time_column, data_options)
        if resume and isinstance(source, Series):   # before preparing: its calendar needs the times
            _check_resume_time_column({"time": {"column": source.time_name} if source.time_name else None}, recipe)
        if not resume:   # each stream holds k1 steps (min_steps None: k1 derived with the streams)
            k1 = (trainer_options or {}).get("k1")
            data_options = {**data_options, "min_steps": None if k1 == K1_FROM_DATA else k1 or 1}
        data = _prepare_training_data(source, key, data_options, old_recipe=resume and not is_forecasting_recipe(recipe))
    if resume:
        _check_resume_time_column(data.metadata, recipe)
        data = _with_normalisation(data, recipe)
    elif (trainer_options or {}).get("k1") == K1_FROM_DATA:   # --k1 not given: recorded in the recipe
        data = with_derived_k1(data, trainer_options.get("k2"))
        trainer_options = {**trainer_options, "k1": data.metadata["k1"]}
    steps, streams = data.x_train.shape[:2]
    k1 = trainer.k1 if resume else (trainer_options or {}).get("k1", 50)
    if k1 is not None:
        k1 = check_int("k1", k1)  # before the schedule divides by it
    updates_per_epoch = 1 if k1 is None else math.ceil(steps / k1)
    skip_derived = not resume and (model_options or {}).get("skip") is None   # --skip / --no-skip not given
    if not resume:
        model_options = dict(model_options or {})
        if skip_derived:
            model_options["skip"] = _derived_skip(data)
        _require_training_memory(model_options, trainer_options or {}, data)
        schedule = _resolve_schedule(schedule, updates_per_epoch * epochs)
        loss = (trainer_options or {}).get("loss", "mse")
        per_entry = parameter_count(loss, (trainer_options or {}).get("quantiles"))
        model = Model(input_size=data.x_train.shape[2], output_size=data.y_train.shape[2] * per_entry,
                      **(model_options or {}))
        trainer = new_trainer(model, schedule=schedule, **(trainer_options or {}))
    _check_data_fits(model, trainer, data)
    validation = None if data.x_val is None else (data.x_val, data.y_val)
    metadata = {"data": forecast_outputs.with_loss(data.metadata, trainer)}
    remaining = epochs - trainer.epoch
    if on_start is not None:
        on_start({"epochs": epochs, "done": trainer.epoch, "updates_per_epoch": updates_per_epoch,
                  "steps_per_update": (steps if k1 is None else k1) * streams,
                  "inputs": _chosen_from_data(data, skip_derived and model_options["skip"])})

    def checkpoint(record):
        if output is not None:
            save(output, model, trainer, metadata)
        if on_epoch is not None:
            on_epoch(record)

    if remaining > 0:
        trainer.fit(data.x_train, data.y_train, epochs=remaining, validation=validation,
                    patience=patience, on_update=on_update, on_epoch=checkpoint,
                    resets=getattr(data, "resets", None))
    if is_forecasting_recipe(metadata["data"]):   # the interval calibration of the final model
        metadata["data"] = forecast_outputs.with_conformal(metadata["data"], model, validation)
    if output is not None:
        save(output, model, trainer, metadata)  # early stopping may have restored the best
    return model, trainer, data._replace(metadata=metadata["data"])   # the recipe as saved


def _with_time_column(source, key, time_column, data_options):
    """(source, data_options) reading the times from `time_column` (a name, or False for
    none): a panel's data options name it; a single series is read with it."""
    if time_column is None or "time_column" in data_options:
        return source, data_options
    if is_panel_source(source, data_options):
        return source, {**data_options, "time_column": time_column}
    return as_series(source, key, time_column), data_options


def _prepare_training_data(source, key, options, old_recipe=False):
    """engine.forecasting.prepare for one series or a panel; old_recipe: a checkpoint of the
    first format (one horizon step, no forecasting options) resumed with its own preparation
    (engine.data.prepare_training_data, engine.panel.prepare_panel_training_data)."""
    options = dict(options or {})
    panel_options = {name: options.pop(name) for name in PANEL_DATA_OPTIONS if name in options}
    panel = is_panel_source(source, panel_options)
    if not panel:
        given = [name for name, value in panel_options.items() if value is not None]
        if given:
            raise DataError(f"{', '.join(given)}: only for a panel of series (give id_column or "
                            "series_columns, or a directory of files)")
    if old_recipe:
        prepare_old = prepare_panel_training_data if panel else prepare_training_data
        return prepare_old(source, key=key, **options, **(panel_options if panel else {}))
    return prepare(source, panel=panel, key=key, **options, **(panel_options if panel else {}))


def is_panel_source(source, options):
    """A Panel, a directory or glob of files, or options naming ids or series columns."""
    if isinstance(source, Panel):
        return True
    if any(options.get(name) is not None for name in ("id_column", "series_columns", "scale")):
        return True
    return isinstance(source, (str, os.PathLike)) and is_file_pattern(source)


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


def forecast_series(model, data, steps=1, *legacy, key=None, time_column=None, id_column=None,
                    series_columns=None, series_id=None, intervals=DEFAULT_LEVELS, future=None):
    """Forecast `steps` steps past the end of `data` with a trained model, as `bptt forecast`
    does: a pyarrow Table (`.to_pandas()` for a DataFrame) in original units. A model of
    this version forecasts from the last observed target: its columns are those of
    engine.forecasting.forecast (each target with its bounds at the `intervals` levels, a
    quantile model's quantiles), the known inputs of the steps forecast from the rows after
    it or from `future` (a path or table read like the data). Older checkpoints as below.

    model: a checkpoint path (from bptt train or train_series) or the (model, metadata)
    pair of load_for_inference. data: what train_series reads (a path, a panel's directory
    or glob, an array, a pandas or pyarrow table); key: the array of an .npz file;
    time_column: the column of time stamps (None: the first of dates; False or "none": no
    time column). For a single series the columns are "time" (the next time stamps, when
    the data has a regular time column) or "step" (1..steps, int64), then one float64
    column per target name. For a model trained on a panel: one row per (id, time) or (id,
    step), id_column / series_columns as at training, series_id one series only. The state
    warms up over all of `data`; beyond the model's horizon the forecasts are fed back as
    inputs, which needs a model whose inputs are its targets.

    The form forecast_series(model, metadata, source, steps, key=None, **panel_options),
    returning an array (steps, O) for a single series, is deprecated and still works for
    this release."""
    if _legacy_model(model):
        warnings.warn("forecast_series(model, metadata, source, steps, ...) is deprecated; use "
                      "forecast_series(checkpoint_path or (model, metadata), data, steps) (a pyarrow Table)",
                      DeprecationWarning, stacklevel=2)
        return _forecast(model, _checked_metadata(data), steps, *legacy, key=key,
                         **_given(time_column=time_column, id_column=id_column, series_columns=series_columns,
                                  series_id=series_id))
    if legacy:
        raise TypeError(f"forecast_series takes model, data and steps positionally; got {len(legacy)} more")
    model, metadata = _inference_pair(model)
    steps = check_int("steps", steps)
    time_column = OPTIONS["time_column"].parse(time_column)  # "none" is False: no time column
    panel = _given(id_column=id_column, series_columns=series_columns, series_id=series_id)
    if is_forecasting_recipe(metadata["data"]):
        return forecasting.forecast(model, metadata, _forecasting_source(metadata, data, key, time_column, panel),
                                    steps, levels=intervals, future=_future(metadata, future, time_column),
                                    **_forecasting_reading(metadata, key, time_column, panel))
    if future is not None:
        raise DataError("future: this model was trained without known inputs (an older checkpoint)")
    if is_panel_recipe(metadata["data"]):
        return _forecast(model, metadata, data, steps, key=key, **panel, **_given(time_column=time_column))
    series = as_series(_single_series_only(data, panel), key, time_column)
    forecasts = _forecast(model, metadata, series, steps)
    stamps = forecast_times(metadata, series, steps)
    first = {"step": pa.array(np.arange(1, steps + 1), pa.int64())} if stamps is None else {"time": _timestamps(stamps, series.time_zone)}
    return pa.table({**first, **{name: pa.array(forecasts[:, index], pa.float64())
                                 for index, name in enumerate(metadata["data"]["targets"])}})


def _timestamps(stamps, zone):
    """datetime64 stamps as a pyarrow timestamp array (days and hours in seconds); in the
    data's zone when it has one (the stamps are then UTC instants, as Arrow keeps them)."""
    unit = np.datetime_data(stamps.dtype)[0]
    stamps = stamps if unit in ("s", "ms", "us", "ns") else stamps.astype("datetime64[s]")
    return pa.array(stamps, pa.timestamp(np.datetime_data(stamps.dtype)[0], tz=zone))


def _forecast(model, metadata, source, steps, key=None, **panel_options):
    """Forecast `steps` steps past the end of a series, in original units (steps, O).

    The state warms up over the whole series; beyond the model's horizon the forecasts
    are fed back as inputs, which needs a model whose inputs are its targets. For a
    model trained on a panel: engine.panel.forecast_panel (a Table, one row per (id,
    time)), panel_options its series_id, id_column, series_columns, time_column."""
    steps = check_int("steps", steps)
    recipe = metadata["data"]
    if is_forecasting_recipe(recipe):   # the deprecated form on a new checkpoint: its point forecasts
        table = forecasting.forecast(model, metadata, source if is_panel_recipe(recipe) else as_series(source, key),
                                     steps, key=key if is_panel_recipe(recipe) else None, **panel_options)
        if is_panel_recipe(recipe):
            return table
        return np.column_stack([table.column(name).to_numpy() for name in recipe["targets"]])
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
    require(forecast_bytes(steps, 1, len(level)), f"--steps {steps} forecasts")  # before allocating them
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
    with a time zone the stamps are UTC instants (forecast_series's table keeps the zone)."""
    series = as_series(source, key)
    if series.time is None:
        return None
    frequency = (infer_frequency(series.time, series.time_zone)
                 or (metadata["data"].get("time") or {}).get("frequency"))
    if frequency is None:
        return None
    return next_stamps(series.time[-1], frequency, check_int("steps", steps), series.time_zone)


def evaluate_series(model, data, *legacy, start=None, season=None, key=None, time_column=None,
                    id_column=None, series_columns=None, series_id=None, intervals=DEFAULT_LEVELS):
    """Score a trained model on `data`, as `bptt evaluate --json` prints it: a dict.

    model: a checkpoint path or the (model, metadata) pair of load_for_inference; data,
    key, time_column as forecast_series takes them. start: score only from this row
    (0-based) or date/time on, the state warmed up on the rows before. A model of this
    version (engine.forecasting.evaluate): the forecasts of steps 1..horizon from every
    origin whose step 1 is at or after start, in original units: mse, mae, rmse, smape,
    mase and baseline_mse / baseline_mae / baseline_rmse / naive_mae (the seasonal naive of
    period `season`, default 1: persistence), "steps" (origins scored), "season",
    "per_step", "intervals" at the `intervals` levels (coverage, mean width, interval
    score), "crps" and "pinball" for distribution models; a panel adds "series" (one
    record per id) and "mase_count". An older checkpoint: as that version reported
    ({"mse", "mae", "rmse", "baseline_*", "steps"}; for a panel the aggregate and "series").

    The form evaluate_series(model, metadata, source, key=None, start=None,
    **panel_options) is deprecated and still works for this release."""
    if _legacy_model(model):
        warnings.warn("evaluate_series(model, metadata, source, ...) is deprecated; use "
                      "evaluate_series(checkpoint_path or (model, metadata), data, start=...)",
                      DeprecationWarning, stacklevel=2)
        return _evaluate(model, _checked_metadata(data), *legacy, start=start, key=key,
                         **_given(season=season, time_column=time_column, id_column=id_column,
                                  series_columns=series_columns, series_id=series_id))
    if legacy:
        raise TypeError(f"evaluate_series takes model and data positionally; got {len(legacy)} more")
    model, metadata = _inference_pair(model)
    time_column = OPTIONS["time_column"].parse(time_column)
    if is_forecasting_recipe(metadata["data"]):
        reading = _given(id_column=id_column, series_columns=series_columns, series_id=series_id)
        return evaluate_forecasts(model, metadata, _forecasting_source(metadata, data, key, time_column, reading),
                                  start=start, season=season or 1, levels=intervals,
                                  **_forecasting_reading(metadata, key, time_column, reading))
    panel = _given(id_column=id_column, series_columns=series_columns, series_id=series_id, season=season)
    if is_panel_recipe(metadata["data"]):
        return _evaluate(model, metadata, data, key=key, start=start,
                         **_given(time_column=time_column), **panel)
    data = _single_series_only(data, panel)
    if isinstance(data, (str, os.PathLike)) or time_column is not None:
        data = as_series(data, key, time_column)
    return _evaluate(model, metadata, data, start=start)


def backtest_series(model, data, *, start=None, every=1, steps=None, season=1, intervals=DEFAULT_LEVELS, key=None,
                    time_column=None, id_column=None, series_columns=None, series_id=None):
    """Backtest a forecasting model on `data`, as `bptt backtest` does: rolling origins from
    `start` (a row, negative from the end, or a date/time; None: the first origin the
    model can forecast from) every `every` rows, forecasts of steps 1..`steps` (default:
    the model's horizon) from the state warmed up on all rows before each origin (no
    refit). Returns engine.forecasting.backtest.Backtest: .table (pyarrow, one row per
    origin, [id,] step and target: origin, time, step, target, forecast, actual, naive,
    loL, hiL per interval level) and .metrics (per step and overall MAE, RMSE, sMAPE,
    MASE against the seasonal naive of period `season` from the same origin, interval
    scores). model, data, key, time_column and the panel options as forecast_series takes them."""
    model, metadata = _inference_pair(model)
    if not is_forecasting_recipe(metadata["data"]):
        raise DataError("backtest needs a model trained by this version (a forecasting recipe); this checkpoint "
                        "is older: train it again")
    time_column = OPTIONS["time_column"].parse(time_column)
    reading = _given(id_column=id_column, series_columns=series_columns, series_id=series_id)
    return run_backtest(model, metadata, _forecasting_source(metadata, data, key, time_column, reading),
                        start=start, every=every, steps=steps, season=season, levels=intervals,
                        **_forecasting_reading(metadata, key, time_column, reading))


def _forecasting_source(metadata, data, key, time_column, reading):
    """The data of a forecasting model: a single series read (with its time column), a
    panel source as given (read with the recipe's panel options)."""
    if is_panel_recipe(metadata["data"]):
        return data
    data = _single_series_only(data, reading)
    return as_series(data, key, time_column) if isinstance(data, (str, os.PathLike)) or time_column is not None \
        else data


def _forecasting_reading(metadata, key, time_column, reading):
    """The reading options engine.forecasting takes for a panel (none for one series: read already)."""
    if not is_panel_recipe(metadata["data"]):
        return {}
    return {"key": key, **reading, **_given(time_column=time_column)}


def _future(metadata, future, time_column):
    """The future rows of the known inputs: a path or table read like the data (None: none)."""
    if future is None or is_panel_recipe(metadata["data"]) or not isinstance(future, (str, os.PathLike)):
        return future
    return as_series(future, None, time_column)


def _legacy_model(model):
    """The old call forms pass a Model first; the new ones a path or a (model, metadata) pair."""
    return not isinstance(model, (str, os.PathLike, tuple, list))


def _inference_pair(model):
    """(Model, metadata) from a checkpoint path or a load_for_inference pair, checked."""
    if isinstance(model, (str, os.PathLike)):
        return load_for_inference(model)
    if len(model) != 2:
        raise TypeError("model: give a checkpoint path or the (model, metadata) pair of load_for_inference")
    _refuse_bidirectional("model", model[0])
    return model[0], _checked_metadata(model[1])


def _checked_metadata(metadata):
    """A checkpoint's user metadata with its data recipe checked (DataError, CheckpointError)."""
    if not isinstance(metadata, dict):
        raise DataError(f"metadata: expected the checkpoint's user metadata (a dict, from "
                        f"load_for_inference); got {type(metadata).__name__}")
    read_recipe("metadata", metadata)
    return metadata


def _given(**options):
    """The options that are set (not None)."""
    return {name: value for name, value in options.items() if value is not None}


def _evaluate(model, metadata, source, key=None, start=None, **panel_options):
    """MSE, MAE and RMSE of the model's forecasts over a series, in original units, beside
    the persistence baseline on the same targets. start: score only the rows from this
    one on (engine.series.times.start_row: a row number, negative from the end, -5 the last
    5 rows; or a date/time of a series with a time column, in its zone: its first row at
    or after it), the state warmed up on every row before. Returns a dict of floats. For
    a model trained on a panel: engine.panel.evaluate_panel (per-series and aggregate
    metrics), panel_options its season, series_id, id_column, series_columns, time_column."""
    recipe = metadata["data"]
    if is_forecasting_recipe(recipe):   # the deprecated form on a new checkpoint
        return evaluate_forecasts(model, metadata, source if is_panel_recipe(recipe) else as_series(source, key),
                                  start=start, season=panel_options.pop("season", 1),
                                  key=key if is_panel_recipe(recipe) else None, **panel_options)
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
    if isinstance(source, (str, os.PathLike)) and is_file_pattern(source):
        kind = "a directory" if os.path.isdir(source) else "a glob pattern"
        raise DataError(f"{os.fspath(source)}: is {kind} of files (a panel of series); the model was "
                        "trained on one series: give one data file")
    if isinstance(source, Panel):
        if len(source) != 1:
            raise DataError(f"the model was trained on one series; {source.source} is a panel of "
                            f"{len(source)} series")
        return source.series[0]
    return source


def _start_row(series, start):
    """The row `start` names (engine.series.times.checked_start_row: a row, negative from
    the end, or a date/time in the series' zone), which must be one of the series'."""
    return checked_start_row(start, len(series.values), series.time, series.time_zone, series.source)


def load_for_inference(path):
    """(model, metadata) of a checkpoint written by train_series; errors if it has no data recipe."""
    model, _ = load(path)
    metadata = read_metadata(path)["user"]
    read_recipe(path, metadata)
    _refuse_bidirectional(path, model)
    return model, metadata


def _refuse_bidirectional(path, model):
    """The jobs here forecast: a bidirectional model's reverse direction would read the future."""
    if getattr(model, "bidirectional", False):  # anything else passed as a model fails where it is used
        raise DataError(f"{path}: holds a bidirectional model, which cannot forecast (its reverse direction "
                        "reads every later step); use it in the library on whole sequences")


def read_recipe(path, user_metadata):
    """The data recipe in a checkpoint's user metadata, checked whole against RECIPE_SCHEMA
    (PANEL_RECIPE_SCHEMA for a panel's)."""
    if "data" not in user_metadata:
        raise DataError(f"{path}: checkpoint has no data recipe (not written by bptt train)")
    recipe = user_metadata["data"]
    schema = {**PANEL_RECIPE_SCHEMA, **FORECAST_RECIPE_SCHEMA} if is_panel_recipe(recipe) else RECIPE_SCHEMA
    check_schema(path, recipe, schema, "metadata.user.data")
    return user_metadata["data"]


class ResumeConflict(ValueError):
    """An option given with resume disagrees with the checkpoint: option (its name here),
    given and stored (the values)."""

    def __init__(self, option, given, stored):
        super().__init__(f"resume: {option}={given!r} conflicts with the checkpoint's {option}={stored!r}; "
                         "a resumed run keeps the checkpoint's settings (only epochs, patience, "
                         f"{', '.join(RESUMABLE)} may change): drop the option or train a new model")
        self.option, self.given, self.stored = option, given, stored


def _derived_skip(data):
    """--skip / --no-skip left unset: a linear path from the inputs to the outputs where the
    data has known inputs. Measured on the quality benchmark (docs/forecasting.md, "The
    linear path"): it helped the members with known inputs and hurt most of the others."""
    return bool(data.metadata.get("known"))


def _chosen_from_data(data, linear_path):
    """The progress line of what was chosen from the data (describe_inputs), naming the
    linear path when it was chosen too."""
    line = describe_inputs(data.metadata)
    if not linear_path:
        return line
    path = "a linear path from the inputs to the outputs, as there are known inputs (--no-skip for none)"
    return f"{line}; {path}" if line else f"chosen from the data: {path}"


def _check_resume_options(model, trainer, recipe, model_options, trainer_options, data_options, schedule):
    """Raise ResumeConflict for the first given option that differs from the checkpoint's."""
    stored = {**model.config, **trainer.config, "optimizer": trainer.optimizer.name,
              **{name: recipe[name] for name in DATA_OPTIONS + _panel_options(recipe)}}
    given = {**model_options, **data_options,
             **{name: value for name, value in trainer_options.items() if name not in RESUMABLE}}
    if "k2" in given and given["k2"] is None and stored["k2"] is not None:  # k2 None means k2 = k1 (bptt)
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
        trainer.optimizer.lr = check_in_dtype("lr", check_float("lr", value, minimum=0, strictly_greater=True),
                                              trainer.model.dtype)
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
            len(make_optimizer(trainer["optimizer"], trainer["lr"]).buffer_names()), trainer["memory"],
            skip=bool(model["skip"]))
    except (KeyError, TypeError, ValueError):
        return
    require(needed, f"training {model['num_layers']} layer(s) x {model['hidden_size']} hidden on windows "
                    f"of {window} steps x {streams} streams")


def _defaults(cls):
    return {name: parameter.default for name, parameter in inspect.signature(cls).parameters.items()
            if parameter.default is not inspect.Parameter.empty}


def _check_data_fits(model, trainer, data):
    """Shapes of the data against the model, and enough steps per stream for k1."""
    outputs = data.y_train.shape[2] * parameter_count(trainer.loss, getattr(trainer, "quantiles", None))
    if data.x_train.shape[2] != model.input_size or outputs != model.output_size:
        raise DataError(f"the data has {data.x_train.shape[2]} inputs and {data.y_train.shape[2]} "
                        f"targets; the model expects {model.input_size} and {model.output_size}")
    steps = data.x_train.shape[0]
    if trainer.k1 is not None and steps < trainer.k1:
        raise DataError(f"each of the {data.x_train.shape[1]} streams has {steps} steps, fewer than "
                        f"--k1 {trainer.k1}; lower --k1 or --streams, or use a longer series")
