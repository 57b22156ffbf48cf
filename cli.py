"""The `bptt` command: train, forecast, evaluate, info, gradcheck and bench.

Each command is a few lines over the library (engine.pipeline and friends). Bad input
of any kind ends with one line "Error: ..." on stderr and exit status 2, before anything
is written; a diverged run, a failed gradcheck or a failed write exit with 1, Ctrl-C 130.
"""
import csv
import json
import math
import os
import sys
import time
import warnings

import click
import numpy as np
import pyarrow as pa
from click.core import ParameterSource

from kernels.blas import BlasUnavailable

try:
    import engine
except BlasUnavailable as unavailable:  # BPTT_BLAS names a backend this machine lacks: one line, no work
    click.echo(f"Error: {unavailable}", err=True)
    sys.exit(2)
from engine.blas import backend as blas_backend
from engine.data import DataError, as_series
from engine.demos import DEMOS, PANEL_DEMOS, load_demo
from engine.distributed import ClusterUnavailable, WorkerFailed, connect
from engine.files import OutputError, atomic_write, check_output, is_file_pattern
from engine.first_run import compile_notice
from engine.forecasting.prepare import is_forecasting_recipe
from engine.grad_flow import describe as describe_grad_flow
from engine.model import CELLS
from engine.options import OPTIONS, PANEL_OPTIONS, SET_BY, parse_memory, train_arguments
from engine.panel import is_panel_recipe
from engine.series.times import GapWarning
from engine.series.zones import labels as time_labels
from engine.sweep.space import NOT_SETTINGS

BAD_INPUT = 2
LOSSES = ("mse", "cross_entropy")


class Bptt(click.Group):
    """A click group whose errors are one line on stderr with exit status 2, no traceback."""

    def main(self, args=None, prog_name=None, **extra):
        extra.pop("standalone_mode", None)
        _NOTICES.clear()
        try:
            with warnings.catch_warnings():   # restores the caller's warning display afterwards
                warnings.showwarning = _one_line_warning
                warnings.simplefilter("default", GapWarning)   # once per run and place, never an error
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
        for notice in _NOTICES:  # after a run that went through, so that bad input stays one line
            click.echo(notice, err=True)
        sys.exit(code if isinstance(code, int) else 0)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """Gaps in the time stamps (engine.series.times.GapWarning) as one line "Warning: ..."
    on stderr; other warnings as Python shows them."""
    if issubclass(category, GapWarning):
        click.echo(f"Warning: {message}", err=True)
    else:
        click.echo(warnings.formatwarning(message, category, filename, lineno, line).rstrip("\n"), err=True)


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


def announce_first_compile(silent):
    """Until the command ends: one line on stderr if the kernels compile (not yet in Numba's
    cache; engine.first_run), unless `silent` (--quiet, --json)."""
    if not silent:
        click.get_current_context().with_resource(
            compile_notice(lambda line: click.echo(line, err=True)))


def data_source(path, demo, key=None, time_column=None, panel=False):
    """The series to read: a file path or a demo, exactly one of them. key: the array of
    an .npz file; time_column: the column of time stamps (default: the first of dates).
    A panel (`panel`, a directory or a glob) stays a path for engine.panel to read."""
    if (path is None) == (demo is None):
        raise click.UsageError("give either a DATA file or --demo NAME" if path is None
                               else "give a DATA file or --demo NAME, not both")
    if demo is not None and (key is not None or time_column is not None):
        raise click.UsageError(f"--{'key' if key is not None else 'time-column'} applies to a DATA file, "
                               "not to --demo")
    if demo is None and (panel or is_panel_path(path)):
        return path
    # the whole file, a non-numeric column noted, not raised: only the columns used must be numbers
    return load_demo(demo) if demo else as_series(path, key, time_column_value(time_column))


def reading_options(source, key, time_column):
    """--key and --time-column for the engine to apply: none once data_source has read the
    data with them (a path it left for engine.panel keeps them)."""
    return dict(key=key, time_column=time_column) if isinstance(source, str) else dict(key=None, time_column=None)


def is_panel_path(path):
    """A directory, or a glob pattern naming no existing file: files of one series each."""
    return path is not None and is_file_pattern(path)


def time_column_value(option):
    """--time-column as engine.series takes it: a name, None (the first column of dates), False ('none')."""
    return False if option == "none" else option


def check_writable(path, option, inputs=(), outputs=(), force=False, hint=""):
    """Fail before any work when writing `path` could destroy something (engine.files.check_output):
    it may not be one of the command's `inputs` or other `outputs`, a link, a device or read-only,
    nor an existing file unless `force` (--force; hint: what else the refusal may suggest)."""
    if path is None:
        return
    try:
        check_output(path, inputs=inputs, outputs=outputs, replace=force, hint=hint)
    except OutputError as error:
        raise click.BadParameter(str(error), param_hint=option) from None


