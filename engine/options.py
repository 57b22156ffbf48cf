"""Every option of a training job, defined once: `bptt train`'s options (cli.py builds its
click options from OPTIONS), the keyword options of engine.train_series, and the settings
of a sweep (engine/sweep/space.py parses `--space NAME=SPEC` against them).

An Option has its Python name (the CLI flag with underscores), a kind, a default, a range
or choices, a help text and its flag. `Option.parse` turns a Python value or a command-line
string into a checked value; `train_arguments` translates a complete set of option values
into what Model, Trainer, the schedule and data preparation take (the one place that
knows, for the CLI, the library and the sweep alike).
"""
from dataclasses import dataclass
import numbers

import numpy as np

from engine.data import FILL_METHODS
from engine.initializers import INITS
from engine.model import CELLS
from engine.optim import OPTIMIZERS
from engine.panel import SCALES
from engine.online import GRADIENTS
from engine.trainer import ON_DIVERGENCE

SCHEDULES = ("constant", "step", "cosine")
_TRUE, _FALSE = ("true", "1", "yes", "y", "on"), ("false", "0", "no", "n", "off")
_UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30}


@dataclass(frozen=True)
class Option:
    """One training option. kind: "int" / "float" (within minimum..maximum, an open end
    excluded), "choice" (one of `choices`), "flag" (a bool), "switch" (a bool, or None:
    decided from the data; --NAME / --no-NAME on the command line), "text", "time" (a column name,
    or False / "none" for no time column), "columns" (a comma-separated string or a list of
    names / 0-based indices) or "memory" ("sqrt" or a byte count, "200M" on the command
    line). default None: unset unless given."""
    name: str
    kind: str
    default: object = None
    help: str = ""
    choices: tuple = None
    minimum: float = None
    maximum: float = None
    min_open: bool = False
    max_open: bool = False
    metavar: str = None

    @property
    def flag(self):
        """The command-line spelling: --clip-norm."""
        return "--" + self.name.replace("_", "-")

    def parse(self, value):
        """`value` (a Python value, or the text given on the command line) checked and
        converted; ValueError naming the option when it is not valid for it."""
        if value is None and self.default is None and self.kind != "flag":
            return None
        parse = getattr(self, f"_parse_{self.kind}")
        try:
            return parse(value)
        except (TypeError, ValueError, OverflowError) as error:
            raise ValueError(f"{self.name} ({self.flag}): {error}") from None

    def _parse_int(self, value):
        if isinstance(value, str):
            value = _number(int, value, "integer")
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"expected an integer; got {value!r}")
        return self._in_range(int(value))

    def _parse_float(self, value):
        if isinstance(value, str):
            value = _number(float, value, "float")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"expected a number; got {value!r}")
        return self._in_range(float(value))

    def _in_range(self, value):
        if self.minimum is None and self.maximum is None:
            return value  # finiteness and the like: the model and trainer check their own
        low = self.minimum is None or (value > self.minimum if self.min_open else value >= self.minimum)
        high = self.maximum is None or (value < self.maximum if self.max_open else value <= self.maximum)
        if not (low and high) or value != value:
            raise ValueError(f"{value!r} is not in the range {self.range_text()}")
        return value

    def range_text(self):
        """The valid range as text: x>=1, 0<=x<1."""
        low = "" if self.minimum is None else f"{self.minimum:g}{'<' if self.min_open else '<='}"
        high = "" if self.maximum is None else f"{'<' if self.max_open else '<='}{self.maximum:g}"
        return low + "x" + high if high else f"x{'>' if self.min_open else '>='}{self.minimum:g}"

    def _parse_choice(self, value):
        if value not in self.choices:
            raise ValueError(f"expected one of {', '.join(map(str, self.choices))}; got {value!r}")
        return value

    def _parse_switch(self, value):   # a flag that may be left unset (None: decided from the data)
        return None if value is None or value == "auto" else self._parse_flag(value)

    def _parse_flag(self, value):
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"expected true or false; got {value!r}")
        return bool(value)

    def _parse_text(self, value):
        if not isinstance(value, str):
            raise TypeError(f"expected text; got {value!r}")
        return value

    def _parse_time(self, value):
        return False if value is False or value == "none" else self._parse_text(value)

    def _parse_columns(self, value):
        if isinstance(value, str):
            return value
        if isinstance(value, (list, tuple)) and value and all(
                isinstance(item, str) or (isinstance(item, numbers.Integral) and not isinstance(item, bool))
                for item in value):
            return list(value)
        raise TypeError(f"expected column names or 0-based indices, a list or comma separated; got {value!r}")

    def _parse_memory(self, value):
        return parse_memory(value)

    def _parse_quantiles(self, value):
        return parse_quantiles(value)


