"""The Series every reader yields, and the one error they raise."""
from dataclasses import dataclass, field

import numpy as np

MISSING = ("", "na", "nan", "null")   # text cells read as missing (case-insensitive)


class DataError(ValueError):
    """The data cannot be used as asked; the message says where and what to change."""


@dataclass(frozen=True, eq=False)
class Series:
    """values (T, C) float64 (NaN = missing), names: C column names ("0", "1", ... when the
    source has none), source: where it came from (a path, "demo:NAME" or "array").
    invalid: column name -> error message for the columns holding a non-numeric cell (NaN
    there in `values`); raised when such a column is selected, so unused columns such as
    labels do not stop the others from loading. time: (T,) datetime64 of each row, strictly
    increasing, or None (UTC instants when the data has a zone); time_name: the column it
    came from; time_zone: the zone of the stamps (engine/series/zones.py), None for plain
    stamps."""
    values: np.ndarray
    names: tuple
    source: str = "array"
    invalid: dict = field(default_factory=dict)
    time: np.ndarray = None
    time_name: str = None
    time_zone: str = None


def listing(names):
    return ", ".join(f'"{name}"' for name in names)