def option_from(option):
    """The click option (a decorator) of an engine.options.Option."""
    declarations, attributes = _click_spec(option)
    return click.option(*declarations, **attributes)


def _click_spec(option):
    """(declarations, attributes) of the click.Option of an engine.options.Option: its flag,
    Python name, type, default and help."""
    attributes = dict(help=option.help, metavar=option.metavar)
    if option.kind == "switch":   # --NAME / --no-NAME, unset by default
        return [f"{option.flag}/--no-{option.flag[2:]}", option.name], {**attributes, "default": None}
    if option.kind == "flag":
        attributes.update(is_flag=True)
    else:
        attributes.update(type=_click_type(option), default=option.default, show_default=option.default is not None)
    if option.kind == "memory":
        attributes.update(callback=_memory_option)
    return [option.flag, option.name], attributes


def _click_type(option):
    """The click type that checks what the option's parse checks (click's own messages)."""
    if option.kind == "choice":
        return click.Choice(option.choices)
    if option.kind in ("int", "float") and option.minimum is not None:
        bounded = click.IntRange if option.kind == "int" else click.FloatRange
        return bounded(option.minimum, option.maximum, min_open=option.min_open, max_open=option.max_open)
    return {"int": int, "float": float}.get(option.kind)  # text, time, columns, memory: strings


def _memory_option(context, param, value):
    """--memory as Trainer(memory=...) takes it: None, "sqrt" or bytes."""
    try:
        return parse_memory(value)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="'--memory'") from None


def training_options(function):
    """Every training option of engine.options, in its order (train; sweep's fixed settings)."""
    for option in reversed(OPTIONS.values()):
        function = option_from(option)(function)
    return function


def deprecated_spelling(flag, name, new, **attributes):
    """A hidden option with an old spelling that still works for one release; the command
    takes its value with either_of."""
    return click.option(flag, name, hidden=True, help=f"Deprecated spelling of {new}.", **attributes)


def either_of(new_name, old_value, new_flag, old_flag):
    """The value of an option given by its new spelling or its deprecated one (not both);
    the old one with a one-line notice on stderr naming the new one, at the end of a run that
    went through (a refused one prints only its Error line)."""
    context = click.get_current_context()
    if old_value is None:
        return context.params[new_name]
    if context.get_parameter_source(new_name) is not ParameterSource.DEFAULT:
        raise click.UsageError(f"give {new_flag} or {old_flag} (its old spelling), not both")
    _NOTICES.append(f"Warning: {old_flag} is deprecated here; use {new_flag} (the old spelling goes in the "
                    "next release).")
    return old_value


_NOTICES = []  # deprecation notices of this command, printed once it has run


demo_option = click.option("--demo", type=click.Choice(sorted({**DEMOS, **PANEL_DEMOS})),
                           help="Use a bundled generated series (sensors: a panel of 50) instead of DATA.")
data_argument = click.argument("data", required=False, type=click.Path())


PANEL_TRAIN_OPTIONS = PANEL_OPTIONS  # options that make DATA a panel


def panel_source_options(function):
    """--id-column and --series-columns: how DATA holds many series (with --time-column)."""
    for name in ("series_columns", "id_column"):
        function = option_from(OPTIONS[name])(function)
    return function


def model_and_data(command):
    """CHECKPOINT, DATA and the options that read DATA: the arguments of a command that runs
    a trained model over data (forecast, evaluate, backtest)."""
    for decorate in reversed((click.argument("checkpoint", type=click.Path(dir_okay=False)), data_argument,
                              demo_option, key_option, time_column_option, panel_source_options)):
        command = decorate(command)
    return command


intervals_option = click.option(
    "--intervals", default="80,95", show_default=True, metavar="LEVELS",
    help="Central interval levels in percent, or 'none': from a gaussian model's distribution or a quantile "
         "model's quantile pairs (0.1 and 0.9 for 80), calibrated on the validation errors stored at training "
         "(split conformal); a point model's from those errors alone.")


def forecasting_options(metadata, **options):
    """The forecasting options (--intervals, --future) for a model with a forecasting recipe;
    an older checkpoint takes none (a --future given for one is refused by the engine)."""
    if is_forecasting_recipe(metadata["data"]):
        return options
    return {name: value for name, value in options.items() if name == "future" and value is not None}