def _number(kind, text, name):
    """int or float of a command-line text, in click's words when it is not one."""
    try:
        return kind(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a valid {name}") from None


def parse_quantiles(value):
    """`quantiles`: levels in (0, 1), strictly increasing ("0.1,0.5,0.9" or a list) -> list of floats."""
    tokens = [token.strip() for token in value.split(",")] if isinstance(value, str) else value
    if not isinstance(tokens, (list, tuple)) or not tokens:
        raise TypeError(f"expected quantile levels such as 0.1,0.5,0.9; got {value!r}")
    levels = [_number(float, token, "float") if isinstance(token, str) else token for token in tokens]
    if any(isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1 for level in levels):
        raise ValueError(f"each quantile level must be a number in (0, 1); got {value!r}")
    if any(b <= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"quantile levels must be increasing, each once; got {value!r}")
    return [float(level) for level in levels]


def parse_memory(value):
    """`memory`: None, "sqrt", or a byte count (an int, or text with an optional K/M/G
    suffix: "200M") -> Trainer(memory=...)."""
    if value is None or value == "sqrt":
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        count = int(value)
    elif isinstance(value, str):
        number, unit = (value[:-1], value[-1:].upper()) if value[-1:].upper() in ("K", "M", "G") else (value, "")
        try:
            count = int(float(number) * _UNITS[unit])  # inf and 1e400 overflow, nan is a ValueError
        except (ValueError, OverflowError):
            raise ValueError(f"expected 'sqrt' or a finite byte count such as 200M; got {value!r}") from None
    else:
        raise TypeError(f"expected 'sqrt' or a byte count such as 200M; got {value!r}")
    if count < 1:
        raise ValueError(f"must be positive; got {value!r}")
    return count


OPTIONS = {option.name: option for option in (
    # reading the data
    Option("key", "text", metavar="NAME", help="The array of an .npz DATA file to use."),
    Option("time_column", "time", metavar="NAME",
           help="The column of dates/times, or 'none' [default: the first column that parses as dates]."),
    Option("id_column", "text", help="Long format: the column naming the series of each row (a panel); "
                                     "rows are sorted by --time-column per series."),
    Option("series_columns", "text", help="Wide format: one column per series, comma separated, or 'all'."),
    Option("scale", "choice", choices=SCALES,
           help="Panel z-score: per series or one for all [default: series with more than one series]."),
    # preparing it
    Option("inputs", "columns", help="Input columns by name or 0-based index, comma separated [default: the targets]."),
    Option("targets", "columns", help="Target columns by name or index, comma separated [default: every column that is not --known or "
                                      "--static]."),
    Option("horizon", "int", 1, "Forecast every step 1..H ahead from each time (a direct model: one output "
                                "block per step).", minimum=1),
    Option("known", "columns", help="Known inputs: columns also known for the future (planned promotions, prices, a "
                                    "weather forecast); the model reads their values at the steps it forecasts."),
    Option("calendar", "text", "auto", "Calendar features of the steps forecast, as sin/cos pairs from the time "
                                       "column: comma separated among minute, hour, weekday, monthday, dayofyear, "
                                       "weekofyear, month; 'auto': those suiting the frequency (hourly: hour, "
                                       "weekday; daily: weekday, dayofyear; weekly: weekofyear; monthly: month; "
                                       "none without dates); 'none'."),
    Option("lags", "text", "auto", "Seasonal lags of the targets as inputs, in steps (24,168), each at least "
                                   "--horizon; 'auto': from the frequency (a day within a day: hourly 24; daily 7; weekly 52; "
                                   "monthly 12; those a third of the shortest series holds); 'none'."),
    Option("static", "columns", help="Panels: columns holding one value per series (a region code, a capacity), "
                                     "given to the model at every step."),
    Option("streams", "int", help="Cut the series into this many contiguous parallel streams (the batch) [default: one "
                                  "per 2,000 training rows of all the series, 8 to 64; fewer for a short series, as "
                                  "many as it has --k1 steps for].", minimum=1),
    Option("val_fraction", "float", 0.1, "Hold out this final fraction of time for validation.",
           minimum=0, maximum=1, max_open=True),
    Option("fill", "choice", choices=FILL_METHODS,
           help="How to fill missing inputs [default: missing inputs are an error]."),
    Option("difference", "switch", help="Model the changes of the targets instead of their levels (--difference) or "
                                        "not (--no-difference) [default: changes for trending targets, those whose "
                                        "training values, cut in tenths, have means that rise or fall with time, in "
                                        "most series, and for a level that wanders under the season "
                                        "(docs/forecasting.md)]."),
    # the model
    Option("cell", "choice", "lstm", "Recurrent cell: lstm, gru, or rnn (Elman).", choices=CELLS),
    Option("hidden", "int", 64, "Hidden units per layer.", minimum=1),
    Option("layers", "int", 1, "Stacked recurrent layers.", minimum=1),
    Option("nonlinearity", "choice", "tanh", "Activation of --cell rnn.", choices=("tanh", "relu")),
    Option("init", "choice", "default", "default: PyTorch's uniform; xavier: Glorot; orthogonal / identity (IRNN): "
                                        "recurrent weights.", choices=INITS),
    Option("forget_bias", "float", 0.0, "LSTM forget-gate bias."),
    Option("bidirectional", "flag", False, "Bidirectional layers (a reverse direction over each whole sequence). "
                                           "Not for forecasting, which bptt train does: a reverse direction "
                                           "reads the future steps (refused; see docs/training.md)."),
    Option("dropout", "float", 0.0, "Training only: drop each unit of each layer's output but the top one's with "
                                    "this probability, a fresh draw per step (as torch.nn.LSTM's dropout).",
           minimum=0, maximum=1, max_open=True),
    Option("recurrent_dropout", "float", 0.0, "Training only: drop each unit of h(t-1) in the recurrent product "
                                              "with this probability, one mask per stream and update window "
                                              "(variational, as Keras' recurrent_dropout).",
           minimum=0, maximum=1, max_open=True),
    Option("zoneout", "float", 0.0, "Training only (lstm, gru): each unit keeps its previous value with this "
                                    "probability at each step; at inference the expectation, p h(t-1) + "
                                    "(1 - p) h(t).", minimum=0, maximum=1, max_open=True),
    Option("skip", "switch", help="A linear path from each step's inputs (lags, known inputs, calendar) to its "
                                  "outputs beside the recurrent layers, y = head(h) + V x, V trained with the rest "
                                  "and starting at zero (--skip), or none (--no-skip) [default: on where the data has "
                                  "known inputs (--known), else off; docs/forecasting.md]."),
    # truncated BPTT and threads
    Option("k1", "int", help="Truncated BPTT: one update every k1 steps [default: from the data: whole "
                             "periods of the shortest seasonal lag (--lags) nearest 50 steps (hourly 48, daily 49, "
                             "weekly 52), at most 200; 50 without lags; at most the training rows].",
           minimum=1),
    Option("k2", "int", help="Backpropagate through the last k2 >= k1 steps [default: k1].", minimum=1),
    Option("full_bptt", "flag", False, "No truncation: one update per epoch over each whole stream."),
    Option("gradient", "choice", "bptt",
           "How each update's gradient is computed: bptt (truncated backpropagation, --k1/--k2); rtrl (exact "
           "real-time recurrent learning: no window, every update reaches back through the whole stream; memory "
           "and time grow with state size x parameters, for small models); uoro (an unbiased rank-one estimate "
           "of rtrl's gradient at about a forward pass's cost). rtrl and uoro update every --k1 steps; the "
           "truncation, recomputation, --split and diagnostics options do not apply to them (--shards does: "
           "their streams in threads).", choices=GRADIENTS),
    Option("memory", "memory", help="Bound activation memory by recomputation: 'sqrt' (keep the state every "
                                    "~sqrt(window) steps) or a byte budget per thread such as 200M "
                                    "[default: store every step]."),
    Option("shards", "int", minimum=1,
           help="Run the streams as this many batch shards, one thread each [default: the thread plan's "
                "choice for this model and machine]. On a machine other work keeps busy, shards suffer "
                "less than --split."),
    Option("split", "int", minimum=1,
           help="Share every step of one shard among this many threads by blocks of hidden units "
                "(--hidden a multiple of it) [default: the thread plan's choice]."),
    # the loss
    Option("loss", "choice", "mse", "What the model forecasts: mse (a point forecast; intervals from its "
                                    "validation errors), gaussian (a mean and a scale per step), quantile "
                                    "(the levels of --quantiles).", choices=("mse", "gaussian", "quantile")),
    Option("quantiles", "quantiles", help="The quantile levels of --loss quantile, increasing in (0, 1) "
                                          "[default: 0.1,0.5,0.9]."),
    # the update
    Option("clip_norm", "float", 1.0, "Clip the global gradient norm (0 disables).", minimum=0),
    Option("clip_value", "float", help="Clip each gradient entry to +-VALUE.", minimum=0, min_open=True),
    Option("on_divergence", "choice", "raise", "On a non-finite loss or gradient: stop (raise) or drop that "
                                               "update and go on (skip).", choices=ON_DIVERGENCE),
    Option("optimizer", "choice", "adam", "The optimizer (PyTorch's update rules and defaults).",
           choices=tuple(sorted(OPTIMIZERS))),
    Option("lr", "float", 3e-3, "Learning rate.", minimum=0, min_open=True),
    Option("schedule", "choice", "constant", "Learning-rate schedule (step: x0.1 every --step-size updates; "
                                             "cosine: to 0 over the run).", choices=SCHEDULES),
    Option("step_size", "int", 1000, "Updates per step of --schedule step.", minimum=1),
    Option("warmup", "int", 0, "Linear warm-up updates.", minimum=0),
    # the run
    Option("epochs", "int", 20, "Epochs in all (with --resume: including those already done).", minimum=1),
    Option("patience", "int", help="Early stopping: epochs without improvement; restores the best.", minimum=1),
    Option("seed", "int", 0, "Seed of the initial parameters, of --gradient uoro's random signs and of the "
                             "dropout and zoneout masks (and of nothing else: the data order is fixed).",
           minimum=0),
    Option("dtype", "choice", "float32", "Floating-point type of the parameters and the computation.",
           choices=("float32", "float64")),
    Option("diagnostics", "flag", False,
           "Report the gradient flow every epoch: how far back the gradient reaches, the share of updates "
           "clipped and a verdict (healthy, exploding, vanishing), with advice (docs/training.md)."),
)}

# options that make the data a panel of series
PANEL_OPTIONS = ("id_column", "series_columns", "scale")
# the options of data preparation (engine.forecasting.prepare)
DATA_OPTION_NAMES = ("inputs", "targets", "horizon", "streams", "val_fraction", "fill", "difference", "known",
                     "calendar", "lags", "static")
DEFAULT_QUANTILES = (0.1, 0.5, 0.9)
BIDIRECTIONAL_REFUSED = (
    "--bidirectional does not apply to forecasting, the task of bptt train and sweeps: the reverse direction "
    "reads every later step, so each forecast would see the future it forecasts; bidirectional layers are for "
    "whole-sequence tasks such as classification, in the library (engine.Model(bidirectional=True), "
    "docs/training.md)")
# trainer_options' k1 when --k1 is not given: engine.train_series derives it from the data
# (engine.forecasting.prepare.derived_k1) before the Trainer is made
K1_FROM_DATA = "data"
# train_series's arguments (model, trainer, schedule and data options, by their names there)
# -> the options that set them: on resume only what was given is checked against the checkpoint
SET_BY = {
    "cell": ("cell",), "hidden_size": ("hidden",), "num_layers": ("layers",), "nonlinearity": ("nonlinearity",),
    "init": ("init",), "forget_bias": ("forget_bias",), "seed": ("seed",), "dtype": ("dtype",),
    "bidirectional": ("bidirectional",),
    "dropout": ("dropout",), "recurrent_dropout": ("recurrent_dropout",), "zoneout": ("zoneout",), "skip": ("skip",),
    "k1": ("k1", "full_bptt"), "k2": ("k2", "full_bptt"), "clip_norm": ("clip_norm",),
    "clip_value": ("clip_value",), "optimizer": ("optimizer",), "lr": ("lr",), "memory": ("memory",),
    "shards": ("shards",), "split": ("split",), "gradient": ("gradient",), "on_divergence": ("on_divergence",),
    "diagnostics": ("diagnostics",), "name": ("schedule",), "schedule": ("schedule",), "warmup_steps": ("warmup",),
    "step_size": ("step_size",),
    "loss": ("loss",), "quantiles": ("quantiles", "loss"),
    **{name: (name,) for name in DATA_OPTION_NAMES + ("time_column",) + PANEL_OPTIONS}}


def defaults():
    """{name: default} of every option."""
    return {name: option.default for name, option in OPTIONS.items()}


def check_names(names):
    """TypeError for a name that is not an option, naming the valid ones."""
    unknown = [name for name in names if name not in OPTIONS]
    if unknown:
        raise TypeError(f"unknown training option {unknown[0]!r}; the options are {', '.join(OPTIONS)}")


def parse_options(given):
    """Every option's value: the defaults, then `given` ({name: value}) checked by each option."""
    check_names(given)
    return {**defaults(), **{name: OPTIONS[name].parse(value) for name, value in given.items()}}


def train_arguments(values):
    """The arguments of a training run for a complete dict of option values (parse_options):
    {"model_options": Model's keywords, "trainer_options": Trainer's, "schedule":
    engine.schedules.make_schedule's, "data_options": data preparation's, "epochs",
    "patience", "key", "time_column"}. Bad combinations raise ValueError."""
    o = values
    if o["full_bptt"] and o["k2"] is not None:
        raise ValueError("--k2 truncates backpropagation; it cannot be combined with --full-bptt")
    if o["cell"] != "rnn" and o["nonlinearity"] != "tanh":
        raise ValueError("--nonlinearity applies to --cell rnn only")
    if o["bidirectional"]:
        raise ValueError(BIDIRECTIONAL_REFUSED)
    model_options = dict(cell=o["cell"], hidden_size=o["hidden"], num_layers=o["layers"], dtype=o["dtype"],
                         init=o["init"], forget_bias=o["forget_bias"], seed=o["seed"], dropout=o["dropout"],
                         recurrent_dropout=o["recurrent_dropout"], zoneout=o["zoneout"],
                         skip=o["skip"])  # None: from the data (engine.pipeline)
    if o["cell"] == "rnn":
        model_options["nonlinearity"] = o["nonlinearity"]
    if o["quantiles"] is not None and o["loss"] != "quantile":
        raise ValueError("--quantiles applies to --loss quantile only")
    k1 = None if o["full_bptt"] else K1_FROM_DATA if o["k1"] is None else o["k1"]
    trainer_options = dict(loss=o["loss"], optimizer=o["optimizer"], lr=o["lr"], k1=k1,
                           k2=None if o["full_bptt"] else o["k2"], clip_norm=o["clip_norm"] or None,
                           clip_value=o["clip_value"], memory=o["memory"], on_divergence=o["on_divergence"],
                           diagnostics=o["diagnostics"], shards=o["shards"], split=o["split"], gradient=o["gradient"],
                           seed=o["seed"])
    if o["loss"] == "quantile":
        trainer_options["quantiles"] = list(o["quantiles"] or DEFAULT_QUANTILES)
    schedule = dict(name=o["schedule"], warmup_steps=o["warmup"])
    if o["schedule"] == "step":
        schedule["step_size"] = o["step_size"]
    data_options = dict(**{name: o[name] for name in DATA_OPTION_NAMES},
                        **{name: o[name] for name in PANEL_OPTIONS if o[name] is not None})
    return dict(model_options=model_options, trainer_options=trainer_options, schedule=schedule,
                data_options=data_options, epochs=o["epochs"], patience=o["patience"], key=o["key"],
                time_column=o["time_column"])


def given_only(arguments, given):
    """`arguments` (train_arguments) reduced to what the options named in `given` set: a
    resumed run checks only those against its checkpoint."""
    given = set(given)
    reduced = dict(arguments)
    for group in ("model_options", "trainer_options", "schedule", "data_options"):
        reduced[group] = {name: value for name, value in arguments[group].items()
                          if given & set(SET_BY.get(name, ()))}
    return reduced
