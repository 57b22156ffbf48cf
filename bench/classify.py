"""Entry point `python -m bench.classify`: sequence classification on a real, public data
set (JapaneseVowels, read from the files inside the sktime wheel: bench/classify_data.py),
to measure what regularisation and bidirectional layers change (docs/training.md,
Regularisation on a real data set).

Protocol. The official train/test split. With --validation S (default 0.2), a stratified
share S of the training utterances (drawn per seed) is held out; the model trains on the
rest, scaled by the rest's statistics. Every epoch, minibatches of --batch sequences in a
shuffled order, one full-BPTT update each (k1=None, loss cross_entropy, Adam, gradient
norm clipped to 1). After each epoch the validation and test accuracies are recorded; a
run's result is the test accuracy at the epoch of best validation accuracy (ties: lower
validation loss). The test set chooses nothing: its best epoch is printed only to show
overfitting (the best epoch against the last). With --validation 0 the model trains on
the whole training part for a fixed --epochs and the last epoch counts.

Grid: --cell, --hidden, --layers and --lr take comma-separated lists; every combination
runs over --seeds seeds (0..n-1: initialisation, validation split, order, masks), and the
configuration of best mean validation accuracy is chosen (needs --validation > 0).

Labels (--label): "last", the class at each sequence's last step (-1 elsewhere), predicted
from the last step's logits; "every", the class at every step of the sequence, predicted
from the mean over its steps of the log-probabilities (for bidirectional layers, whose
reverse half has seen only the last input at the last step).

--dropout, --recurrent-dropout, --zoneout and --bidirectional are passed to engine.Model
only when given (not 0 / not set), so the script also runs on an engine without them.
--dropout acts between stacked layers, so it needs --layers 2 or more.
Prints a table per configuration and the accuracy-against-epoch curve of the chosen one;
--json FILE writes everything (atomically).
"""
import argparse
import itertools
import statistics
import sys
import time

import numpy as np
from scipy.special import log_softmax

import engine
from bench.classify_data import LABELS, Scaler, data_directory, load, pack, package_version, validation_rows
from bench.gemm_rate import _cpu_name
from bench.report import write_json
from engine.files import OutputError, check_output

REGULARISATION = ("dropout", "recurrent_dropout", "zoneout")
CURVE_POINTS = 12  # epochs shown in the printed accuracy curve


class Settings:
    """One configuration: the model's and training's options."""

    def __init__(self, cell, hidden, layers, lr, epochs, batch, validation, label, regularisation):
        self.cell, self.hidden, self.layers, self.lr = cell, hidden, layers, lr
        self.epochs, self.batch, self.validation, self.label = epochs, batch, validation, label
        self.regularisation = regularisation  # {name: value}: only the options given

    def model(self, input_size, classes, seed):
        return engine.Model(self.cell, input_size, self.hidden, classes, num_layers=self.layers, seed=seed,
                            **self.regularisation)

    def as_dict(self):
        return dict(cell=self.cell, hidden=self.hidden, layers=self.layers, lr=self.lr, epochs=self.epochs,
                    batch=self.batch, validation=self.validation, label=self.label, **self.regularisation)


# --------------------------------------------------------------------------- one run

def predict(model, packed, label):
    """(scores (B, K) log-probabilities, predicted classes (B,)) of packed (x, y, resets,
    steps): the last step's, or the mean over each sequence's steps ("every")."""
    x, _, resets, steps = packed
    logits, _ = model.forward(x, resets=resets)
    log_p = log_softmax(logits.astype(np.float64), axis=-1)  # (T, B, K)
    if label == "last":
        scores = log_p[-1]
    else:
        scores = (log_p * steps[..., None]).sum(axis=0) / steps.sum(axis=0)[:, None]
    return scores, scores.argmax(axis=1)


def score(model, packed, classes, label):
    """(accuracy, loss): the share predicted right and the mean of -score of the true class."""
    scores, predicted = predict(model, packed, label)
    return float(np.mean(predicted == classes)), float(-np.mean(scores[np.arange(len(classes)), classes]))


