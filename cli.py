"""The `bptt` command: train, forecast, evaluate, info, gradcheck and bench.

Each command is a few lines over the library (engine.pipeline and friends). Bad input
of any kind ends with one line "Error: ..." on stderr and exit status 2, before anything
is written; a diverged run, a failed gradcheck or a failed write exit with 1, Ctrl-C 130.
"""
import csv
import glob
import json
import math
import os
import sys
import time

import click
import numpy as np
from click.core import ParameterSource

import engine
from engine.data import FILL_METHODS, DataError, as_series
from engine.demos import DEMOS, PANEL_DEMOS, load_demo
from engine.distributed import ClusterUnavailable, WorkerFailed, connect
from engine.files import OutputError, atomic_write, check_output
from engine.grad_flow import describe as describe_grad_flow
from engine.initializers import INITS
from engine.model import CELLS
from engine.optim import OPTIMIZERS
from engine.panel import SCALES, is_panel_recipe
from engine.pipeline import forecast_times
from engine.sweep.space import NOT_SETTINGS
from engine.trainer import ON_DIVERGENCE

BAD_INPUT = 2
SCHEDULES = ("constant", "step", "cosine")
LOSSES = ("mse", "cross_entropy")


class Bptt(click.Group):
    """A click group whose errors are one line on stderr with exit status 2, no traceback."""

    def main(self, args=None, prog_name=None, **extra):
        extra.pop("standalone_mode", None)
        try:
            code = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except click.exceptions.NoArgsIsHelpError as error:  # bare `bptt`: the help, not "Error: Usage..."
            error.show()
            sys.exit(error.exit_code)
        except click.ClickException as error:
            click.echo(f"Error: {error.format_message()}", err=True)
            sys.exit(BAD_INPUT)
        except (DataError, engine.CheckpointError, engine.PlotUnavailable, ClusterUnavailable, ValueError,
                TypeError) as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(BAD_INPUT)
        except engine.TrainingDiverged as error:
            click.echo(f"Error: {error.reason} Lower --lr, clip gradients (--clip-norm, --clip-value), "
                       "or skip such updates with --on-divergence skip.", err=True)
            sys.exit(1)
        except WorkerFailed as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(1)
        except OSError as error:  # a failed write (disk full, permissions): one line, not a traceback
            click.echo(f"Error: {error}", err=True)
            sys.exit(1)
        except MemoryError as error:  # sizes no estimate caught (engine.footprint covers the usual ones)
            click.echo(f"Error: out of memory: {error or 'an allocation failed'}; choose smaller sizes", err=True)
            sys.exit(BAD_INPUT)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=Bptt, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="bptt")
def main():
    """Train recurrent networks (RNN, LSTM, GRU) on long time series with truncated
    backpropagation through time, on the CPU.

    \b
    Quick start:   bptt train --demo sine
    Then:          bptt evaluate model.npz --demo sine
                   bptt forecast model.npz --demo sine --steps 48
    """


def data_source(path, demo, key=None, time_column=None, panel=False):
    """The series to read: a file path or a demo, exactly one of them. key: the array of
    an .npz file; time_column: the column of time stamps (default: the first of dates).
    A panel (`panel`, a directory or a glob) stays a path for engine.panel to read."""
    if (path is None) == (demo is None):
        raise click.UsageError("give either a DATA file or --demo NAME" if path is None
                               else "give a DATA file or --demo NAME, not both")
    if demo is None and (panel or is_panel_path(path)):
        return path
    # the whole file, a non-numeric column noted, not raised: only the columns used must be numbers
    return load_demo(demo) if demo else as_series(path, key, time_column_value(time_column))


def is_panel_path(path):
    """A directory, or a glob pattern naming no existing file: files of one series each."""
    return path is not None and (os.path.isdir(path) or (not os.path.exists(path) and glob.has_magic(path)))


def time_column_value(option):
    """--time-column as engine.series takes it: a name, None (the first column of dates), False ('none')."""
    return False if option == "none" else option


def check_writable(path, option, inputs=(), outputs=()):
    """Fail before any work when writing `path` could destroy something (engine.files.check_output):
    it may not be one of the command's `inputs` or other `outputs`, a link, a device or read-only."""
    if path is None:
        return
    try:
        check_output(path, inputs=inputs, outputs=outputs)
    except OutputError as error:
        raise click.BadParameter(str(error), param_hint=option) from None


demo_option = click.option("--demo", type=click.Choice(sorted({**DEMOS, **PANEL_DEMOS})),
                           help="Use a bundled generated series (sensors: a panel of 50) instead of DATA.")
data_argument = click.argument("data", required=False, type=click.Path())


PANEL_TRAIN_OPTIONS = ("id_column", "series_columns", "scale")  # options that make DATA a panel


def panel_source_options(function):
    """--id-column and --series-columns: how DATA holds many series (with --time-column)."""
    for option in reversed((
            click.option("--id-column", help="Long format: the column naming the series of each row (a panel); "
                                             "rows are sorted by --time-column per series."),
            click.option("--series-columns", help="Wide format: one column per series, comma separated, or 'all'."))):
        function = option(function)
    return function


