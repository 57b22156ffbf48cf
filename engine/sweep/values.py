"""Checks of a sweep's values that an option's own type does not make: what a library call
can give where the command line gives text (a bool for a number, 16.7 for an integer),
and numbers that parse but cannot be searched or trained (NaN, infinities, a range
whose width overflows). Each check returns the problem as text, or None; the caller
names the --space or setting it came from.

`kind` is the option's type name as `bptt train` declares it ("integer", "integer range",
"float", "float range", "boolean", ...).
"""
import math
import numbers

import numpy as np

LARGEST_INTEGER = 2 ** 53  # integers beyond this are not exact as floats, which Optuna samples in


def is_integer_kind(kind):
    return kind in ("integer", "integer range")


def is_float_kind(kind):
    return kind in ("float", "float range")


def given_value_problem(kind, value):
    """A value given as a Python object, before the option's type converts it: the
    conversion would turn True into 1 and 16.7 into 16, silently."""
    if isinstance(value, str):
        return None  # text goes through the option's type as on the command line
    is_bool = isinstance(value, (bool, np.bool_))
    if kind == "boolean":
        return None if is_bool else f"{value!r} is not a boolean (true/false)"
    if not (is_integer_kind(kind) or is_float_kind(kind)):
        return None
    if is_bool:
        return f"{value!r} is a boolean, not a number"
    if not isinstance(value, numbers.Real):
        return f"{value!r} is not a number"
    if is_integer_kind(kind) and not float(value).is_integer():
        return f"{value!r} is not a whole number"
    return None


def number_problem(kind, value):
    """A converted value of a numeric option that is no number to train with."""
    if is_float_kind(kind) and isinstance(value, numbers.Real) and not math.isfinite(value):
        return f"{value} is not a finite number"
    if is_integer_kind(kind) and isinstance(value, numbers.Integral) and abs(value) > LARGEST_INTEGER:
        return f"{value} is too large (at most 2**53)"
    return None


def range_problem(low, high, log):
    """A float range low..high whose ends are finite but whose width is not: Optuna's
    uniform sampling would draw infinities (a log range samples log(low)..log(high))."""
    if not log and isinstance(low, float) and not math.isfinite(high - low):
        return f"the range {low:g}..{high:g} is too wide to sample (its width overflows)"
    return None