def json_flag(what):
    """--json: print `what` as JSON on stdout instead of text."""
    return click.option("--json", "as_json", is_flag=True,
                        help=f"Print {what} as JSON on stdout; a number that is not finite (a diverged loss, "
                             "an overflowing metric) is null.")


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
key_option = option_from(OPTIONS["key"])
time_column_option = option_from(OPTIONS["time_column"])
force_option = click.option("--force", is_flag=True, help="Replace existing output files.")


@main.command()
@data_argument
@demo_option
@training_options
@click.option("-o", "--output", default="model.npz", show_default=True, type=click.Path(dir_okay=False),
              help="Checkpoint path, written after every epoch.")
@click.option("--force", is_flag=True, help="Replace an existing checkpoint (and --plot file) with a new run.")
@click.option("--resume", is_flag=True,
              help="Continue training the checkpoint at --output with its own settings and normalisation "
                   "(--epochs, --patience, --lr, --memory may change; other options must agree with it).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Save the training curves to this PNG (needs matplotlib).")
@click.option("--ray", "ray_address", metavar="ADDRESS",
              help="Train on the Ray cluster whose head is at HOST:PORT (needs Ray: extra 'ray').")
@click.option("--workers", type=click.IntRange(min=1), help="Ray workers, one batch shard each (with --ray) [default: 2].")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@json_flag("one record per epoch")
def train(data, demo, output, force, resume, plot, ray_address, workers, quiet, as_json, **options):
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
    check_writable(output, "'-o' / '--output'", inputs=[data], force=force or resume,
                   hint=" or --resume to continue it")
    check_writable(plot, "'--plot'", inputs=[data], outputs=[output], force=force)
    if plot:
        engine.require_matplotlib(plot)  # before any work, so nothing is lost later
    train_arguments(options)  # bad combinations fail now (ValueError: exit 2)
    announce_first_compile(quiet or as_json)
    if workers is not None and ray_address is None:
        raise click.UsageError("--workers applies to training on a Ray cluster: give --ray ADDRESS")
    if ray_address is not None and (options["shards"] is not None or options["split"] is not None):
        raise click.UsageError("with --ray the batch shards are the cluster's workers (--workers); "
                               "--shards and --split apply to training on this machine")
    cluster = None
    if ray_address is not None:
        connect(ray_address)  # within seconds, before any work
        cluster = dict(address=ray_address, workers=workers or 2)
    panel = any(options[name] is not None for name in PANEL_TRAIN_OPTIONS) or demo in PANEL_DEMOS \
        or is_panel_path(data)
    source = data_source(data, demo, options["key"], options["time_column"], panel=panel)
    options.update(reading_options(source, options["key"], options["time_column"]))
    context = click.get_current_context()
    explicit = {name for name in context.params if context.get_parameter_source(name) is not ParameterSource.DEFAULT}
    if "step_size" in explicit and options["schedule"] != "step":
        raise click.UsageError("--step-size applies to --schedule step")
    if resume:  # only what the user gave goes on, for the pipeline to refuse what conflicts
        options = {name: value for name, value in options.items() if name in explicit}
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
            source, output, **options, resume=resume, force=force, on_start=progress and progress.on_start,
            on_update=progress and progress.on_update, on_epoch=on_epoch, cluster=cluster)
    except engine.pipeline.ResumeConflict as error:
        given = " ".join(f"--{name.replace('_', '-')}" + ("" if context.params[name] is True else f" {context.params[name]}")
                         for name in SET_BY[error.option] if name in explicit)
        if not given:   # not an option: what the data holds (a resumed series' time column)
            held = "none" if error.given is False else repr(error.given)
            given = f"the data's {error.option.replace('_', ' ')} {held}"
        stored = "unset" if error.stored in (None, False) else repr(error.stored)
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
        _summary(trainer, output, time.perf_counter() - started, plot, restored=context.params["patience"] is not None)


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
@model_and_data
@click.option("--id", "series_id", help="Panel: forecast only this series.")
@click.option("--steps", default=1, show_default=True, type=click.IntRange(min=1), help="Steps to forecast past the end.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the CSV here [default: stdout].")
@click.option("--plot", type=click.Path(dir_okay=False), help="Save forecast against the observed tail to this PNG.")
@intervals_option
@click.option("--future", type=click.Path(dir_okay=False),
              help="A file with the known inputs of the steps to forecast (read like DATA, times continuing it) "
                   "[default: DATA's rows after its last observed target].")
