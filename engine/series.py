"""Reading a time series from a CSV file, a .npy array or a .npz archive (or taking an
array) as a Series: values (T, C) float64 with NaN for missing cells, and column names.
Every problem raises DataError naming the file, line and column. Pure NumPy."""
import csv
import math
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

MISSING = ("", "na", "nan", "null")   # CSV cells read as NaN (case-insensitive)


class DataError(ValueError):
    """The data cannot be used as asked; the message says where and what to change."""


@dataclass(frozen=True, eq=False)
class Series:
    """values (T, C) float64 (NaN = missing), names: C column names ("0", "1", ... when the
    source has none), source: where it came from (a path, "demo:NAME" or "array").
    invalid: column name -> error message for the columns of a CSV file holding a
    non-numeric cell (NaN there in `values`); raised when such a column is selected, so
    unused columns such as dates do not stop the others from loading."""
    values: np.ndarray
    names: tuple
    source: str = "array"
    invalid: dict = field(default_factory=dict)


def read_file(path, key=None):
    """The whole file as a Series whose non-numeric cells are only noted in `invalid`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such data file")
    extension = os.path.splitext(path)[1].lower()
    if extension == ".npy":
        series = _series_from_array(_load_arrays(path)["array"], None, path)
    elif extension == ".npz":
        series = _series_from_npz(_load_arrays(path), key, path)
    else:
        series = _read_csv(path)
    return series


def _read_csv(path):
    try:
        with open(path, encoding="utf-8-sig") as file:   # universal newlines
            lines = file.read().split("\n")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the file as UTF-8 text ({error})") from None
    numbered = [(number, line) for number, line in enumerate(lines, 1)
                if line.strip() and not line.lstrip().startswith("#")]
    if not numbered:
        raise DataError(f"{path}: the file holds no data")
    delimiter = _detect_delimiter([line for _, line in numbered[:20]])
    first = [cell.strip() for cell in _split(numbered[0][1], delimiter)]
    # a header: some text and no number or missing-value token (unnamed columns allowed)
    has_header = any(first) and all(cell == "" or not _is_value(cell) for cell in first)
    names = [(cell or str(index)) if has_header else str(index) for index, cell in enumerate(first)]
    numbered = numbered[int(has_header):]
    if len(names) == 1 and numbered:
        # one column: a blank line between data lines is an empty cell (a missing value)
        first_row, last_row = numbered[0][0], numbered[-1][0]
        numbered = [(number, lines[number - 1]) for number in range(first_row, last_row + 1)
                    if not lines[number - 1].lstrip().startswith("#")]
    if not numbered:
        raise DataError(f"{path}: the file holds a header line but no data rows")
    _check_unique(names, path)
    invalid = {}

    def note(number, index, cell):   # the first bad cell of each column, reported on use
        column = f'column "{names[index]}"' if has_header else f"column {index}"
        invalid.setdefault(names[index], f"{path}, line {number}, {column}: not a finite "
                                         f"number: {cell.strip()!r}")

    table = []
    for number, line in numbered:
        cells = _split(line, delimiter)
        if len(cells) != len(names):
            raise DataError(f"{path}, line {number}: expected {len(names)} cells like the first "
                            f"line, found {len(cells)}")
        try:
            table.append(list(map(float, cells)))               # fast path: all numbers
        except ValueError:                                   # missing or bad cells: one by one
            row = []
            for index, cell in enumerate(cells):
                try:
                    row.append(_cell_value(cell))
                except ValueError:
                    row.append(math.nan)
                    note(number, index, cell)
            table.append(row)
    values = np.array(table, dtype=np.float64)
    infinite = np.isinf(values)
    for index in np.flatnonzero(infinite.any(axis=0)):
        row = np.argmax(infinite[:, index])
        note(numbered[row][0], index, str(values[row, index]))
    return Series(values, tuple(names), path, invalid)


def _split(line, delimiter):
    """Cells of one line, unstripped. delimiter: "," ";" "\t", " " (runs of whitespace) or
    None (one column); quoted cells are read the csv way."""
    if delimiter is None:
        return [line]
    if delimiter == " ":
        return line.split()
    if '"' in line:
        return next(csv.reader([line], delimiter=delimiter))
    return line.split(delimiter)


def _detect_delimiter(sample):
    """The delimiter splitting every sample line into the same number (> 1) of cells, the
    most cells winning and earlier candidates winning ties; failing that, the one splitting
    the first line most (a ragged line is then reported); None for a single column."""
    best, best_score = None, (False, 1)
    for delimiter in (",", ";", "\t", " "):
        widths = [len(_split(line, delimiter)) for line in sample]
        score = (len(set(widths)) == 1, widths[0])
        if widths[0] > 1 and score > best_score:
            best, best_score = delimiter, score
    return best


def _cell_value(cell):
    """A CSV cell as a float, NaN for a missing cell; ValueError for anything else."""
    return math.nan if cell.strip().lower() in MISSING else float(cell)


def _is_value(cell):
    try:
        return not math.isinf(_cell_value(cell))
    except ValueError:
        return False


def _load_arrays(path):
    """The arrays of a .npy ({"array": it}) or .npz file (by name), never unpickling."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return {"array": loaded}
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable NumPy file ({error})") from None


def _series_from_npz(arrays, key, path):
    """The array named `key`, the only array, or several 1-D arrays of one length as columns."""
    if key is not None:
        if key not in arrays:
            raise DataError(f"{path}: no array named {key!r}; the archive holds {listing(arrays)}")
        return _series_from_array(arrays[key], None, path)
    if len(arrays) == 1:
        return _series_from_array(next(iter(arrays.values())), None, path)
    lengths = {array.shape[0] if array.ndim == 1 else -1 for array in arrays.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise DataError(f"{path}: the archive holds several arrays ({listing(arrays)}) that are "
                        f"not 1-D columns of one length; name the one to use (key=...)")
    return _series_from_array(np.stack(list(arrays.values()), axis=1), tuple(arrays), path)


def as_series(source, key=None):
    """A Series from a path (see load_series), a Series, or an array (T,) or (T, C)."""
    if isinstance(source, Series):
        return source
    if isinstance(source, (str, os.PathLike)):
        return read_file(source, key)
    return _series_from_array(source, None, "array")


def _series_from_array(array, names, source):
    """Check and convert an array (T,) or (T, C) of real numbers (NaN = missing)."""
    array = np.asarray(array)
    if array.dtype.kind not in "iuf":
        raise DataError(f"{source}: the series must hold real numbers; got dtype {array.dtype}")
    if array.ndim not in (1, 2) or array.size == 0:
        raise DataError(f"{source}: the series must have shape (T,) or (T, C) with T >= 1; "
                        f"got {array.shape}")
    values = np.array(array.reshape(len(array), -1), dtype=np.float64)
    if np.any(np.isinf(values)):
        row, column = np.argwhere(np.isinf(values))[0]
        raise DataError(f"{source}: infinite value at row {row}, column {column}")
    names = tuple(str(index) for index in range(values.shape[1])) if names is None else names
    return Series(values, names, source)


def _check_unique(names, source):
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataError(f"{source}: repeated column names {', '.join(map(repr, repeated))}")


def listing(names):
    return ", ".join(f'"{name}"' for name in names)