def run(settings, train, test, classes, seed):
    """One seed's training: a record per epoch (train loss, seconds of training, validation
    and test accuracy and loss) and the epoch chosen by validation (the last without)."""
    fit_rows, held = validation_rows(train.classes, settings.validation, seed)
    scale = Scaler(train.subset(fit_rows).sequences)
    fitting = pack(scale(train.subset(fit_rows)), settings.label)
    validation = pack(scale(train.subset(held)), settings.label) if len(held) else None
    testing = pack(scale(test), settings.label)
    x, y, resets, _ = fitting
    model = settings.model(x.shape[2], classes, seed)
    trainer = engine.Trainer(model, loss="cross_entropy", optimizer="adam", lr=settings.lr, k1=None, seed=seed)
    order = np.random.default_rng(seed)
    epochs = []
    for epoch in range(1, settings.epochs + 1):
        started = time.perf_counter()
        losses, counts = [], []
        for rows in np.array_split(order.permutation(x.shape[1]), max(1, round(x.shape[1] / settings.batch))):
            trainer.fit(x[:, rows], y[:, rows], resets=resets[:, rows])
            losses.append(trainer.history.epochs[-1]["loss"])
            counts.append(int((y[:, rows] >= 0).sum()))
        record = {"epoch": epoch, "loss": float(np.average(losses, weights=counts)),
                  "seconds": time.perf_counter() - started}
        if validation is not None:
            record["val_accuracy"], record["val_loss"] = score(model, validation, train.classes[held],
                                                               settings.label)
        record["test_accuracy"], record["test_loss"] = score(model, testing, test.classes, settings.label)
        epochs.append(record)
    chosen = chosen_epoch(epochs)
    best_test = max(epochs, key=lambda record: record["test_accuracy"])
    return {"seed": seed, "fit": len(fit_rows), "validation": len(held), "chosen_epoch": chosen["epoch"],
            "test_accuracy": chosen["test_accuracy"], "val_accuracy": chosen.get("val_accuracy"),
            "val_loss": chosen.get("val_loss"), "last_test_accuracy": epochs[-1]["test_accuracy"],
            "best_test_epoch": best_test["epoch"], "best_test_accuracy": best_test["test_accuracy"],
            "epochs": epochs}


def chosen_epoch(epochs):
    """The record of best validation accuracy (ties: lowest validation loss, then the
    earliest); the last record when there is no validation."""
    if "val_accuracy" not in epochs[0]:
        return epochs[-1]
    return min(epochs, key=lambda record: (-record["val_accuracy"], record["val_loss"], record["epoch"]))


# ------------------------------------------------------------------- configurations

def summary(runs):
    """Means and spreads over a configuration's seeds."""
    def spread(key):
        values = [run[key] for run in runs]
        return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values), "max": max(values)}

    epochs = len(runs[0]["epochs"])
    curve = [{key: statistics.fmean(run["epochs"][e][key] for run in runs)
              for key in runs[0]["epochs"][e] if key not in ("epoch", "seconds")} | {"epoch": e + 1}
             for e in range(epochs)]
    result = {"test_accuracy": spread("test_accuracy"), "last_test_accuracy": spread("last_test_accuracy"),
              "best_test_accuracy": spread("best_test_accuracy"),
              "chosen_epochs": [run["chosen_epoch"] for run in runs],
              "best_test_epochs": [run["best_test_epoch"] for run in runs],
              "seconds_per_epoch": statistics.median(record["seconds"] for run in runs for record in run["epochs"]),
              "curve": curve}
    if runs[0]["val_accuracy"] is not None:
        result["val_accuracy"] = spread("val_accuracy")
        result["val_loss"] = statistics.fmean(run["val_loss"] for run in runs)
    return result


def grid(args):
    """Every Settings of the lists given."""
    regularisation = {name: getattr(args, name) for name in REGULARISATION if getattr(args, name)}
    if args.bidirectional:
        regularisation["bidirectional"] = True
    return [Settings(cell, hidden, layers, lr, args.epochs, args.batch, args.validation, args.label, regularisation)
            for cell, hidden, layers, lr in itertools.product(args.cell, args.hidden, args.layers, args.lr)]


def measure(configurations, seeds, echo=lambda line: None):
    """Every configuration over seeds 0..seeds-1; the chosen one (best mean validation
    accuracy, ties: lower mean validation loss; the only one without validation)."""
    train, test, names = load()
    results = []
    for settings in configurations:
        runs = []
        for seed in range(seeds):
            runs.append(run(settings, train, test, len(names), seed))
            echo(f"{_label(settings)} seed {seed}: test {runs[-1]['test_accuracy']:.4f} "
                 f"at epoch {runs[-1]['chosen_epoch']}")
        results.append({"name": _label(settings), "settings": settings.as_dict(), **summary(runs), "runs": runs})
    chosen = (0 if len(results) == 1 else
              min(range(len(results)), key=lambda i: (-results[i]["val_accuracy"]["mean"], results[i]["val_loss"])))
    return {"date": time.strftime("%Y-%m-%d"), "machine": _cpu_name(), "dataset": "JapaneseVowels",
            "package": f"sktime {package_version()}", "train": len(train), "test": len(test), "classes": len(names),
            "seeds": seeds, "configurations": results, "chosen": chosen}


def _label(settings):
    extra = "".join(f", {name} {value}" for name, value in settings.regularisation.items())
    return f"{settings.cell} H={settings.hidden} L={settings.layers} lr={settings.lr:g}{extra}"


# ------------------------------------------------------------------------- printing

