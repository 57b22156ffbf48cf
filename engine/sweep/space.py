"""The search space of a sweep, in `bptt train`'s vocabulary.

A sweep's settings are the training options of engine/options.py (`bptt train`'s): their
names, kinds, defaults and their translation into training arguments are read from there,
so an option added to train is a sweep setting too, with the same validation.
`--space NAME=SPEC` makes one of them a dimension of the search:
    32,64,128           a list of values (any option, choices and flags included)
    1e-4..1e-1:log      a range, sampled on a log scale (numeric options)
    1..4:int            a range of integers (an integer option's range is one anyway)
Every value and range end goes through the option's own parser, so `hidden=0,8` fails
as `bptt train --hidden 0` does.
"""
from dataclasses import dataclass

import numpy as np

from engine import options
from engine.sweep.values import number_problem, range_problem

# training options that are not settings of a sweep: its own data source replaces them
# (the sweep has its own --key and --time-column; it runs trials side by side, one thread each)
NOT_SETTINGS = ("key", "time_column", "shards", "split")
# settings that define the task or its validation data: sweeping them would compare
# losses on different data. The seed is swept by --seeds, epochs is the sweep's budget.
NOT_SWEPT = ("inputs", "targets", "horizon", "val_fraction", "fill", "seed", "epochs",
             "id_column", "series_columns", "known", "static", "loss", "quantiles")
# data settings that keep the validation data but change the units of the prepared targets
# (changes instead of levels; one scaling for all series instead of one each): swept only
# when a metric in original units ranks the trials (engine/sweep/__init__.py)
UNIT_CHANGING = ("difference", "scale")
# the sweepable settings that change the prepared data (engine/sweep/trial.py's Prepared):
# calendar and lags change the inputs only (a value with several features or lags joins
# them with "+": --space lags=none,24,24+168)
DATA_SETTINGS = ("streams", "calendar", "lags") + UNIT_CHANGING


class SweepError(ValueError):
    """A bad sweep specification (the CLI exits with status 2)."""


@dataclass(frozen=True)
class Dimension:
    """One swept setting: `name` is train's parameter name (clip_norm), `option` its
    spelling on the command line (clip-norm). Either `choices` or a range low..high
    (integer and/or log scale)."""
    name: str
    option: str
    choices: tuple = None
    low: float = None
    high: float = None
    integer: bool = False
    log: bool = False

    def distribution(self):
        """The Optuna distribution of this dimension."""
        import optuna

        if self.choices is not None:
            return optuna.distributions.CategoricalDistribution(self.choices)
        if self.integer:
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log)
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)

    def grid(self):
        """The values a grid search visits: the list, or every integer of an integer range."""
        if self.choices is not None:
            return list(self.choices)
        if self.integer and not self.log:
            return list(range(int(self.low), int(self.high) + 1))
        raise SweepError(f"--sampler grid needs lists or integer ranges; --space {self.option} is a "
                         f"{'log ' if self.log else ''}range: give its values as a list")

    def spec(self):
        """The SPEC string that parses back to this dimension (stored with a sweep)."""
        if self.choices is not None:
            return ",".join(str(value) for value in self.choices)
        modifiers = [word for word, on in (("int", self.integer), ("log", self.log)) if on]
        return f"{self.low}..{self.high}" + "".join(f":{word}" for word in modifiers)


def train_arguments(settings):
    """The training arguments (engine.options.train_arguments) for the sweep settings (the
    options that are not settings at their defaults); a bad combination is a SweepError."""
    try:
        return options.train_arguments({**options.defaults(), **settings})
    except ValueError as error:
        raise SweepError(str(error)) from None


def settings_parameters():
    """{name: engine.options.Option} of every training option that is a sweep setting."""
    return {name: option for name, option in options.OPTIONS.items() if name not in NOT_SETTINGS}


def default_settings():
    """{name: default} of every sweep setting, as `bptt train` would use them."""
    return {name: option.default for name, option in settings_parameters().items()}


def parse_space(space):
    """{name or option spelling: SPEC string or list of values} -> [Dimension]."""
    if not isinstance(space, dict):
        raise SweepError(f"space must be a dict of setting name -> SPEC or list; got {type(space).__name__}")
    if not space:
        raise SweepError("the space names no setting to sweep: give at least one, e.g. --space lr=1e-4..1e-1:log")
    return [parse_dimension(name, spec) for name, spec in space.items()]