def panel_options(**options):
    """The given (non-None) panel options, named as engine.panel takes them."""
    return {name: value for name, value in options.items() if value is not None}

json_flag = click.option("--json", "as_json", is_flag=True,
                         help="Print JSON on stdout (train: one record per epoch); a number that is "
                              "not finite (a diverged loss, an overflowing metric) is null.")


def to_json(value):
    """Strict JSON (never NaN or Infinity, which JSON does not have): non-finite floats become null."""
    return json.dumps(_finite_or_null(value), allow_nan=False)


def _finite_or_null(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    return value
key_option = click.option("--key", metavar="NAME", help="The array of an .npz DATA file to use.")
time_column_option = click.option("--time-column", metavar="NAME",
                                  help="The column of dates/times, or 'none' [default: the first column that parses as dates].")


_UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30}


def _memory_option(value):
    """--memory: None, "sqrt", or bytes with an optional K/M/G suffix -> Trainer(memory=...)."""
    if value is None or value == "sqrt":
        return value
    number, unit = value[:-1] if value[-1:].upper() in "KMG" else value, value[-1:].upper()
    unit = unit if unit in "KMG" else ""
    try:
        count = int(float(number) * _UNITS[unit])  # inf and 1e400 overflow, nan is a ValueError
    except (ValueError, OverflowError):
        raise click.BadParameter(f"expected 'sqrt' or a finite byte count such as 200M; got {value!r}",
                                 param_hint="'--memory'") from None
    if count < 1:
        raise click.BadParameter(f"must be positive; got {value!r}", param_hint="'--memory'")
    return count


@main.command()
@data_argument
@demo_option
@key_option
@time_column_option
@panel_source_options
@click.option("--scale", type=click.Choice(SCALES),
              help="Panel z-score: per series or one for all [default: series with more than one series].")
@click.option("--inputs", help="Input columns by name or 0-based index, comma separated [default: the targets].")
@click.option("--targets", help="Target columns by name or index, comma separated [default: all columns].")
@click.option("--horizon", default=1, show_default=True, type=click.IntRange(min=1), help="Forecast this many steps ahead.")
@click.option("--streams", default=8, show_default=True, type=click.IntRange(min=1),
              help="Cut the series into this many contiguous parallel streams (the batch).")