@force_option
def forecast(checkpoint, data, demo, key, time_column, id_column, series_columns, series_id, steps, output,
             plot, intervals, future, force):
    """Forecast --steps steps past the last observed target of DATA with the model in CHECKPOINT.

    The state warms up over the whole of DATA. A model trained with --horizon H forecasts
    up to H steps in one pass; more steps roll forward in blocks of H (its forecasts taken as
    observed), when every past input is a target. Known inputs of the steps forecast come
    from DATA's rows after its last observed target, or from --future. Writes CSV in
    original units: "time" (the next time stamps) or "step", then per target NAME, its
    interval bounds NAME_lo80, NAME_hi80, ... (--intervals) and a quantile model's NAME_q0.1,
    ...; steps past the horizon carry no bounds. For a model trained on a panel: one row
    per (id, time), or (id, step) without times."""
    check_writable(output, "'-o' / '--output'", inputs=[checkpoint, data, future], force=force)
    check_writable(plot, "'--plot'", inputs=[checkpoint, data, future], outputs=[output], force=force)
    if plot:
        engine.require_matplotlib(plot)
    model, metadata = engine.load_for_inference(checkpoint)
    panel = is_panel_recipe(metadata["data"])
    if panel and plot:
        raise click.UsageError("--plot draws one series; it is not available for a model trained on a panel")
    source = data_source(data, demo, key, time_column, panel=panel)
    announce_first_compile(False)
    table = engine.forecast_series((model, metadata), source, steps, **reading_options(source, key, time_column),
                                   id_column=id_column, series_columns=series_columns, series_id=series_id,
                                   **forecasting_options(metadata, intervals=intervals, future=future))
    if output:
        with atomic_write(output, "w", newline="") as stream:  # all or nothing, never a truncated CSV
            _write_table(stream, table)
    else:
        _write_table(sys.stdout, table)
    if plot:
        names = metadata["data"]["targets"]
        observed = engine.data.select_columns(engine.data.as_series(source), names).values
        forecasts = np.column_stack([table.column(name).to_numpy() for name in names])  # (steps, O)
        engine.plot_forecast(observed, forecasts, names, plot)




def _write_table(stream, table):
    """A pyarrow Table as CSV: times as forecast writes them (every time column of the table
    in one format: dates only when all are at midnight), numbers to 10 digits."""
    writer = csv.writer(stream)
    writer.writerow(table.column_names)
    columns = [column.to_numpy(zero_copy_only=False) for column in table.columns]
    timed = [i for i, column in enumerate(table.columns) if pa.types.is_timestamp(column.type)]
    if timed:
        labels = time_labels(np.concatenate([columns[i] for i in timed]), getattr(table.columns[timed[0]].type, "tz", None))
        for part, i in enumerate(timed):
            columns[i] = labels[part * table.num_rows:(part + 1) * table.num_rows]
    for row in zip(*columns):
        writer.writerow([f"{value:.10g}" if isinstance(value, float) else value for value in row])


@main.command()
@model_and_data
@click.option("--season", type=click.IntRange(min=1),
              help="The period of the seasonal naive forecast beside the model, which scales MASE [default: 1, "
                   "persistence].")
@click.option("--id", "series_id", help="Panel: score only this series.")
@click.option("--from", "start", metavar="DATE|ROW",
              help="Score only from this row (0-based; negative from the end of each series: -5 scores the "
                   "last 5 rows) or date/time on (the data's local time unless it has an offset such as "
                   "+05:00); the state warms up on the rows before.")
@intervals_option
@json_flag("the metrics")
def evaluate(checkpoint, data, demo, key, time_column, id_column, series_columns, season, series_id, start,
             intervals, as_json):
    """Score the model in CHECKPOINT on DATA: its forecasts of steps 1..horizon from every
    origin (from --from on), in original units, beside the seasonal naive forecast of
    --season (default 1: persistence, tomorrow = today) on the same targets: MSE, MAE,
    RMSE, sMAPE and MASE overall and per step, and the coverage and width of the
    --intervals. For a model trained on a panel, also per series. (A checkpoint of an
    older version: MSE, MAE and RMSE beside persistence, as that version reported.)"""
    model, metadata = engine.load_for_inference(checkpoint)
    panel = is_panel_recipe(metadata["data"])
    source = data_source(data, demo, key, time_column, panel=panel)
    announce_first_compile(as_json)
    metrics = engine.evaluate_series((model, metadata), source, start=start, season=season,
                                     **reading_options(source, key, time_column), id_column=id_column,
                                     series_columns=series_columns, series_id=series_id,
                                     **forecasting_options(metadata, intervals=intervals))
    if is_forecasting_recipe(metadata["data"]) and not as_json:
        _report_forecasting(metrics, panel)
        return
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


