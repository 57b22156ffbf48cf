"""Reading a time series as a Series: values (T, C) float64 with NaN for missing cells,
column names and, when the data has one, a time column. Every problem raises DataError
naming the file, line and column (docs/data.md).

Sources: CSV (optionally .gz / .bz2 / .zst), Parquet and Feather / Arrow IPC files, read
by pyarrow (engine/series/csv_files.py for CSV); .npy / .npz files, read by NumPy without
unpickling; and in memory, numpy arrays, pandas DataFrames / Series and pyarrow Tables
(pandas is imported only when given a pandas object).

Two layers: `read_table` / `as_table` give a pyarrow Table (numbers float64, the time
column timestamps, other text as strings, so callers such as panel readers can keep an id
column); `read_file` / `as_series` cut a Series from it (engine/series/tables.py).
"""
import os
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as parquet

from engine.footprint import MemoryEstimateError, require
from engine.series import csv_files, tables
from engine.series.base import MISSING, DataError, Series, listing
from engine.series.buffers import arrow_floats

__all__ = ["DataError", "MISSING", "Series", "listing", "read_file", "read_table", "as_table",
           "as_series"]

PARQUET = (".parquet", ".pq")
ARROW = (".feather", ".arrow", ".ipc", ".arrows")
_MAGIC = {b"PAR1": "parquet", b"ARROW1": "arrow", b"FEA1": "arrow", b"PK\x03\x04": "zip"}


def read_file(path, key=None, time_column=None):
    """The whole file as a Series whose non-numeric columns are only noted in `invalid`.
    key: the array of an .npz archive; time_column: the column of time stamps (default:
    the first column of dates or times, if any; False: none, dates are then text)."""
    path = _existing(path)
    kind = _kind(path)
    _check_key(path, kind, key)
    if kind == "npy":
        return _series_from_array(_load_arrays(path)["array"], None, path)
    if kind == "npz":
        return _series_from_npz(_load_arrays(path, key), key, path)
    return tables.to_series(read_table(path, key, time_column))   # no reference kept: freed as copied


def read_table(path, key=None, time_column=None, text_columns=()):
    """A file as a pyarrow Table: numeric columns float64, the time column (named, or the
    first column of dates/times) as timestamps, other columns as text. The schema metadata
    names the source and the time column (engine.series.tables: source_of, time_column_of,
    place(table, row) for "FILE, line N"). Raises DataError for a file that cannot be read
    (missing, empty, binary, ragged rows, unknown format). text_columns: columns read as
    text, exactly as written (ids; engine.series.tables.as_text)."""
    path = _existing(path)
    kind = _kind(path)
    _check_key(path, kind, key)
    if kind in ("npy", "npz"):
        series = read_file(path, key)
        return tables.normalize(_table_of(series.values, series.names), path, time_column,
                                text_columns=text_columns)
    if kind == "zip":
        raise DataError(f"{path}: a ZIP archive, not a data file (.csv, .parquet, .feather, .npy, .npz)")
    if kind == "csv":
        table, layout = csv_files.read_csv(path, text_columns)
        return tables.normalize(table, path, time_column, csv_header=layout.has_header,
                                text_columns=text_columns)
    try:
        if kind == "parquet":   # ParquetFile: parquet.read_table would import pandas
            table = parquet.ParquetFile(path).read(use_threads=True)
        else:
            table = _read_arrow(path)
    except (OSError, pa.ArrowException) as error:
        raise DataError(f"{path}: not a readable {kind.capitalize()} file "
                        f"({csv_files.first_line(error)})") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: the file holds no data rows")
    return tables.normalize(table, path, time_column, text_columns=text_columns)


def as_table(obj, time_column=None, text_columns=()):
    """An in-memory source as a pyarrow Table like read_table's: a numpy array (T,) or
    (T, C) (columns "0", "1", ...), a pandas DataFrame or Series (a DatetimeIndex becomes
    the time column, its zone kept), or a pyarrow Table / RecordBatch. text_columns: as
    read_table's."""
    module = type(obj).__module__.split(".")[0]
    if module == "pyarrow" and isinstance(obj, (pa.Table, pa.RecordBatch)):
        table, source = pa.Table.from_batches([obj]) if isinstance(obj, pa.RecordBatch) else obj, \
            "pyarrow.Table"
    elif module == "pandas":
        table, source = _from_pandas(obj), f"pandas.{type(obj).__name__}"
    else:
        series = _series_from_array(obj, None, "array")
        table, source = _table_of(series.values, series.names), "array"
    if table.num_rows == 0:
        raise DataError(f"{source}: the series must hold at least one row")
    return tables.normalize(table, source, time_column, text_columns=text_columns)