@click.option("--val-fraction", default=0.1, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Hold out this final fraction of time for validation.")
@click.option("--fill", type=click.Choice(FILL_METHODS), help="How to fill missing inputs [default: missing inputs are an error].")
@click.option("--difference", is_flag=True, help="Model the changes of the targets instead of their levels (trending series).")
@click.option("--cell", default="lstm", show_default=True, type=click.Choice(CELLS))
@click.option("--hidden", default=64, show_default=True, type=click.IntRange(min=1), help="Hidden units per layer.")
@click.option("--layers", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--nonlinearity", default="tanh", show_default=True, type=click.Choice(("tanh", "relu")),
              help="Activation of --cell rnn.")
@click.option("--init", default="default", show_default=True, type=click.Choice(INITS),
              help="default: PyTorch's uniform; xavier: Glorot; orthogonal / identity (IRNN): recurrent weights.")
@click.option("--forget-bias", default=0.0, show_default=True, type=float, help="LSTM forget-gate bias.")
@click.option("--k1", default=50, show_default=True, type=click.IntRange(min=1),
              help="Truncated BPTT: one update every k1 steps.")
@click.option("--k2", type=click.IntRange(min=1), help="Backpropagate through the last k2 >= k1 steps [default: k1].")
@click.option("--full-bptt", is_flag=True, help="No truncation: one update per epoch over each whole stream.")
@click.option("--memory", callback=lambda ctx, param, value: _memory_option(value),
              help="Bound activation memory by recomputation: 'sqrt' (keep the state every ~sqrt(window) "
                   "steps) or a byte budget per thread such as 200M [default: store every step].")
@click.option("--shards", type=click.IntRange(min=1),
              help="Run the streams as this many batch shards, one thread each [default: the thread plan's "
                   "choice for this model and machine]. On a machine other work keeps busy, shards suffer "
                   "less than --split.")
@click.option("--split", type=click.IntRange(min=1),
              help="Share every step of one shard among this many threads by blocks of hidden units "
                   "(--hidden a multiple of it) [default: the thread plan's choice].")
@click.option("--clip-norm", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Clip the global gradient norm (0 disables).")
@click.option("--clip-value", type=click.FloatRange(min=0, min_open=True), help="Clip each gradient entry to +-VALUE.")
@click.option("--on-divergence", default="raise", show_default=True, type=click.Choice(ON_DIVERGENCE),
              help="On a non-finite loss or gradient: stop (raise) or drop that update and go on (skip).")
@click.option("--optimizer", default="adam", show_default=True, type=click.Choice(sorted(OPTIMIZERS)))
@click.option("--lr", default=3e-3, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Learning rate.")
@click.option("--schedule", default="constant", show_default=True, type=click.Choice(SCHEDULES),
              help="Learning-rate schedule (step: x0.1 every --step-size updates; cosine: to 0 over the run).")
@click.option("--step-size", default=1000, show_default=True, type=click.IntRange(min=1), help="Updates per step of --schedule step.")
@click.option("--warmup", default=0, show_default=True, type=click.IntRange(min=0), help="Linear warm-up updates.")
@click.option("--epochs", default=20, show_default=True, type=click.IntRange(min=1),
              help="Epochs in all (with --resume: including those already done).")
@click.option("--patience", type=click.IntRange(min=1), help="Early stopping: epochs without improvement; restores the best.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(("float32", "float64")))
@click.option("-o", "--output", default="model.npz", show_default=True, type=click.Path(dir_okay=False),
              help="Checkpoint path, written after every epoch.")
@click.option("--resume", is_flag=True,
              help="Continue training the checkpoint at --output with its own settings and normalisation "
                   "(--epochs, --patience, --lr, --memory may change; other options must agree with it).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Save the training curves to this PNG (needs matplotlib).")
@click.option("--diagnostics", is_flag=True,
              help="Report the gradient flow per epoch (grad_flow): reach, the steps back until |dL/dh| falls "
                   "below 1% of its size at the loss; decay, its per-step factor; the share of updates clipped; "
                   "the largest pre-clip gradient norm; and a verdict. exploding: more than half the updates "
                   "clipped, or the typical (geometric-mean) gradient norm 10x the previous epoch's, or one "
                   "norm 100x the typical; vanishing: reach under a quarter of the span measured (k2 - k1 "
                   "target-free steps; with k2 = k1, k2 - 1 steps of a probe run every 20 updates); else "
                   "healthy. Advice is printed when the last epoch is not healthy; with --plot, gradient-flow "
                   "panels. --resume keeps the checkpoint's choice.")
@click.option("--ray", "ray_address", metavar="ADDRESS",
              help="Train on the Ray cluster whose head is at HOST:PORT (needs Ray: extra 'ray').")
@click.option("--workers", type=click.IntRange(min=1), help="Ray workers, one batch shard each (with --ray) [default: 2].")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@json_flag
def train(data, demo, key, time_column, id_column, series_columns, scale, inputs, targets, horizon,
          streams, val_fraction, fill, difference, cell, hidden, layers, nonlinearity, init, forget_bias, k1, k2, full_bptt, memory, shards, split, clip_norm,
          clip_value, on_divergence, optimizer, lr, schedule, step_size, warmup, epochs, patience, seed, dtype,
          output, resume, plot, diagnostics, ray_address, workers, quiet, as_json):
    """Train a model on DATA (CSV, also .gz/.bz2/.zst, Parquet, Feather, .npy or .npz) or a
    --demo series: next-step forecasting, z-score normalised, cut into --streams parallel
    streams, with a validation tail.

    \b
    Examples:
      bptt train --demo mackey-glass --hidden 32 --epochs 30
      bptt train prices.csv --targets close --inputs close,volume --k1 100 --k2 200
      bptt train prices.csv --ray 10.0.0.1:6379 --workers 8 --streams 64
      bptt train meters.csv --id-column meter --time-column time --streams 32   (a panel)
    """
    check_writable(output, "'-o' / '--output'", inputs=[data])
    check_writable(plot, "'--plot'", inputs=[data], outputs=[output])
    if plot:
        engine.require_matplotlib(plot)  # before any work, so nothing is lost later
    arguments = train_arguments(click.get_current_context().params)
    if workers is not None and ray_address is None:
        raise click.UsageError("--workers applies to training on a Ray cluster: give --ray ADDRESS")
    if ray_address is not None and (shards is not None or split is not None):
        raise click.UsageError("with --ray the batch shards are the cluster's workers (--workers); "
                               "--shards and --split apply to training on this machine")
    cluster = None
    if ray_address is not None:
        connect(ray_address)  # within seconds, before any work
        cluster = dict(address=ray_address, workers=workers or 2)
    panel = bool(set(PANEL_TRAIN_OPTIONS) & set(arguments["data_options"])) or demo in PANEL_DEMOS \
        or is_panel_path(data)
    source = data_source(data, demo, key, time_column, panel=panel)
    if panel and time_column is not None:
        arguments["data_options"]["time_column"] = time_column_value(time_column)
    context = click.get_current_context()
    explicit = {name for name in context.params if context.get_parameter_source(name) is not ParameterSource.DEFAULT}
    if resume:  # only what the user gave goes on, for the pipeline to refuse what conflicts
        for group in ("model_options", "trainer_options", "schedule", "data_options"):
            arguments[group] = {key: value for key, value in arguments[group].items()
                                if explicit & set(_SET_BY.get(key, ()))}
    progress = None if quiet or as_json else engine.Progress()

    completed = []  # epochs finished (and checkpointed) in this run

    def on_epoch(record):
        completed.append(record["epoch"])
        if as_json:
            click.echo(to_json(record))
        elif progress is not None:
            progress.on_epoch(record)

    started = time.perf_counter()
    try:
        model, trainer, _ = engine.train_series(
            source, output, **arguments, resume=resume, on_start=progress and progress.on_start,
            on_update=progress and progress.on_update, on_epoch=on_epoch, cluster=cluster)
    except engine.pipeline.ResumeConflict as error:
        given = " ".join(f"--{name.replace('_', '-')}" + ("" if context.params[name] is True else f" {context.params[name]}")
                         for name in _SET_BY[error.option] if name in explicit)
        stored = "unset" if error.stored is None else repr(error.stored)
        raise click.UsageError(f"--resume: {given} conflicts with the checkpoint's {error.option.replace('_', ' ')} "
                               f"{stored}; a resumed run keeps its checkpoint's settings (only --epochs, "
                               "--patience, --lr and --memory may change)") from None
    except KeyboardInterrupt:
        saved = (f"{output} holds epoch {completed[-1]}; continue with --resume -o {output}"
                 if completed else "no epoch was completed in this run, nothing was saved")
        click.echo(f"\nInterrupted: {saved}.", err=True)
        sys.exit(130)
    if plot:
        engine.plot_training(trainer.history, plot, clip_norm=trainer.clip_norm)
    last_flow = trainer.history.epochs[-1].get("grad_flow") if trainer.history.epochs else None
    if last_flow and last_flow["verdict"] != "healthy" and not quiet:
        click.echo(_grad_flow_advice(last_flow, trainer), err=True)
    if not quiet:
        _summary(trainer, output, time.perf_counter() - started, plot, restored=patience is not None)


_SET_BY = {  # an option of train_series on --resume -> the train options that set it
    "cell": ("cell",), "hidden_size": ("hidden",), "num_layers": ("layers",), "nonlinearity": ("nonlinearity",),
    "init": ("init",), "forget_bias": ("forget_bias",), "seed": ("seed",), "dtype": ("dtype",),
    "k1": ("k1", "full_bptt"), "k2": ("k2", "full_bptt"), "clip_norm": ("clip_norm",),
    "clip_value": ("clip_value",), "optimizer": ("optimizer",), "lr": ("lr",), "memory": ("memory",),
    "shards": ("shards",), "split": ("split",),
    "on_divergence": ("on_divergence",), "name": ("schedule",), "schedule": ("schedule",),
    "warmup_steps": ("warmup",), "step_size": ("step_size",), **{name: (name,) for name in engine.pipeline.DATA_OPTIONS + PANEL_TRAIN_OPTIONS + ("time_column",)}}


def train_arguments(options):
    """The keyword arguments of engine.train_series (model, trainer, data and schedule
    options, epochs, patience) for `bptt train`'s option values by parameter name (the
    sweep builds each trial's run with this too). Bad combinations raise UsageError."""
    o = options
    if o["full_bptt"] and o["k2"] is not None:
        raise click.UsageError("--k2 truncates backpropagation; it cannot be combined with --full-bptt")
    if o["cell"] != "rnn" and o["nonlinearity"] != "tanh":
        raise click.UsageError("--nonlinearity applies to --cell rnn only")
    model_options = dict(cell=o["cell"], hidden_size=o["hidden"], num_layers=o["layers"], dtype=o["dtype"],
                         init=o["init"], forget_bias=o["forget_bias"], seed=o["seed"])
    if o["cell"] == "rnn":
        model_options["nonlinearity"] = o["nonlinearity"]
    trainer_options = dict(loss="mse", optimizer=o["optimizer"], lr=o["lr"], k1=None if o["full_bptt"] else o["k1"],
                           k2=None if o["full_bptt"] else o["k2"], clip_norm=o["clip_norm"] or None,
                           clip_value=o["clip_value"], memory=o["memory"], on_divergence=o["on_divergence"],
                           diagnostics=o["diagnostics"], shards=o.get("shards"), split=o.get("split"))
    schedule_options = dict(name=o["schedule"], warmup_steps=o["warmup"])
    if o["schedule"] == "step":
        schedule_options["step_size"] = o["step_size"]
    data_options = dict(inputs=o["inputs"], targets=o["targets"], horizon=o["horizon"], streams=o["streams"],
                        val_fraction=o["val_fraction"], fill=o["fill"], difference=o["difference"],
                        **panel_options(**{name: o.get(name) for name in PANEL_TRAIN_OPTIONS}))
    return dict(model_options=model_options, trainer_options=trainer_options, data_options=data_options,
                schedule=schedule_options, epochs=o["epochs"], patience=o["patience"])


def _grad_flow_advice(grad_flow, trainer):
    """What to change when the last epoch's gradient-flow verdict is not healthy, for the
    trained model's settings (printed once, at the end of the run)."""
    model = trainer.model
    orthogonal = [] if model.init == "orthogonal" else ["--init orthogonal"]
    if grad_flow["verdict"] == "vanishing":
        cells = {"rnn": ["--cell lstm (with --forget-bias 1) or --cell gru"],
                 "lstm": ["--forget-bias 1"] if model.forget_bias < 1 else [], "gru": ["--cell lstm --forget-bias 1"]}
        if grad_flow["source"] == "overhang":
            shorter = (f"a shorter --k2 (about {trainer.k1 + 2 * grad_flow['reach']}: --k1 plus twice the reach) "
                       "saves time")
        else:
            shorter = "shorter windows (--k1) save time"
        return (f"Advice: the gradient fades within {grad_flow['reach']} of the {grad_flow['span']} steps it "
                f"could reach back (decay {grad_flow['decay']:.3g} per step): the cell, not the truncation, "
                f"limits what is learned. Try {', '.join(cells[model.cell] + orthogonal) or 'a larger --hidden'}; "
                f"{shorter}, since the gradient does not reach further anyway.")
    clipped = grad_flow["clipped_fraction"]
    clipping = (f"a lower --clip-norm (now {trainer.clip_norm:g})" if trainer.clip_norm is not None
                else "clipping with --clip-norm 1")
    return (f"Advice: the gradients explode (largest norm {grad_flow['max_grad_norm']:.3g}"
            + (f", {100 * clipped:.0f}% of updates clipped" if clipped is not None else ", no clipping")
            + f"): try a lower --lr (now {trainer.optimizer.lr:g}), {', '.join([clipping] + orthogonal)}.")


def _summary(trainer, output, seconds, plot, restored):
    """The closing lines on stderr: time, best (validation) loss, final loss, checkpoint path."""
    epochs = trainer.history.epochs
    lines = [f"Trained {trainer.epoch} epochs ({trainer.step} updates) in {seconds:.1f}s."]
    if epochs:
        measure = "val_loss" if "val_loss" in epochs[0] else "loss"
        best = min(epochs, key=lambda record: record[measure])
        lines.append(f"Best {'validation ' if measure == 'val_loss' else ''}loss {best[measure]:.5g} "
                     f"at epoch {best['epoch']}" + (" (parameters restored)." if restored else "."))
        last = epochs[-1]
        lines.append(f"Final loss {last['loss']:.5g}" + (f", validation loss {last['val_loss']:.5g}"
                                                         if "val_loss" in last else "") + ".")
    if trainer.skipped:
        lines.append(f"Skipped {trainer.skipped} non-finite updates.")
    lines.append(f"Checkpoint: {output}" + (f"   Plot: {plot}" if plot else ""))
    click.echo("\n".join(lines), err=True)


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@data_argument
@demo_option
@key_option
@time_column_option
@panel_source_options
@click.option("--id", "series_id", help="Panel: forecast only this series.")
@click.option("--steps", default=1, show_default=True, type=click.IntRange(min=1), help="Steps to forecast past the end.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the CSV here [default: stdout].")
@click.option("--plot", type=click.Path(dir_okay=False), help="Save forecast against the observed tail to this PNG.")
def forecast(checkpoint, data, demo, key, time_column, id_column, series_columns, series_id, steps, output,
             plot):
    """Forecast --steps steps past the end of DATA with the model in CHECKPOINT.

    The state warms up over the whole of DATA; the forecasts are fed back as inputs
    beyond the first step. Writes CSV (one column per target) in original units, the
    first column "time" (the next time stamps) when DATA has a regular time column,
    else "step". For a model trained on a panel: one row per (id, time), or (id, step)
    without times."""
    check_writable(output, "'-o' / '--output'", inputs=[checkpoint, data])
    check_writable(plot, "'--plot'", inputs=[checkpoint, data], outputs=[output])
    if plot:
        engine.require_matplotlib(plot)
    model, metadata = engine.load_for_inference(checkpoint)
    panel = is_panel_recipe(metadata["data"])
    if panel and plot:
        raise click.UsageError("--plot draws one series; it is not available for a model trained on a panel")
    options = panel_options(id_column=id_column, series_columns=series_columns, series_id=series_id,
                            time_column=time_column_value(time_column) if panel else None)
    source = data_source(data, demo, key, time_column, panel=panel)
    forecasts = engine.forecast_series(model, metadata, source, steps, key=key if panel else None, **options)
    if panel:
        if output:
            with atomic_write(output, "w", newline="") as stream:  # all or nothing, never a truncated CSV
                _write_table(stream, forecasts)
        else:
            _write_table(sys.stdout, forecasts)
        return
    stamps = forecast_times(metadata, source, steps)
    names = metadata["data"]["targets"]
    if output:
        with atomic_write(output, "w", newline="") as stream:  # all or nothing, never a truncated CSV
            _write_forecast_csv(stream, names, forecasts, stamps)
    else:
        _write_forecast_csv(sys.stdout, names, forecasts, stamps)
    if plot:
        observed = engine.data.select_columns(engine.data.as_series(source), names).values
        engine.plot_forecast(observed, forecasts, names, plot)


def _write_forecast_csv(stream, names, forecasts, stamps):
    """One row per forecast step: its time stamp ("time") or number ("step"), then the targets."""
    writer = csv.writer(stream)
    if stamps is None:
        writer.writerow(["step"] + names)
        labels = range(1, len(forecasts) + 1)
    else:
        writer.writerow(["time"] + names)
        labels = _time_labels(stamps)
    for label, row in zip(labels, forecasts):
        writer.writerow([label] + [f"{value:.10g}" for value in row])


def _time_labels(stamps):
    """ISO 8601 text of datetime64 stamps, without the zero parts: 2024-03-01, 2024-03-01T06:00."""
    text = np.datetime_as_string(stamps, unit="s")
    if all(label.endswith("T00:00:00") for label in text):
        return [label[:10] for label in text]
    return [label[:-3] if label.endswith(":00") else label for label in text]


def _write_table(stream, table):
    """A pyarrow Table as CSV: times as forecast writes them, numbers to 10 digits."""
    writer = csv.writer(stream)
    writer.writerow(table.column_names)
    columns = [column.to_numpy(zero_copy_only=False) for column in table.columns]
    columns = [_time_labels(values) if np.issubdtype(values.dtype, np.datetime64) else values
               for values in columns]
    for row in zip(*columns):
        writer.writerow([f"{value:.10g}" if isinstance(value, float) else value for value in row])


def _start_option(value):
    """--from: a row number, or a date/time (checked against the series later)."""
    return None if value is None else int(value) if value.isdigit() else value


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@data_argument
@demo_option
@key_option
@time_column_option
@panel_source_options
@click.option("--season", type=click.IntRange(min=1),
              help="Panel: the period of the seasonal naive forecast that scales MASE [default: 1, persistence].")
@click.option("--id", "series_id", help="Panel: score only this series.")
@click.option("--from", "start", metavar="DATE|ROW", callback=lambda ctx, param, value: _start_option(value),
              help="Score only from this row (0-based) or date on; the state warms up on the rows before.")
@json_flag
def evaluate(checkpoint, data, demo, key, time_column, id_column, series_columns, season, series_id, start,
             as_json):
    """Score the model in CHECKPOINT on DATA: MSE, MAE and RMSE of its forecasts in
    original units, beside the persistence baseline (tomorrow = today) on the same targets.
    For a model trained on a panel: MSE, MAE, RMSE, sMAPE and MASE per series and over all."""
    model, metadata = engine.load_for_inference(checkpoint)
    panel = is_panel_recipe(metadata["data"])
    options = panel_options(id_column=id_column, series_columns=series_columns, season=season,
                            series_id=series_id, time_column=time_column_value(time_column) if panel else None)
    source = data_source(data, demo, key, time_column, panel=panel)
    metrics = engine.evaluate_series(model, metadata, source, key=key if panel else None, start=start, **options)
    if panel:
        _report_panel(metrics, as_json)
        return
    if as_json:
        click.echo(to_json(metrics))
        return
    click.echo(f"{'':10}{'model':>14}{'persistence':>14}")
    for name in ("mse", "mae", "rmse"):
        click.echo(f"{name.upper():10}{metrics[name]:>14.6g}{metrics['baseline_' + name]:>14.6g}")
    ratio = metrics["mse"] / metrics["baseline_mse"] if metrics["baseline_mse"] else float("inf")
    click.echo(f"{metrics['steps']} steps scored; model MSE is {ratio:.3f} x the baseline's.")


PANEL_METRICS = ("mse", "mae", "rmse", "smape", "mase")


def _report_panel(metrics, as_json):
    """Per-series and aggregate metrics: JSON (NaN as null) or a table."""
    if as_json:
        click.echo(to_json(metrics))
        return
    width = max(len("all series"), *(len(record["id"]) for record in metrics["series"]))
    click.echo(f"{'series':{width}}{'steps':>8}" + "".join(f"{name.upper():>12}" for name in PANEL_METRICS))
    for record in metrics["series"] + [{**metrics, "id": "all series"}]:
        click.echo(f"{record['id']:{width}}{record['steps']:>8}"
                   + "".join(f"{record[name]:>12.5g}" for name in PANEL_METRICS))
    click.echo(f"sMAPE in percent; MASE against the seasonal naive forecast, over all series the mean of "
               f"{metrics['mase_count']} defined; MSE, MAE, RMSE, sMAPE over all pooled.")


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@json_flag
def info(checkpoint, as_json):
    """Show what CHECKPOINT holds: model, training state and data normalisation."""
    metadata = engine.read_metadata(checkpoint)
    data = engine.pipeline.read_recipe(checkpoint, metadata["user"]) if "data" in metadata["user"] else None
    if as_json:
        click.echo(to_json(metadata))
        return
    model, trainer_meta = metadata["model"], metadata["trainer"]
    click.echo(f"Model:    {model['cell']}, {model['num_layers']} layer(s) x {model['hidden_size']} hidden, "
               f"{model['input_size']} input(s) -> {model['output_size']} output(s), {model['dtype']}, "
               f"init {model['init']}, seed {model['seed']}")
    if trainer_meta is not None:
        config = trainer_meta["config"]
        click.echo(f"Training: {trainer_meta['epoch']} epochs, {trainer_meta['step']} updates; "
                   f"k1={config['k1']} k2={config['k2']}, {config['optimizer']['name']} lr={config['optimizer']['lr']}, "
                   f"clip_norm={config['clip_norm']}")
        epochs = trainer_meta["epochs"]
        if epochs:
            last = epochs[-1]
            click.echo(f"          last epoch loss {last['loss']:.5g}" +
                       (f", validation loss {last['val_loss']:.5g}" if "val_loss" in last else ""))
        if epochs and "grad_flow" in epochs[-1]:
            click.echo(f"          gradient flow: {describe_grad_flow(epochs[-1]['grad_flow'])}")
        if trainer_meta["best"]:
            click.echo(f"          best loss {trainer_meta['best']['loss']:.5g} at epoch {trainer_meta['best']['epoch']}")
    if data is not None and is_panel_recipe(data):
        click.echo(f"Data:     {data['source']}: a panel of {len(data['ids'])} series, {data['scale']} scaling; "
                   f"targets {data['targets']}, inputs {data['inputs']}, horizon {data['horizon']}, "
                   f"{data['streams']} streams" + (", differenced" if data["difference"] else ""))
    elif data is not None:
        click.echo(f"Data:     {data['source']}; targets {data['targets']}, inputs {data['inputs']}, "
                   f"horizon {data['horizon']}, {data['streams']} streams"
                   + (", differenced" if data["difference"] else ""))
        if data.get("time"):
            stamps = data["time"]
            click.echo(f"          time column \"{stamps['column']}\" {stamps['first']} .. {stamps['last']}, "
                       f"frequency {stamps['frequency'] or 'irregular'}")
        for part in ("input", "target"):
            norm = data[f"{part}_norm"]
            click.echo(f"          {part} mean {_numbers(norm['mean'])}, std {_numbers(norm['std'])}")


def _numbers(values):
    return "[" + ", ".join(f"{value:.5g}" for value in values) + "]"


@main.command()
@click.option("--cell", default="lstm", show_default=True, type=click.Choice(CELLS))
@click.option("--nonlinearity", default="tanh", show_default=True, type=click.Choice(("tanh", "relu")))
@click.option("--inputs", "input_size", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--hidden", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--outputs", "output_size", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--layers", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--steps", default=6, show_default=True, type=click.IntRange(min=1))
@click.option("--batch", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--loss", default="mse", show_default=True, type=click.Choice(LOSSES))
@click.option("--tolerance", default=1e-6, show_default=True, type=float, help="Fail above this relative error.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
def gradcheck(cell, nonlinearity, input_size, hidden, output_size, layers, steps, batch, loss, tolerance, seed):
    """Check the analytic gradients of a random model against float64 central differences."""
    if cell != "rnn" and nonlinearity != "tanh":
        raise click.UsageError("--nonlinearity applies to --cell rnn only")
    result = engine.gradient_check(cell, input_size, hidden, output_size, layers, steps, batch, loss,
                                   nonlinearity, seed=seed)
    passed = result["max_rel_error"] <= tolerance
    click.echo(f"{cell}: {result['checked']} gradient entries checked; largest relative error "
               f"{result['max_rel_error']:.3g} (in {result['worst']}): {'ok' if passed else 'FAILED'}")
    return 0 if passed else 1


@main.command()
@click.option("--config", "configs", multiple=True, metavar="NAME",
              help="A standard configuration of bench/configs.py: single, tiny, small, medium, large, deep, gru-small, ... (repeatable) [default: all; --quick: a few].")
@click.option("--peers", is_flag=True, help="Also time PyTorch and JAX side by side, when installed (extra 'bench').")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the records to this JSON file.")
@click.option("--quick", is_flag=True, help="A few configurations and short rounds: under a minute.")
@click.option("--io", "reading", is_flag=True,
              help="Also time reading a 2M-row CSV and Parquet against pandas and numpy (bench.io; 200k rows with --quick).")
def bench(configs, peers, json_path, quick, reading):
    """Benchmark the training step (steps/s, GFLOP/s, ratio to each peer), peak memory,
    full-BPTT memory growth and compile time. Progress goes to stderr, the table to stdout."""
    from bench import format_table, run_bench
    from bench.runner import BenchmarkError

    check_writable(json_path, "'--json'")
    try:
        records = run_bench(list(configs) or None, peers=peers, quick=quick, json_path=json_path,
                            echo=lambda line: click.echo(line, err=True))
    except BenchmarkError as error:  # implementations disagree, or a measurement failed
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)
    click.echo(format_table(records))
    if reading:
        from bench.io import ROWS, format_io, run_io
        click.echo(format_io(run_io(ROWS // 10 if quick else ROWS, repeats=1 if quick else 3,
                                    echo=lambda line: click.echo(line, err=True))))


@main.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--format", "format_", required=True, type=click.Choice(engine.export.FORMATS),
              help="onnx: a float32 graph of standard RNN/LSTM/GRU operators; safetensors: the state_dict "
                   "with the config as metadata; torch: the state_dict as a .pt file (needs torch).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The file to write.")
@click.option("--with-normalization", is_flag=True,
              help="onnx: put the checkpoint's z-score in the graph, so x holds raw inputs and y "
                   "forecasts in original units (checkpoints from bptt train).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def export(checkpoint, format_, output, with_normalization, force):
    """Export the model in CHECKPOINT for deployment without bptt.

    \b
    ONNX inputs x (T, B, I), h0 (L, B, H) and for LSTM c0 (zeros to start); outputs
    y (T, B, O), hn and for LSTM cn, to pass back with the next piece of the streams.
    Float64 models are rounded to float32 (onnxruntime runs these operators in float32).
    With --with-normalization y[t] forecasts the targets at t + horizon in original units;
    for a model trained with --difference, give the target columns among the inputs as
    changes value[t] - value[t-1], and add level[t], the last observed target value at
    step t, to y[t] to get the forecast level.
    safetensors / torch: load every entry but head.weight / head.bias into torch.nn.LSTM
    (GRU, RNN), those two into torch.nn.Linear as weight / bias.

    \b
    Example:
      bptt export model.npz --format onnx -o model.onnx --with-normalization
    """
    try:
        summary = engine.export.export_checkpoint(checkpoint, output, format_, with_normalization, force)
    except engine.export.ExportUnavailable as error:  # a missing package: bad input, exit 2
        raise click.ClickException(str(error)) from None
    click.echo(summary, err=True)


@main.command()
@click.argument("data", required=False, type=click.Path(dir_okay=False))
@demo_option
@key_option
@time_column_option
@click.option("--space", "space", multiple=True, metavar="NAME=SPEC",
              help="Sweep a train option (repeatable): a list 32,64,128, a range 1e-4..1e-1:log, or 1..4:int.")
@click.option("--trials", default=20, show_default=True, type=click.IntRange(min=1),
              help="Configurations to try (with --resume: in all).")
@click.option("--seeds", default=1, show_default=True, type=click.IntRange(min=1),
              help="Train each configuration with this many initialisation seeds (--seed, --seed + 1, ...).")
@click.option("--sampler", default="tpe", show_default=True, type=click.Choice(("tpe", "random", "grid")),
              help="Optuna's sampler.")
@click.option("--prune/--no-prune", default=True, show_default=True,
              help="Stop poor trials early on their validation loss (Optuna's Hyperband; Ray: ASHA).")
@click.option("-o", "--output", "output_dir", default="sweep", show_default=True,
              type=click.Path(file_okay=False), help="Folder for results.csv, summary.json, best.npz, sensitivity.png.")
@click.option("--resume", is_flag=True, help="Continue the interrupted sweep in --output.")
@click.option("--ray", "address", metavar="ADDRESS",
              help="Run the trials on a Ray cluster ('auto' or host:port; extra 'ray') instead of local threads.")
@click.option("--workers", type=click.IntRange(min=1), help="Local trials at a time [default: cores / seeds].")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@json_flag
def sweep(data, demo, key, time_column, space, trials, seeds, sampler, prune, output_dir, resume, address,
          workers, quiet, as_json, **train_options):
    """Sweep hyper-parameters on DATA or a --demo series: every `bptt train` option below is
    a fixed setting, --space makes one a dimension of the search (Optuna; --ray: Ray Tune).

    \b
    Example:
      bptt sweep --demo mackey-glass --space lr=1e-3..3e-2:log --space hidden=8,16,32 \\
                 --trials 6 --seeds 2 --epochs 6 -o sw
    """
    import engine.sweep

    context = click.get_current_context()
    fixed = {name: value for name, value in train_options.items()
             if context.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
    dimensions = engine.sweep.space.parse_assignments(space)
    if not dimensions:
        raise click.UsageError("give at least one --space NAME=SPEC, e.g. --space lr=1e-4..1e-1:log")
    if set(PANEL_TRAIN_OPTIONS) & set(fixed) or demo in PANEL_DEMOS or is_panel_path(data):
        raise click.UsageError("bptt sweep runs on one series; a panel of series (--id-column, --series-columns, "
                               "--scale, a directory or glob of files, --demo sensors) is not supported yet: "
                               "train it with bptt train")
    source = data_source(data, demo, key, time_column)
    try:
        outcome = engine.sweep.run(source, dimensions, trials=trials, seeds=seeds, executor="ray" if address else "local",
                                   address=address, output_dir=output_dir, sampler=sampler, prune=prune,
                                   resume=resume, workers=workers, progress=None if quiet else sys.stderr, **fixed)
    except engine.sweep.ExtraUnavailable as error:
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt:
        click.echo(f"\nInterrupted: the finished trials are in {output_dir}; continue with --resume -o {output_dir}.",
                   err=True)
        sys.exit(130)
    if as_json:
        record = engine.sweep.report.json_ready({"summary": outcome["summary"], "results": outcome["results"]})
        click.echo(json.dumps(record, default=str))
    elif not quiet:
        best = outcome["summary"]["best"]
        click.echo("No trial completed." if best is None else
                   f"Best: {' '.join(f'--{name} {value:.4g}' if isinstance(value, float) else f'--{name} {value}' for name, value in best['settings'].items())}"
                   f"  validation loss {best['val_loss']:.5g} (trial {best['trial'] + 1}).  Outputs in {output_dir}/",
                   err=True)


# Every `bptt train` option is a fixed setting of a sweep, from train's own definitions
# (so an option added to train is one here too), except those the sweep replaces.
sweep.params.extend(param for param in train.params if param.name not in NOT_SETTINGS)