def _report_forecasting(metrics, panel):
    """A forecasting model's evaluation: the panel's table, then the model beside the
    seasonal naive over all steps, per step, and the interval scores."""
    if panel:
        _report_panel(metrics, False)
    naive = "persistence" if metrics["season"] == 1 else f"naive {metrics['season']}"
    click.echo(f"{'':10}{'model':>14}{naive:>14}")
    for name in ("mse", "mae", "rmse"):
        click.echo(f"{name.upper():10}{metrics[name]:>14.6g}{metrics['baseline_' + name]:>14.6g}")
    _report_steps(metrics["per_step"])
    _report_intervals(metrics)
    ratio = metrics["mse"] / metrics["baseline_mse"] if metrics["baseline_mse"] else float("inf")
    click.echo(f"{metrics['steps']} steps scored (forecast origins, each forecasting steps 1..horizon); "
               f"model MSE is {ratio:.3f} x the baseline's.")


def _report_steps(records):
    """MAE, RMSE, sMAPE and MASE per horizon step beside the naive MAE."""
    click.echo(f"{'step':>6}{'count':>8}{'MAE':>12}{'RMSE':>12}{'sMAPE':>10}{'MASE':>10}{'naive MAE':>12}")
    for record in records:
        click.echo(f"{record['step']:>6}{record['count']:>8}{record['mae']:>12.5g}{record['rmse']:>12.5g}"
                   f"{record['smape']:>10.4g}{record['mase']:>10.4g}{record['naive_mae']:>12.5g}")


def _report_intervals(metrics):
    """Coverage and width per interval level, and the distribution's scores."""
    for level, record in metrics["intervals"].items():
        click.echo(f"{level}% intervals: coverage {100 * record['coverage']:.1f}%, mean width "
                   f"{record['mean_width']:.5g}, interval score {record['interval_score']:.5g}")
    for name in ("crps", "pinball"):
        if name in metrics:
            click.echo(f"{name.upper()} {metrics[name]:.5g}")


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
@model_and_data
@click.option("--id", "series_id", help="Panel: backtest only this series.")
@click.option("--from", "start", metavar="DATE|ROW",
              help="The first origin: a row (0-based; negative from the end) or a date/time (the data's local "
                   "time unless it has an offset) [default: the first row the model can forecast from].")
@click.option("--every", default=1, show_default=True, type=click.IntRange(min=1), help="Rows between origins.")
@click.option("--steps", type=click.IntRange(min=1), help="Steps forecast from each origin [default: the horizon].")
@click.option("--season", default=1, show_default=True, type=click.IntRange(min=1),
              help="The period of the seasonal naive forecast beside the model (and the scale of MASE).")
@intervals_option
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write every forecast to this CSV: origin, [id,] time, step, target, forecast, actual, naive, "
                   "loL, hiL per level.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Save MAE against the step, beside the naive's, to this PNG.")
