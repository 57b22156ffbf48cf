"""Prediction intervals: the --intervals levels, central intervals from a Gaussian forecast or
from forecast quantiles, split-conformal calibration of absolute residuals, and the names
of the interval and quantile columns a forecast writes.

Levels are percentages (80 = the central 80% interval); quantile levels are fractions
(0.1). Shapes: K forecast entries per row, step-major (docs/forecasting.md)."""
import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from engine.series import DataError

TOLERANCE = 1e-9   # quantile levels closer than this are the same level
GRID = np.round(np.arange(1, 200) * 0.005, 3)   # conformal probabilities 0.005, 0.010, ..., 0.995
_HINT = "give percentages such as 80,95 (or none)"


def parse_levels(spec):
    """--intervals: "80,95", a list of numbers or "none" -> the levels as a sorted tuple of
    floats strictly between 0 and 100, each once; "none" -> (). DataError otherwise."""
    if isinstance(spec, str):
        if spec.strip().lower() == "none":
            return ()
        parts = [part.strip() for part in spec.split(",")]
    else:
        parts = list(spec)
    if not parts:
        raise DataError(f"--intervals: no level given; {_HINT}")
    levels = sorted(_level(part) for part in parts)
    for before, after in zip(levels, levels[1:]):
        if before == after:
            raise DataError(f"--intervals: the level {after:g} is given twice; {_HINT}")
    return tuple(levels)


def _level(part):
    try:
        if isinstance(part, bool):
            raise TypeError
        level = float(part)
    except (TypeError, ValueError):
        raise DataError(f"--intervals: {part!r} is not a number; {_HINT}") from None
    if not 0 < level < 100:   # NaN fails too
        raise DataError(f"--intervals: levels are percentages strictly between 0 and 100; got {part}")
    return level


def gaussian_bounds(mean, scale, level):
    """The central `level`% interval (lo, hi) of Normal(mean, scale**2), arrays of any
    (broadcast) shape: mean -/+ z scale with z = Phi^-1(1/2 + level/200)."""
    z = norm.ppf(0.5 + level / 200)
    mean, scale = np.asarray(mean, dtype=np.float64), np.asarray(scale, dtype=np.float64)
    return mean - z * scale, mean + z * scale


def quantile_bounds(quantiles, levels_q, level):
    """The central `level`% interval (lo, hi) from forecast quantiles (Q, ...) at the levels
    levels_q (Q,): the quantiles at q = (1 - level/100) / 2 and 1 - q (0.1 and 0.9 for 80),
    which must be among levels_q (within 1e-9), else DataError naming the intervals the
    levels do give. lo and hi have the shape quantiles.shape[1:]."""
    quantiles = np.asarray(quantiles, dtype=np.float64)
    levels_q = np.asarray(levels_q, dtype=np.float64)
    lower = (1 - level / 100) / 2
    rows = [_index(levels_q, q) for q in (lower, 1 - lower)]
    if None in rows:
        given = available_levels(levels_q)
        gives = f"the intervals {', '.join(f'{value:g}' for value in given)}" if given else "no central interval"
        raise DataError(f"the interval {level:g} needs the quantiles {lower:g} and {1 - lower:g}; the "
                        f"model's quantiles {', '.join(f'{q:g}' for q in levels_q)} give {gives}")
    return quantiles[rows[0]], quantiles[rows[1]]


def available_levels(levels_q):
    """The interval levels (percent, increasing) that the quantile levels levels_q give: one
    per pair q < 0.5, 1 - q both present."""
    levels_q = np.asarray(levels_q, dtype=np.float64)
    return sorted(100 * (1 - 2 * q) for q in levels_q if q < 0.5 and _index(levels_q, 1 - q) is not None)


def _index(levels_q, q):
    """The row of levels_q within TOLERANCE of q, or None."""
    close = np.flatnonzero(np.abs(levels_q - q) <= TOLERANCE)
    return int(close[0]) if close.size else None


