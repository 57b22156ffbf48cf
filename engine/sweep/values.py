"""Checks of a sweep's values that an option's own parser (engine.options) does not make:
numbers that parse but cannot be searched or trained (NaN, infinities, integers Optuna
cannot sample exactly, a range whose width overflows). Each check returns the problem as
text, or None; the caller names the --space or setting it came from. `kind` is the
option's kind in engine.options ("int", "float", ...)."""
import math
import numbers


LARGEST_INTEGER = 2 ** 53  # integers beyond this are not exact as floats, which Optuna samples in


def number_problem(kind, value):
    """A converted value of a numeric option that is no number to train with."""
    if kind == "float" and isinstance(value, numbers.Real) and not math.isfinite(value):
        return f"{value} is not a finite number"
    if kind == "int" and isinstance(value, numbers.Integral) and abs(value) > LARGEST_INTEGER:
        return f"{value} is too large (at most 2**53)"
    return None


def range_problem(low, high, log):
    """A float range low..high whose ends are finite but whose width is not: Optuna's
    uniform sampling would draw infinities (a log range samples log(low)..log(high))."""
    if not log and isinstance(low, float) and not math.isfinite(high - low):
        return f"the range {low:g}..{high:g} is too wide to sample (its width overflows)"
    return None