@json_flag("the metrics")
@force_option
def backtest(checkpoint, data, demo, key, time_column, id_column, series_columns, series_id, start, every, steps,
             season, intervals, output, plot, as_json, force):
    """Backtest the model in CHECKPOINT on DATA from rolling origins, without refitting.

    From each origin (--from, then every --every rows) the state is warmed up on all rows
    before it and steps 1..--steps are forecast; a direct model gives every origin in one
    pass over each series. Reports MAE, RMSE, sMAPE and MASE per step and overall beside
    the seasonal naive forecast from the same origin, and the coverage and width of the
    --intervals."""
    check_writable(output, "'-o' / '--output'", inputs=[checkpoint, data], force=force)
    check_writable(plot, "'--plot'", inputs=[checkpoint, data], outputs=[output], force=force)
    if plot:
        engine.require_matplotlib(plot)
    model, metadata = engine.load_for_inference(checkpoint)
    source = data_source(data, demo, key, time_column, panel=is_panel_recipe(metadata["data"]))
    announce_first_compile(as_json)
    found = engine.backtest_series((model, metadata), source, start=start, every=every, steps=steps, season=season,
                                   intervals=intervals, **reading_options(source, key, time_column),
                                   id_column=id_column, series_columns=series_columns, series_id=series_id)
    if output:
        with atomic_write(output, "w", newline="") as stream:
            _write_table(stream, found.table)
    if plot:
        per_step = found.metrics["steps"]
        engine.plot_backtest_errors(plot, [record["step"] for record in per_step],
                                          [record["mae"] for record in per_step],
                                          [record["naive_mae"] for record in per_step],
                                          f"Backtest of {os.path.basename(checkpoint)}: {found.metrics['origins']} origins")
    if as_json:
        click.echo(to_json(found.metrics))
        return
    _report_steps(found.metrics["steps"] + [found.metrics["overall"]])
    _report_intervals(found.metrics)
    click.echo(f"{found.metrics['origins']} origins; MASE against the seasonal naive of period {season}.")


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@json_flag("the checkpoint's metadata")
def info(checkpoint, as_json):
    """Show what CHECKPOINT holds: model, training state and data normalisation."""
    metadata = engine.read_metadata(checkpoint)
    data = engine.pipeline.read_recipe(checkpoint, metadata["user"]) if "data" in metadata["user"] else None
    if as_json:
        click.echo(to_json(metadata))
        return
    model, trainer_meta = metadata["model"], metadata["trainer"]
    directions = "bidirectional " if model.get("bidirectional") else ""  # absent in older checkpoints
    click.echo(f"Model:    {model['cell']}, {model['num_layers']} {directions}layer(s) x {model['hidden_size']} hidden, "
               f"{model['input_size']} input(s) -> {model['output_size']} output(s), {model['dtype']}, "
               f"init {model['init']}, seed {model['seed']}")
    if model.get("skip"):  # absent in older checkpoints: no linear path
        click.echo(f"Linear path: the {model['input_size']} input(s) -> the outputs (skip.weight), beside the head")
    rates = [f"{name.replace('_', ' ')} {model[name]:g}" for name in ("dropout", "recurrent_dropout", "zoneout")
             if model.get(name, 0)]  # checkpoints before these options hold none: 0
    if rates:
        click.echo(f"Regularisation (training only): {', '.join(rates)}")
    if trainer_meta is not None:
        config = trainer_meta["config"]
        click.echo(f"Training: {trainer_meta['epoch']} epochs, {trainer_meta['step']} updates; "
                   f"gradient {config.get('gradient', 'bptt')}, k1={config['k1']} k2={config['k2']}, "
                   f"{config['optimizer']['name']} lr={config['optimizer']['lr']}, "
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
        _report_roles(data)
        if data["time_column"]:
            click.echo(f"          time column \"{data['time_column']}\", frequency {data['frequency'] or 'irregular'}"
                       + (f", zone {data['time_zone']}" if data.get("time_zone") else ""))
    elif data is not None:
        click.echo(f"Data:     {data['source']}; targets {data['targets']}, inputs {data['inputs']}, "
                   f"horizon {data['horizon']}, {data['streams']} streams"
                   + (", differenced" if data["difference"] else ""))
        _report_roles(data)
        if data.get("time"):
            stamps = data["time"]
            click.echo(f"          time column \"{stamps['column']}\" {stamps['first']} .. {stamps['last']}, "
                       f"frequency {stamps['frequency'] or 'irregular'}")
        for part in ("input", "target"):
            norm = data[f"{part}_norm"]
            click.echo(f"          {part} mean {_numbers(norm['mean'])}, std {_numbers(norm['std'])}")
    saved = metadata.get("blas")  # older checkpoints do not record it
    click.echo(f"BLAS:     {_blas_label(saved) if saved else 'not recorded'} when saved; "
               f"this process uses {_blas_label(blas_backend())}")


def _blas_label(blas):
    """\"mkl 2026.2\" from engine.blas.backend() or a checkpoint's record of it."""
    return f"{blas['name']} {blas['version'] or ''}".strip()


def _report_roles(data):
    """The forecasting recipe's roles, lags and loss (a forecasting checkpoint only)."""
    if not is_forecasting_recipe(data):
        return
    parts = [f"known {data['known']}" if data["known"] else "", f"calendar {data['calendar']}" if data["calendar"] else "",
             f"lags {data['lags']}" if data["lags"] else "no lags", f"static {data['static']}" if data["static"] else ""]
    loss = data.get("loss", "mse") + (f" {data['quantiles']}" if data.get("quantiles") else "")
    source = {"mse": "none", "gaussian": "from the distribution", "quantile": "from the quantile pairs"}
    calibrated = {"mse": "split conformal on the validation errors", "gaussian": "the distribution's, calibrated on "
                  "the validation errors", "quantile": "the quantile pairs', calibrated on the validation errors"}
    intervals = (calibrated if data.get("conformal") else source)[data.get("loss", "mse")]
    click.echo(f"          {', '.join(part for part in parts if part)}; loss {loss}; intervals {intervals}")


def _numbers(values, shown=8):
    """The first `shown` values, and how many more."""
    more = f", ... ({len(values)} in all)" if len(values) > shown else ""
    return "[" + ", ".join(f"{value:.5g}" for value in values[:shown]) + more + "]"


@main.command()
@click.option("--cell", default="lstm", show_default=True, type=click.Choice(CELLS), help="Recurrent cell to check.")
@click.option("--nonlinearity", default="tanh", show_default=True, type=click.Choice(("tanh", "relu")),
              help="Activation of --cell rnn.")
@click.option("--input-size", "input_size", default=3, show_default=True, type=click.IntRange(min=1),
              help="Inputs per step of the random model.")
@deprecated_spelling("--inputs", "old_input_size", "--input-size", type=click.IntRange(min=1))
@click.option("--hidden", default=8, show_default=True, type=click.IntRange(min=1), help="Hidden units per layer.")
@click.option("--output-size", "output_size", default=2, show_default=True, type=click.IntRange(min=1),
              help="Outputs per step (the linear head's size).")
@deprecated_spelling("--outputs", "old_output_size", "--output-size", type=click.IntRange(min=1))
@click.option("--layers", default=2, show_default=True, type=click.IntRange(min=1), help="Stacked recurrent layers.")
@click.option("--steps", default=6, show_default=True, type=click.IntRange(min=1), help="Time steps of the random sequence.")
@click.option("--batch", default=2, show_default=True, type=click.IntRange(min=1), help="Streams of the random sequence.")
@click.option("--loss", default="mse", show_default=True, type=click.Choice(LOSSES), help="Loss of the check.")
@click.option("--tolerance", default=1e-6, show_default=True, type=float, help="Fail above this relative error.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the random model and data.")
@click.option("--bidirectional", is_flag=True, help="Check a model of bidirectional layers.")
def gradcheck(cell, nonlinearity, input_size, old_input_size, hidden, output_size, old_output_size, layers, steps,
              batch, loss, tolerance, seed, bidirectional):
    """Check the analytic gradients of a random model against float64 central differences."""
    input_size = either_of("input_size", old_input_size, "--input-size", "--inputs")
    output_size = either_of("output_size", old_output_size, "--output-size", "--outputs")
    if cell != "rnn" and nonlinearity != "tanh":
        raise click.UsageError("--nonlinearity applies to --cell rnn only")
    announce_first_compile(False)
    result = engine.gradient_check(cell, input_size, hidden, output_size, layers, steps, batch, loss,
                                   nonlinearity, seed=seed, bidirectional=bidirectional)
    passed = result["max_rel_error"] <= tolerance
    click.echo(f"{cell}: {result['checked']} gradient entries checked; largest relative error "
               f"{result['max_rel_error']:.3g} (in {result['worst']}): {'ok' if passed else 'FAILED'}")
    return 0 if passed else 1


_STDOUT = "-"  # bench --json without a path: the records on stdout


@main.command()
@click.option("--config", "configs", multiple=True, metavar="NAME",
              help="A standard configuration of bench/configs.py: single, tiny, small, medium, large, deep, gru-small, ... (repeatable) [default: all; --quick: a few].")
@click.option("--peers", is_flag=True, help="Also time PyTorch and JAX side by side, when installed (extra 'bench').")
@click.option("-o", "--output", "json_path", type=click.Path(dir_okay=False),
              help="Also write the records to this JSON file.")
@click.option("--json", "as_json", is_flag=False, flag_value=_STDOUT, default=None, metavar="",
              help="Print the records as JSON on stdout instead of the table (with --io, the reading "
                   "records as a second JSON line).")
@force_option
@click.option("--quick", is_flag=True, help="A few configurations and short rounds: under a minute.")
@click.option("--io", "reading", is_flag=True,
              help="Also time reading a 2M-row CSV and Parquet against pandas and numpy (bench.io; 200k rows with --quick).")
@click.option("--quality", is_flag=True,
              help="Instead of speed, measure forecast quality: the backtest MASE of the training defaults, the "
                   "default sweep, ETS, ARIMA and the exact forecast on a suite of series (bench.quality; needs "
                   "statsmodels, extra 'bench'; about 15 minutes, --quick under a minute).")
def bench(configs, peers, json_path, as_json, force, quick, reading, quality):
    """Benchmark the training step (steps/s, GFLOP/s, ratio to each peer), peak memory,
    full-BPTT memory growth, each thread plan quiet and beside a process burning a core,
    and compile time; or, with --quality, forecast quality.
    Progress goes to stderr, the table to stdout."""
    from bench import format_table, run_bench
    from bench.runner import BenchmarkError

    if as_json not in (None, _STDOUT):  # the old form --json FILE
        json_path, as_json = either_of("json_path", as_json, "-o FILE", "--json FILE"), None
    check_writable(json_path, "'-o' / '--output'", force=force)
    if quality:
        return _bench_quality(json_path, as_json, quick, configs=configs, peers=peers, reading=reading)
    try:
        records = run_bench(list(configs) or None, peers=peers, quick=quick, json_path=json_path,
                            echo=lambda line: click.echo(line, err=True))
    except BenchmarkError as error:  # implementations disagree, or a measurement failed
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)
    click.echo(to_json(records) if as_json else format_table(records))
    if reading:
        from bench.io import ROWS, format_io, run_io
        reads = run_io(ROWS // 10 if quick else ROWS, repeats=1 if quick else 3,
                       echo=lambda line: click.echo(line, err=True))
        click.echo(to_json(reads) if as_json else format_io(reads))