@dataclass(frozen=True, eq=False)   # arrays: no field-wise ==
class Conformal:
    """Split-conformal calibration (Vovk et al., "Algorithmic Learning in a Random World",
    2005; Lei et al., "Distribution-free predictive inference for regression", JASA 2018)
    of K forecast entries from absolute residuals |y - y_hat| on held-out rows.

    n (K,) int: residuals per entry; probabilities (P,): the grid GRID; quantiles (K, P):
    the residuals' empirical quantiles at those probabilities (inverse of the empirical
    distribution: at p the ceil(p n)-th smallest residual), model units; NaN rows where
    n == 0."""
    n: np.ndarray
    probabilities: np.ndarray
    quantiles: np.ndarray

    @classmethod
    def fit(cls, residuals):
        """From absolute residuals (n_rows, K), finite and >= 0; NaN = missing, skipped
        per column."""
        residuals = np.asarray(residuals, dtype=np.float64)
        if residuals.ndim != 2:
            raise ValueError(f"absolute residuals must be (rows, K); got shape {residuals.shape}")
        observed = ~np.isnan(residuals)
        if np.any(np.isinf(residuals)) or np.any(residuals[observed] < 0):
            raise ValueError("absolute residuals must be finite and >= 0 (NaN: missing)")
        n = observed.sum(axis=0)
        quantiles = np.full((residuals.shape[1], len(GRID)), np.nan)
        for column in np.flatnonzero(n):
            quantiles[column] = np.quantile(residuals[observed[:, column], column], GRID,
                                            method="inverted_cdf")
        return cls(n, GRID.copy(), quantiles)

    def half_width(self, level):
        """Half-widths (K,) of the `level`% conformal intervals y_hat -/+ w: per entry the
        residual quantile at the split-conformal finite-sample level
        p = min(1, ceil((n + 1) level/100) / n), linearly interpolated in the grid. p above
        the grid's top (0.995: small n or a high level) takes the top quantile, so such an
        interval can be narrower than the finite-sample guarantee asks; an entry with no
        residual (n == 0) gets NaN."""
        widths = np.full(len(self.n), np.nan)
        for column in np.flatnonzero(self.n):
            count = int(self.n[column])
            p = min(1.0, math.ceil((count + 1) * level / 100 - TOLERANCE) / count)
            widths[column] = np.interp(p, self.probabilities, self.quantiles[column])
        return widths

    def to_dict(self):
        """JSON-ready record: {"n": [K ints], "probabilities": [P], "quantiles": K lists of P
        numbers (null in a row with n == 0)}."""
        return {"n": [int(count) for count in self.n],
                "probabilities": [float(p) for p in self.probabilities],
                "quantiles": [[None if math.isnan(value) else value for value in row.tolist()]
                              for row in self.quantiles]}

    @classmethod
    def from_dict(cls, record, entries=None):
        """The Conformal of a to_dict record, checked (DataError naming the first problem);
        entries: the K it must have, if known."""
        if not isinstance(record, dict) or not {"n", "probabilities", "quantiles"} <= set(record):
            raise DataError("conformal record must be a dict of 'n', 'probabilities' and 'quantiles'")
        n, probabilities, rows = record["n"], record["probabilities"], record["quantiles"]
        if not isinstance(n, list) or not all(_is_int(count) and count >= 0 for count in n):
            raise DataError("conformal record: 'n' must be a list of counts (integers >= 0)")
        if entries is not None and len(n) != entries:
            raise DataError(f"conformal record: {len(n)} entries; the model forecasts {entries}")
        if not isinstance(probabilities, list) or not probabilities \
                or not all(_is_number(p) for p in probabilities):
            raise DataError("conformal record: 'probabilities' must be a non-empty list of numbers")
        probabilities = np.array(probabilities, dtype=np.float64)
        if not (np.all((probabilities > 0) & (probabilities < 1)) and np.all(np.diff(probabilities) > 0)):
            raise DataError("conformal record: 'probabilities' must increase strictly within (0, 1)")
        if not isinstance(rows, list) or len(rows) != len(n):
            raise DataError(f"conformal record: 'quantiles' must be a list of {len(n)} rows, one per entry")
        quantiles = np.full((len(n), len(probabilities)), np.nan)
        for column, (count, row) in enumerate(zip(n, rows)):
            quantiles[column] = _quantile_row(column, count, row, len(probabilities))
        return cls(np.array(n, dtype=np.int64), probabilities, quantiles)


def _quantile_row(column, count, row, size):
    """One entry's quantiles: `size` numbers >= 0, non-decreasing; all null when count == 0."""
    where = f"conformal record: 'quantiles' row {column}"
    if not isinstance(row, list) or len(row) != size:
        raise DataError(f"{where} must be a list of {size} numbers")
    if count == 0:
        if any(value is not None for value in row):
            raise DataError(f"{where} must be all null (no residual for this entry)")
        return np.nan
    if not all(_is_number(value) for value in row):
        raise DataError(f"{where} must hold numbers only (it has {count} residuals)")
    values = np.array(row, dtype=np.float64)
    if not (np.all(np.isfinite(values)) and np.all(values >= 0) and np.all(np.diff(values) >= 0)):
        raise DataError(f"{where} must be finite, >= 0 and non-decreasing")
    return values


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def bound_names(name, levels):
    """Column names of the intervals of target `name`: [name_lo80, name_hi80, name_lo95, ...]
    (levels with :g, so 99.5 stays 99.5)."""
    return [f"{name}_{side}{level:g}" for level in levels for side in ("lo", "hi")]


def quantile_name(name, q):
    """Column name of target `name`'s quantile q: name_q0.1 (q with :g)."""
    return f"{name}_q{q:g}"
