"""Input checks shared by every public entry point (docs/safety.md).

Each check raises one ValueError or TypeError that names the argument and says what was
expected, before any computation starts.
"""
import numbers

import numpy as np

from engine.losses import LOSSES, parameter_count

DTYPES = ("float32", "float64")


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}; got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}")
    return int(value)


def check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {type(value).__name__} {value!r}")
    return bool(value)


def check_float(name, value, minimum=None, allow_none=False, strictly_greater=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    if minimum is not None and (value <= minimum if strictly_greater else value < minimum):
        relation = ">" if strictly_greater else ">="
        raise ValueError(f"{name} must be {relation} {minimum}; got {value}")
    return value


def check_rate(name, value):
    """A regularisation rate (dropout, recurrent_dropout, zoneout): a float in [0, 1)."""
    value = check_float(name, value, minimum=0)
    if value >= 1:
        raise ValueError(f"{name} must be in [0, 1) (the probability of dropping or keeping a unit); got {value}")
    return value


def check_in_dtype(name, value, dtype):
    """A finite float `value` that `dtype` holds: beyond its largest magnitude it would be
    stored as infinity (forget_bias=1e300 in float32)."""
    largest = float(np.finfo(dtype).max)
    if abs(value) > largest:
        raise ValueError(f"{name} must be within the range of {np.dtype(dtype)} "
                         f"(magnitude at most {largest:.4g}); got {value:g}")
    return value


def check_options_in_dtype(options, dtype):
    """Every number of `options` ({name: number, list of numbers or anything else}) within
    the range of `dtype` (the kernels compute in it: lr=1e300 in float32 would be inf)."""
    for name, value in options.items():
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(item, numbers.Real) and not isinstance(item, bool):
                check_in_dtype(name, float(item), dtype)


def as_numeric_array(name, value):
    """An ndarray of real numbers (not bool, object, string or complex)."""
    try:
        array = np.asarray(value)
    except Exception as error:  # ragged lists and the like
        raise TypeError(f"{name} must be an array of numbers; got {type(value).__name__} ({error})") from None
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers; got dtype {array.dtype}")
    return array


def as_inputs(x, model):
    """x as a C-contiguous (T, B, I) array of the model's dtype, all finite."""
    x = as_numeric_array("x", x)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (T, B, {model.input_size}) (time-major); got shape {x.shape}")
    T, B, I = x.shape
    if T < 1 or B < 1:
        raise ValueError(f"x must hold at least one step of one stream; got shape {x.shape}")
    if I != model.input_size:
        raise ValueError(f"x must have {model.input_size} input features in its last axis "
                         f"(the model's input_size); got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=model.dtype)  # cast first: 1e39 is inf in float32
    if not np.all(np.isfinite(x)):
        raise ValueError(f"x must be finite in {model.dtype}; it holds NaN or infinity, or values "
                         "beyond the dtype's range (fill missing inputs first)")
    return x


_PARAMETERS = {"gaussian": "a mean and a scale", "quantile": "one per level"}


def check_loss(loss, quantiles, model):
    """(loss, quantiles) of a model's training: loss one of LOSSES; quantiles a tuple of
    levels, strictly increasing and each in (0, 1), for "quantile" (required) and None for
    the others (refused); the model's outputs a whole number of blocks of the loss's P
    parameters per target."""
    check_choice("loss", loss, LOSSES)
    if loss != "quantile":
        if quantiles is not None:
            raise ValueError(f"quantiles apply to loss 'quantile' only; got quantiles={quantiles!r} with loss {loss!r}")
        _check_outputs(loss, parameter_count(loss), model)
        return loss, None
    if quantiles is None:
        raise ValueError("loss 'quantile' needs quantiles: the levels to forecast, e.g. (0.1, 0.5, 0.9)")
    levels = as_numeric_array("quantiles", quantiles)
    if levels.ndim != 1 or levels.size == 0:
        raise ValueError(f"quantiles must be a non-empty list of levels; got shape {levels.shape}")
    levels = levels.astype(np.float64)
    outside = levels[~((levels > 0) & (levels < 1))]
    if outside.size:
        raise ValueError(f"quantiles must each be in (0, 1) (exclusive); got {outside[0]:g}")
    if np.unique(levels).size != levels.size:
        raise ValueError(f"quantiles must not repeat a level; got {levels.tolist()}")
    if np.any(np.diff(levels) <= 0):
        raise ValueError(f"quantiles must be in increasing order; got {levels.tolist()}")
    _check_outputs(loss, len(levels), model)
    return loss, tuple(levels.tolist())


def _check_outputs(loss, P, model):
    """The model's outputs: whole blocks of P (one output per target and loss parameter)."""
    if model.output_size % P:
        raise ValueError(f"loss {loss} needs a model with {P} outputs per target ({_PARAMETERS[loss]}): "
                         f"output_size must be a multiple of {P}; got {model.output_size}")


def as_targets(y, loss, model, T, B, quantiles=None):
    """y for `loss`: (T, B, K) floats (NaN = missing) with K = output_size / P (P outputs
    per target, engine.losses.parameter_count) or (T, B) integer classes (-1 ignored)."""
    y = as_numeric_array("y", y)
    if loss != "cross_entropy":
        P = parameter_count(loss, quantiles)
        expected = (T, B, model.output_size // P)
        if P > 1 and y.ndim == 3 and y.shape[:2] == (T, B) and P * y.shape[2] != model.output_size:
            raise ValueError(f"loss {loss} needs a model with {P} outputs per target ({_PARAMETERS[loss]}): "
                             f"y has {y.shape[2]} target columns, so output_size must be {P * y.shape[2]}; "
                             f"got output_size {model.output_size}")
        if y.shape != expected:
            meaning = "output_size" if P == 1 else f"output_size / {P}"
            raise ValueError(f"y must have shape {expected} (T, B, {meaning}) for loss {loss!r}; got {y.shape}")
        y = np.ascontiguousarray(y, dtype=model.dtype)
        if np.any(np.isinf(y)):
            raise ValueError(f"y must not hold infinity or values beyond the range of {model.dtype} "
                             "(NaN marks a missing target)")
        return y
    if y.shape != (T, B):
        raise ValueError(f"y must have shape {(T, B)} (T, B) of class indices for loss "
                         f"'cross_entropy'; got {y.shape}")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise TypeError("y must hold integer class indices for loss 'cross_entropy'")
    classes = np.ascontiguousarray(y, dtype=np.int64)
    bad = (classes < -1) | (classes >= model.output_size)
    if np.any(bad):
        raise ValueError(f"y must hold class indices in [0, {model.output_size}) or -1 (ignored); "
                         f"got {classes[bad][0]}")
    return classes


def as_state(state, model, batch):
    """A copy of `state` as the model's state: h (L*D, B, H), for LSTM the pair (h, c)
    (D = model.directions: torch's h0 layout)."""
    shape = (model.num_layers * model.directions, batch, model.hidden_size)
    if state is None:
        return model.init_state(batch)
    parts = ("h", "c") if model.cell == "lstm" else ("h",)
    if model.cell == "lstm":
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(f"state must be a pair (h, c) of arrays shaped {shape} for an LSTM")
        values = state
    else:
        values = (state,)
    checked = []
    rows = "num_layers * 2" if model.bidirectional else "num_layers"  # torch's h0: a row per layer and direction
    for part, value in zip(parts, values):
        array = as_numeric_array(f"state {part}", value)
        if array.shape != shape:
            raise ValueError(f"state {part} must have shape {shape} ({rows}, B, hidden_size); got {array.shape}")
        array = np.array(array, dtype=model.dtype, order="C")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"state {part} must be finite in {model.dtype}")
        checked.append(array)
    return tuple(checked) if model.cell == "lstm" else checked[0]


def as_resets(resets, T, B, name="resets"):
    """resets as a C-contiguous (T, B) boolean array (None stays None): True where stream b
    starts a new series at step t (a zero state there). Booleans, or integers 0 and 1."""
    if resets is None:
        return None
    try:
        array = np.asarray(resets)
    except Exception as error:  # ragged lists and the like
        raise TypeError(f"{name} must be a (T, B) array of booleans; got {type(resets).__name__} ({error})") from None
    if array.dtype.kind not in "biu":
        raise TypeError(f"{name} must hold booleans (or integers 0 and 1); got dtype {array.dtype}")
    if array.shape != (T, B):
        raise ValueError(f"{name} must have shape {(T, B)} (T, B), one flag per step and stream of x; "
                         f"got {array.shape}")
    if array.dtype.kind != "b" and np.any((array != 0) & (array != 1)):
        raise ValueError(f"{name} must hold only 0 and 1 (or booleans); got {array[(array != 0) & (array != 1)][0]}")
    return np.ascontiguousarray(array, dtype=np.bool_)