def _bench_quality(json_path, as_json, quick, **speed_options):
    """bench --quality: bench.quality's table (or its JSON), -o its JSON file."""
    from bench.quality import best_settings, markdown, require_statsmodels, run

    flags = {"configs": "--config", "peers": "--peers", "reading": "--io"}
    given = [flags[name] for name, value in speed_options.items() if value]
    if given:
        raise click.UsageError(f"{', '.join(given)} time the training step; --quality measures forecasts instead")
    try:
        require_statsmodels()
    except ImportError as error:
        raise click.ClickException(str(error)) from None
    result = run(quick, echo=lambda line: click.echo(line, err=True))
    if json_path is not None:
        with atomic_write(json_path, "w") as out:
            out.write(to_json(result))
    click.echo(to_json(result) if as_json else f"{markdown(result)}\n\n{best_settings(result)}")


@main.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--format", "format_", required=True, type=click.Choice(engine.export.FORMATS),
              help="onnx: a float32 graph of standard RNN/LSTM/GRU operators; safetensors: the state_dict "
                   "with the config as metadata; torch: the state_dict as a .pt file (needs torch).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The file to write.")
@click.option("--with-normalization", is_flag=True,
              help="onnx: put the checkpoint's z-score in the graph, so x holds raw inputs and y "
                   "forecasts in original units (checkpoints from bptt train).")
