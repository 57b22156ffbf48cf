"""The `bptt` command: train, forecast, evaluate, info, gradcheck and bench.

Each command is a few lines over the library (engine.pipeline and friends). Bad input
of any kind ends with one line "Error: ..." on stderr and exit status 2, before anything
is written; a diverged run, a failed gradcheck or a failed write exit with 1, Ctrl-C 130.
"""
import csv
import json
import os
import sys
import time

import click
import numpy as np

import engine
from engine.data import FILL_METHODS, DataError, as_series
from engine.demos import DEMOS, load_demo
from engine.initializers import INITS
from engine.model import CELLS
from engine.optim import OPTIMIZERS
from engine.pipeline import forecast_times

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
        except (DataError, engine.CheckpointError, engine.PlotUnavailable, ValueError, TypeError) as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(BAD_INPUT)
        except engine.TrainingDiverged as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(1)
        except OSError as error:  # a failed write (disk full, permissions): one line, not a traceback
            click.echo(f"Error: {error}", err=True)
            sys.exit(1)
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


def data_source(path, demo, key=None, time_column=None):
    """The series to read: a file path or a demo, exactly one of them. key: the array of
    an .npz file; time_column: the column of time stamps (default: the first of dates)."""
    if (path is None) == (demo is None):
        raise click.UsageError("give either a DATA file or --demo NAME" if path is None
                               else "give a DATA file or --demo NAME, not both")
    # the whole file, a non-numeric column noted, not raised: only the columns used must be numbers
    if time_column == "none":
        time_column = False
    return load_demo(demo) if demo else as_series(path, key, time_column)


def check_writable(path, option):
    """Fail before any work when `path` cannot be written: its directory must exist."""
    if path is None:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise click.BadParameter(f"cannot write {path}: directory {directory} does not exist",
                                 param_hint=option)
    if not os.access(directory, os.W_OK):
        raise click.BadParameter(f"cannot write {path}: directory {directory} is not writable",
                                 param_hint=option)


demo_option = click.option("--demo", type=click.Choice(sorted(DEMOS)),
                           help="Use a bundled generated series instead of DATA.")
json_flag = click.option("--json", "as_json", is_flag=True,
                         help="Print JSON on stdout (train: one record per epoch).")
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
        count = int(float(number) * _UNITS[unit])
    except ValueError:
        raise click.BadParameter(f"expected 'sqrt' or a byte count such as 200M; got {value!r}",
                                 param_hint="'--memory'") from None
    if count < 1:
        raise click.BadParameter(f"must be positive; got {value!r}", param_hint="'--memory'")
    return count