def markdown(result):
    """One row per configuration; the chosen one marked *."""
    head = ("| | configuration | val acc | test acc (chosen epoch) | sd | min-max | epochs chosen | "
            "test acc, last epoch | best test acc (hindsight) at epochs | s/epoch |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for i, config in enumerate(result["configurations"]):
        test, last, best = config["test_accuracy"], config["last_test_accuracy"], config["best_test_accuracy"]
        val = f"{config['val_accuracy']['mean']:.4f}" if "val_accuracy" in config else "-"
        lines.append(f"| {'*' if i == result['chosen'] else ''} | {config['name']} | {val} | {test['mean']:.4f} | "
                     f"{test['sd']:.4f} | {test['min']:.4f}-{test['max']:.4f} | "
                     f"{','.join(map(str, config['chosen_epochs']))} | {last['mean']:.4f} ± {last['sd']:.4f} | "
                     f"{best['mean']:.4f} at {','.join(map(str, config['best_test_epochs']))} | "
                     f"{config['seconds_per_epoch']:.3f} |")
    return "\n".join(lines)


def curve_table(config):
    """The chosen configuration's mean accuracies against the epoch (about CURVE_POINTS rows)."""
    curve = config["curve"]
    every = max(1, len(curve) // CURVE_POINTS)
    shown = [point for point in curve if point["epoch"] % every == 0 or point["epoch"] == 1]
    validated = "val_accuracy" in curve[0]
    lines = ["| epoch | train loss | " + ("val acc | " if validated else "") + "test acc |",
             "|---|---|" + ("---|" if validated else "") + "---|"]
    for point in shown:
        val = f"{point['val_accuracy']:.4f} | " if validated else ""
        lines.append(f"| {point['epoch']} | {point['loss']:.4f} | {val}{point['test_accuracy']:.4f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ CLI

class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"Error: {message}\n")  # one line, exit status 2, before any work


def _list(kind):
    def parse(text):
        try:
            values = [kind(item) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind.__name__}") from None
        if not values:
            raise argparse.ArgumentTypeError("the list is empty")
        return values
    return parse


def parse(argv=None):
    parser = Parser(prog="python -m bench.classify", description=__doc__.split("\n")[0])
    parser.add_argument("--cell", type=_list(str), default=["lstm"], help="cells, comma-separated [lstm]")
    parser.add_argument("--hidden", type=_list(int), default=[64], help="hidden sizes [64]")
    parser.add_argument("--layers", type=_list(int), default=[1], help="layer counts [1]")
    parser.add_argument("--lr", type=_list(float), default=[3e-3], help="Adam learning rates [0.003]")
    parser.add_argument("--epochs", type=int, default=60, help="epochs per run [60]")
    parser.add_argument("--batch", type=int, default=32, help="sequences per update [32]")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..n-1 per configuration [5]")
    parser.add_argument("--validation", type=float, default=0.2,
                        help="share of each class held out of the training part to choose the epoch "
                             "and configuration; 0: train on all of it, the last epoch counts [0.2]")
    parser.add_argument("--label", choices=LABELS, default="last", help="targets at the last step or every step")
    parser.add_argument("--dropout", type=float, default=0.0, help="engine.Model(dropout=) [not passed]")
    parser.add_argument("--recurrent-dropout", type=float, default=0.0,
                        help="engine.Model(recurrent_dropout=) [not passed]")
    parser.add_argument("--zoneout", type=float, default=0.0, help="engine.Model(zoneout=) [not passed]")
    parser.add_argument("--bidirectional", action="store_true", help="engine.Model(bidirectional=True)")
    parser.add_argument("--json", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    try:
        check_arguments(args)
    except (ValueError, TypeError, OutputError, ImportError) as error:
        parser.error(str(error))
    return args


def check_arguments(args):
    """Everything that can be refused, before any training."""
    for name in ("epochs", "batch", "seeds"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1; got {getattr(args, name)}")
    if any(lr <= 0 for lr in args.lr):
        raise ValueError(f"--lr must be positive; got {args.lr}")
    if not 0 <= args.validation < 1:
        raise ValueError(f"--validation must be in [0, 1); got {args.validation}")
    for name in REGULARISATION:
        if not 0 <= getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1); got {getattr(args, name)}")
    if args.dropout and min(args.layers) < 2:  # engine.Model would accept it and change nothing
        raise ValueError("--dropout acts between stacked layers (as torch's): with --layers 1 it has nothing "
                         "to act on; give --layers 2 or more")
    configurations = grid(args)
    if len(configurations) > 1 and args.validation == 0:
        raise ValueError("choosing among several configurations needs --validation > 0 (never the test set)")
    for settings in configurations:  # each model once, tiny: its options are checked by engine.Model
        try:
            settings.model(1, 2, seed=0)
        except TypeError as error:
            raise TypeError(f"this engine's Model refuses {_label(settings)}: {error}") from None
    if args.json:
        check_output(args.json, what="JSON output")
    data_directory()


def main(argv=None):
    args = parse(argv)
    result = measure(grid(args), args.seeds, echo=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"JapaneseVowels ({result['package']}): {result['train']} training, {result['test']} test sequences, "
          f"{result['classes']} classes; {result['seeds']} seeds")
    print(markdown(result))
    print()
    print(curve_table(result["configurations"][result["chosen"]]))
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