@force_option
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
@data_argument
@demo_option
@key_option
@time_column_option
@click.option("--space", "space", multiple=True, metavar="NAME=SPEC",
              help="Sweep a train option (repeatable): a list 32,64,128, a range 1e-4..1e-1:log, or 1..4:int "
                   "[default: lr, hidden, layers and k1 over ranges sized to the data, docs/sweeps.md].")
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
@click.option("--metric", type=click.Choice(("mase", "smape", "rmse")),
              help="Rank the configurations by this metric of the forecasts on the validation tails in original "
                   "units, mean over series [default: the validation loss, mean over series]; pruning uses the "
                   "validation loss.")
@click.option("--season", default=1, show_default=True, type=click.IntRange(min=1),
              help="Period of the seasonal naive forecast that scales --metric mase (1: persistence).")
@click.option("--parallel", type=click.IntRange(min=1), help="Local trials at a time [default: cores / seeds].")
@deprecated_spelling("--workers", "workers", "--parallel", type=click.IntRange(min=1))
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@json_flag("the summary and one result per trial and seed")
def sweep(data, demo, key, time_column, space, trials, seeds, sampler, prune, output_dir, resume, address,
          metric, season, parallel, workers, quiet, as_json, **train_options):
    """Sweep hyper-parameters on DATA (one series or a panel, as train reads it) or a --demo:
    every `bptt train` option below is a fixed setting, --space makes one a dimension of the
    search (Optuna; --ray: Ray Tune); without --space the default space (lr, hidden, layers,
    k1) is searched.

    \b
    Examples:
      bptt sweep --demo mackey-glass --space lr=1e-3..3e-2:log --space hidden=8,16,32 \\
                 --trials 6 --seeds 2 --epochs 6 -o sw
      bptt sweep meters.csv --id-column meter --metric mase --season 24 -o sw   (a panel)
    """
    import engine.sweep

    workers = either_of("parallel", workers, "--parallel", "--workers")
    context = click.get_current_context()
    fixed = {name: value for name, value in train_options.items()
             if context.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
    dimensions = engine.sweep.space.parse_assignments(space) or None   # none: the default space
    panel = bool(set(PANEL_TRAIN_OPTIONS) & set(fixed)) or demo in PANEL_DEMOS or is_panel_path(data)
    source = data_source(data, demo, key, time_column, panel=panel)
    announce_first_compile(quiet or as_json)
    try:
        outcome = engine.sweep.run(source, dimensions, trials=trials, seeds=seeds, executor="ray" if address else "local",
                                   address=address, output_dir=output_dir, sampler=sampler, prune=prune,
                                   resume=resume, workers=workers, progress=None if quiet else sys.stderr,
                                   metric=metric, season=season,
                                   **reading_options(source, key, time_column), **fixed)
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
                   f"  {metric or 'validation loss'} {best['score']:.5g} (trial {best['trial'] + 1}).  "
                   f"Outputs in {output_dir}/",
                   err=True)


# Every training option (engine.options) is a fixed setting of a sweep, except those the
# sweep replaces, as `bptt train` spells them.
for _name, _option in OPTIONS.items():
    if _name not in NOT_SETTINGS:
        _declarations, _attributes = _click_spec(_option)
        sweep.params.append(click.Option(_declarations, **_attributes))