def parse_assignments(texts):
    """The CLI's repeated --space NAME=SPEC -> {name: SPEC}; a setting given twice is an
    error (a dict would silently keep the last)."""
    space, seen = {}, {}
    for text in texts:
        name, spec = parse_assignment(text)
        key = name.lstrip("-").replace("-", "_")
        if key in seen:
            raise SweepError(f"--space {seen[key]} and --space {text}: the setting is given twice; "
                             "give all its values in one --space")
        seen[key] = text
        space[name] = spec
    return space


def parse_assignment(text):
    """'NAME=SPEC' (the CLI's --space) -> (name, spec)."""
    name, equals, spec = text.partition("=")
    if not equals or not name.strip() or not spec.strip():
        raise SweepError(f"--space {text}: expected NAME=SPEC, e.g. lr=1e-4..1e-1:log or hidden=32,64,128")
    return name.strip(), spec.strip()


def parse_dimension(name, spec):
    """One dimension from a train option name and a SPEC (string or list of values)."""
    param = _parameter(name)
    option = param.flag[2:]
    if not isinstance(spec, (str, list, tuple, range, np.ndarray)):
        raise SweepError(f"--space {option}: expected a SPEC string (32,64 or 1e-4..1e-1:log) or a list of "
                         f"values; got {type(spec).__name__} {spec!r}")
    where = f"--space {option}={spec if isinstance(spec, str) else ','.join(map(str, spec))}"
    if param.name in NOT_SWEPT:
        why = ("sweep initialisations with --seeds" if param.name == "seed" else
               "--epochs is the budget of every trial" if param.name == "epochs" else
               "it changes the task or the validation data, so the losses would not compare")
        raise SweepError(f"{where}: --{option} cannot be swept ({why}); give it as a fixed setting")
    if isinstance(spec, str) and ".." in spec:
        return _range(param, option, spec, where)
    values = spec.split(",") if isinstance(spec, str) else list(spec)
    if not values or any(isinstance(value, str) and not value.strip() for value in values):
        raise SweepError(f"{where}: an empty value in the list")
    choices = tuple(dict.fromkeys(_checked(param, value.strip() if isinstance(value, str) else value, where)
                                  for value in values))
    return Dimension(param.name, option, choices=choices)


def _range(param, option, spec, where):
    bounds, *modifiers = spec.split(":")
    unknown = set(modifiers) - {"int", "log"}
    if unknown:
        raise SweepError(f"{where}: unknown range modifier {sorted(unknown)[0]!r} (use :log and/or :int)")
    if param.kind not in ("int", "float"):
        raise SweepError(f"{where}: --{option} takes {_what(param)}, not a number range; give a list")
    low_text, _, high_text = bounds.partition("..")
    low, high = (_checked(param, text.strip(), where) for text in (low_text, high_text))
    integer = "int" in modifiers or param.kind == "int"
    if integer and (low != int(low) or high != int(high)):
        raise SweepError(f"{where}: an :int range needs whole-number ends")
    if not low < high:
        raise SweepError(f"{where}: the range is empty (its low end must be below its high end)")
    log = "log" in modifiers
    if log and low <= 0:
        raise SweepError(f"{where}: a :log range needs a positive low end")
    problem = range_problem(low, high, log)
    if problem:
        raise SweepError(f"{where}: {problem}")
    if integer:
        return Dimension(param.name, option, low=int(low), high=int(high), integer=True, log=log)
    return Dimension(param.name, option, low=float(low), high=float(high), log=log)


def _parameter(name):
    parameters = settings_parameters()
    key = str(name).strip().lstrip("-").replace("-", "_")
    if key in parameters:
        return parameters[key]
    known = ", ".join(sorted(param.flag[2:] for param in parameters.values() if param.name not in NOT_SWEPT))
    raise SweepError(f"--space {name}: unknown setting; a sweep can vary any bptt train option: {known}")


def _convert(param, value, where):
    """A value through the option's own parser, as `bptt train` checks it."""
    try:
        return param.parse(value)
    except ValueError as error:
        raise SweepError(f"{where}: {error}") from None


def _checked(param, value, where):
    """A value through the option's parser (which refuses True for a number and 16.7 for an
    integer), refused too where the result is no number to train with (NaN, inf, an
    integer beyond 2**53)."""
    value = _convert(param, value, where)
    problem = number_problem(param.kind, value)
    if problem:
        raise SweepError(f"{where}: {problem}")
    return value


def check_setting(name, value):
    """A fixed setting given to engine.sweep.run, checked as a --space value is."""
    param = settings_parameters()[name]
    return _checked(param, value, f"{param.flag} {value!r}")


def _what(param):
    if param.kind == "choice":
        return "one of " + ", ".join(map(str, param.choices))
    return "a flag (true/false)" if param.kind == "flag" else {"columns": "column names", "memory": "a size"}.get(
        param.kind, "text")