def as_series(source, key=None, time_column=None):
    """A Series from a path (see read_file), a Series, a pandas or pyarrow table, or an
    array (T,) or (T, C). key applies to a path only, time_column to a path or a table
    (for a Series: its own time column, or None)."""
    if isinstance(source, (str, os.PathLike)):
        return read_file(source, key, time_column)
    if key is not None:
        raise DataError(f"key {key!r}: names an array of an .npz file; the data is {type(source).__name__}")
    if isinstance(source, Series):
        if time_column is not None and time_column != (source.time_name or False):
            raise DataError(f"time column {time_column!r}: the series was read already, with "
                            f"{'none' if source.time_name is None else repr(source.time_name)}")
        return source
    if type(source).__module__.split(".")[0] in ("pandas", "pyarrow"):
        return tables.to_series(as_table(source, time_column))
    if time_column not in (None, False):
        raise DataError(f"time column {time_column!r}: an array has no named columns")
    return _series_from_array(source, None, "array")


def _existing(path):
    path = os.fspath(path)
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, not a data file")
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such data file")
    return path


def _check_key(path, kind, key):
    """A key names an array of an .npz archive: given for any other file, it would be ignored."""
    if key is not None and kind != "npz":
        raise DataError(f"key {key!r}: names an array of an .npz archive; {path} is not one")


def _kind(path):
    """"npy", "npz", "parquet", "arrow", "zip" or "csv", by extension, else by the first bytes."""
    extension = os.path.splitext(path)[1].lower()
    if extension in (".npy", ".npz"):
        return extension[1:]
    if extension in PARQUET:
        return "parquet"
    if extension in ARROW:
        return "arrow"
    with open(path, "rb") as file:
        head = file.read(8)
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), "csv")


def _read_arrow(path):
    """A Feather / Arrow IPC file (random-access format), else an Arrow IPC stream."""
    import pyarrow.ipc as ipc
    try:
        with ipc.open_file(path) as reader:
            return reader.read_all()
    except pa.ArrowInvalid:
        with ipc.open_stream(path) as reader:
            return reader.read_all()


def _from_pandas(obj):
    """A pandas DataFrame or Series as a pyarrow Table; a DatetimeIndex becomes the first
    column (named after the index, else "time"), any other index is dropped."""
    frame = obj.to_frame(name="0" if obj.name is None else str(obj.name)) \
        if type(obj).__name__ == "Series" else obj
    if type(frame.index).__name__ == "DatetimeIndex":
        name = "time" if frame.index.name is None else str(frame.index.name)
        frame = frame.set_axis(range(len(frame)), axis=0).assign(**{name: frame.index})
        frame = frame[[name] + [column for column in frame.columns if column != name]]
    frame = frame.set_axis([str(column) for column in frame.columns], axis=1)
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, ValueError, TypeError) as error:
        raise DataError(f"pandas.{type(obj).__name__}: cannot read the columns "
                        f"({csv_files.first_line(error)})") from None


def _table_of(values, names):
    """A (T, C) array as a table of C float64 columns."""
    return pa.table([arrow_floats(values[:, index]) for index in range(values.shape[1])],
                    names=list(names))


def _load_arrays(path, key=None):
    """The arrays of a .npy ({"array": it}) or .npz file (by name; only `key` when the
    archive holds it), never unpickling; their sizes (an .npy's header, the sizes an .npz's
    directory declares) must fit in memory before any is read."""
    try:
        loaded = np.load(path, allow_pickle=False, mmap_mode="r")
        if isinstance(loaded, np.ndarray):
            require(loaded.nbytes, f"reading {path}")
            return {"array": np.array(loaded)}
        with loaded:
            if "metadata" in loaded.files and any(name.startswith("model/") for name in loaded.files):
                raise DataError(f"{path}: is a bptt checkpoint, not a data series (a directory of series "
                                "reads every file in it whose name does not start with a dot: keep "
                                "checkpoints elsewhere, or give them such a name)")
            names = [key] if key in loaded.files else loaded.files
            members = {info.filename: info.file_size for info in loaded.zip.infolist()}
            require(sum(members.get(f"{name}.npy", members.get(name, 0)) for name in names), f"reading {path}")
            return {name: loaded[name] for name in names}
    except (MemoryEstimateError, DataError):
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        message = str(error)
        if "allow_pickle" in message:   # never suggest loading it unsafely
            message = "it holds Python objects, which are not read"
        raise DataError(f"{path}: not a readable NumPy file ({message})") from None


def _series_from_npz(arrays, key, path):
    """The array named `key`, the only array, or several 1-D arrays of one length as columns."""
    if not arrays:
        raise DataError(f"{path}: the archive holds no arrays")
    if key is not None:
        if key not in arrays:
            raise DataError(f"{path}: no array named {key!r}; the archive holds {listing(arrays)}")
        return _series_from_array(arrays[key], None, path)
    if len(arrays) == 1:
        return _series_from_array(next(iter(arrays.values())), None, path)
    lengths = {array.shape[0] if array.ndim == 1 else -1 for array in arrays.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise DataError(f"{path}: the archive holds several arrays ({listing(arrays)}) that are "
                        f"not 1-D columns of one length; name the one to use (--key NAME, or "
                        f"key=... in Python)")
    return _series_from_array(np.stack(list(arrays.values()), axis=1), tuple(arrays), path)


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