@main.command()
@click.argument("data", required=False, type=click.Path(dir_okay=False))
@demo_option
@key_option
@time_column_option
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
@click.option("--clip-norm", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Clip the global gradient norm (0 disables).")
@click.option("--clip-value", type=click.FloatRange(min=0, min_open=True), help="Clip each gradient entry to +-VALUE.")
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
@click.option("--resume", is_flag=True, help="Continue training the checkpoint at --output with its own settings.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Save the training curves to this PNG (needs matplotlib).")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@json_flag
def train(data, demo, key, time_column, inputs, targets, horizon, streams, val_fraction, fill, difference, cell, hidden,
          layers, nonlinearity, init, forget_bias, k1, k2, full_bptt, memory, clip_norm, clip_value, optimizer,
          lr, schedule, step_size, warmup, epochs, patience, seed, dtype, output, resume, plot, quiet,
          as_json):
    """Train a model on DATA (CSV, also .gz/.bz2/.zst, Parquet, Feather, .npy or .npz) or a
    --demo series: next-step forecasting,
    z-score normalised, cut into --streams parallel streams, with a validation tail.

    \b
    Examples:
      bptt train --demo mackey-glass --hidden 32 --epochs 30
      bptt train prices.csv --targets close --inputs close,volume --k1 100 --k2 200
    """
    check_writable(output, "'-o' / '--output'")
    check_writable(plot, "'--plot'")
    if plot:
        engine.require_matplotlib(plot)  # before any work, so nothing is lost later
    if full_bptt and k2 is not None:
        raise click.UsageError("--k2 truncates backpropagation; it cannot be combined with --full-bptt")
    if cell != "rnn" and nonlinearity != "tanh":
        raise click.UsageError("--nonlinearity applies to --cell rnn only")
    source = data_source(data, demo, key, time_column)
    model_options = dict(cell=cell, hidden_size=hidden, num_layers=layers, dtype=dtype, init=init,
                         forget_bias=forget_bias, seed=seed)
    if cell == "rnn":
        model_options["nonlinearity"] = nonlinearity
    trainer_options = dict(loss="mse", optimizer=optimizer, lr=lr, k1=None if full_bptt else k1,
                           k2=None if full_bptt else k2, clip_norm=clip_norm or None, clip_value=clip_value,
                           memory=memory)
    schedule_options = dict(name=schedule, warmup_steps=warmup)
    if schedule == "step":
        schedule_options["step_size"] = step_size
    data_options = dict(inputs=inputs, targets=targets, horizon=horizon, streams=streams,
                        val_fraction=val_fraction, fill=fill, difference=difference)
    progress = None if quiet or as_json else engine.Progress()

    completed = []  # epochs finished (and checkpointed) in this run

    def on_epoch(record):
        completed.append(record["epoch"])
        if as_json:
            click.echo(json.dumps(record))
        elif progress is not None:
            progress.on_epoch(record)

    started = time.perf_counter()
    try:
        model, trainer, _ = engine.train_series(
            source, output, model_options, trainer_options, data_options, schedule_options,
            epochs=epochs, patience=patience, resume=resume, on_start=progress and progress.on_start,
            on_update=progress and progress.on_update, on_epoch=on_epoch)
    except KeyboardInterrupt:
        saved = (f"{output} holds epoch {completed[-1]}; continue with --resume -o {output}"
                 if completed else "no epoch was completed in this run, nothing was saved")
        click.echo(f"\nInterrupted: {saved}.", err=True)
        sys.exit(130)
    if plot:
        engine.plot_training(trainer.history, plot)
    if not quiet:
        _summary(trainer, output, time.perf_counter() - started, plot, restored=patience is not None)


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
@click.argument("data", required=False, type=click.Path(dir_okay=False))
@demo_option
@key_option
@time_column_option
@click.option("--steps", default=1, show_default=True, type=click.IntRange(min=1), help="Steps to forecast past the end.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the CSV here [default: stdout].")
@click.option("--plot", type=click.Path(dir_okay=False), help="Save forecast against the observed tail to this PNG.")
def forecast(checkpoint, data, demo, key, time_column, steps, output, plot):
    """Forecast --steps steps past the end of DATA with the model in CHECKPOINT.

    The state warms up over the whole of DATA; the forecasts are fed back as inputs
    beyond the first step. Writes CSV (one column per target) in original units, the
    first column "time" (the next time stamps) when DATA has a regular time column,
    else "step"."""
    check_writable(output, "'-o' / '--output'")
    check_writable(plot, "'--plot'")
    if plot:
        engine.require_matplotlib(plot)
    model, metadata = engine.load_for_inference(checkpoint)
    source = data_source(data, demo, key, time_column)
    forecasts = engine.forecast_series(model, metadata, source, steps)
    stamps = forecast_times(metadata, source, steps)
    names = metadata["data"]["targets"]
    stream = open(output, "w", newline="") if output else sys.stdout
    try:
        writer = csv.writer(stream)
        if stamps is None:
            writer.writerow(["step"] + names)
            labels = range(1, steps + 1)
        else:
            writer.writerow(["time"] + names)
            labels = _time_labels(stamps)
        for label, row in zip(labels, forecasts):
            writer.writerow([label] + [f"{value:.10g}" for value in row])
    finally:
        if output:
            stream.close()
    if plot:
        observed = engine.data.select_columns(engine.data.as_series(source), names).values
        engine.plot_forecast(observed, forecasts, names, plot)


def _time_labels(stamps):
    """ISO 8601 text of datetime64 stamps, without the zero parts: 2024-03-01, 2024-03-01T06:00."""
    text = np.datetime_as_string(stamps, unit="s")
    if all(label.endswith("T00:00:00") for label in text):
        return [label[:10] for label in text]
    return [label[:-3] if label.endswith(":00") else label for label in text]


def _start_option(value):
    """--from: a row number, or a date/time (checked against the series later)."""
    return None if value is None else int(value) if value.isdigit() else value


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("data", required=False, type=click.Path(dir_okay=False))
@demo_option
@key_option
@time_column_option
@click.option("--from", "start", metavar="DATE|ROW", callback=lambda ctx, param, value: _start_option(value),
              help="Score only from this row (0-based) or date on; the state warms up on the rows before.")
@json_flag
def evaluate(checkpoint, data, demo, key, time_column, start, as_json):
    """Score the model in CHECKPOINT on DATA: MSE, MAE and RMSE of its forecasts in
    original units, beside the persistence baseline (tomorrow = today) on the same targets."""
    model, metadata = engine.load_for_inference(checkpoint)
    metrics = engine.evaluate_series(model, metadata, data_source(data, demo, key, time_column), start=start)
    if as_json:
        click.echo(json.dumps(metrics))
        return
    click.echo(f"{'':10}{'model':>14}{'persistence':>14}")
    for name in ("mse", "mae", "rmse"):
        click.echo(f"{name.upper():10}{metrics[name]:>14.6g}{metrics['baseline_' + name]:>14.6g}")
    ratio = metrics["mse"] / metrics["baseline_mse"] if metrics["baseline_mse"] else float("inf")
    click.echo(f"{metrics['steps']} steps scored; model MSE is {ratio:.3f} x the baseline's.")


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@json_flag
def info(checkpoint, as_json):
    """Show what CHECKPOINT holds: model, training state and data normalisation."""
    metadata = engine.read_metadata(checkpoint)
    if as_json:
        click.echo(json.dumps(metadata))
        return
    model, trainer_meta, data = metadata["model"], metadata["trainer"], metadata["user"].get("data")
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
        if trainer_meta["best"]:
            click.echo(f"          best loss {trainer_meta['best']['loss']:.5g} at epoch {trainer_meta['best']['epoch']}")
    if data is not None:
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
              help="A configuration of DESIGN.md section 10 (repeatable) [default: all; --quick: a few].")
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
