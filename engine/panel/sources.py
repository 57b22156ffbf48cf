"""Panels: one or many series, each (T_i, C) with an id and optional timestamps
(docs/data.md), built from pyarrow Tables in long format (one row per id and
time), wide format (one column per series) or from a directory / glob of files (one
series per file). A single series is the panel of one id.

pandas DataFrames go through a Table; pandas is never imported here.
"""
import os
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine import series as series_module
from engine.files import is_file_pattern, listed_files
from engine.series import DataError, Series, listing, tables, times as stamps_module, zones
from engine.series.buffers import true_mask

COMPRESSION = (".gz", ".bz2", ".zst")
_DAY = 86_400 * 10 ** 9   # nanoseconds
# calendar steps of irregular length in days -> (label, months), so months of 28..31 days are one frequency
CALENDAR = (((28, 31), "1 month", 1), ((89, 92), "1 quarter", 3), ((365, 366), "1 year", 12))


@dataclass(frozen=True, eq=False)
class Panel:
    """ids: N series ids (str, unique); series: N Series, values (T_i, C) float64 (NaN
    missing) with the same C column names; times: N arrays (T_i,) of datetime64[ns] or of
    numbers, increasing, or None when the source has no time column; source: where it
    came from; time_name: the name of the time column, or None; time_zone: the zone of
    dated times (UTC instants then; engine/series/zones.py), None for plain ones."""
    ids: tuple
    series: tuple
    times: tuple
    source: str = "array"
    time_name: str = None
    time_zone: str = None

    def __len__(self):
        return len(self.ids)

    @property
    def names(self):
        return self.series[0].names

    @property
    def lengths(self):
        return tuple(len(one.values) for one in self.series)

    def index(self, series_id):
        """The position of `series_id` (an error listing a few ids when it is unknown)."""
        try:
            return self.ids.index(str(series_id))
        except ValueError:
            raise DataError(f"unknown series id {str(series_id)!r}; the panel holds "
                            f"{_some(self.ids)}") from None

    def select(self, series_id):
        """The panel of the one series `series_id`."""
        i = self.index(series_id)
        return Panel((self.ids[i],), (self.series[i],), (self.times[i],), self.source, self.time_name,
                     self.time_zone)


def single(source, series_id="series"):
    """A Series (or anything engine.series.as_series takes) as a panel of one id, with the
    series' time stamps."""
    one = series_module.as_series(source)
    return Panel((str(series_id),), (one,), (one.time,), one.source, one.time_name, one.time_zone)


# ---------------------------------------------------------------- sources

def from_long(data, id_column, time_column=None, min_length=1, source=None):
    """A panel from long-format data (a pyarrow Table, a pandas DataFrame, ...): one row
    per (id, time), rows in any order. Rows are grouped by id (ids sorted) and sorted by
    time within each id (kept in their order without a time column). Every other numeric
    column is a value column; text columns are kept as unusable (an error if selected).
    time_column: as in _table (default: the first column of dates). Errors: a missing
    id, a duplicate (id, time), an id with fewer than min_length rows, series of
    different frequencies."""
    table, time_column = _table(data, time_column, text_columns=(id_column,))
    source = source or "table"
    ids = tables.as_text(_column(table, id_column, source))   # as written: "02134" is not "2134"
    if ids.null_count:
        row = int(np.argmax(true_mask(pc.is_null(ids))))
        raise DataError(f"{_place(table, row, source)}: the id column {id_column!r} is empty "
                        f"({ids.null_count} empty cells in all)")
    encoded = ids.combine_chunks().dictionary_encode()   # the distinct ids, in order of appearance
    keys = encoded.dictionary.to_numpy(zero_copy_only=False).astype(str)
    by_id = _id_order(keys)
    rank = np.empty(len(keys), dtype=np.int64)
    rank[by_id] = np.arange(len(keys))
    unique, inverse = keys[by_id], rank[encoded.indices.to_numpy(zero_copy_only=False)]
    order = np.arange(len(inverse))
    times = zone = None
    if time_column is not None:   # by time, then (stably) by id
        times, zone = _time_values(table, time_column, source), _time_zone(table, time_column)
        order = np.argsort(times, kind="stable")
    order = order[np.argsort(inverse[order], kind="stable")]
    inverse = inverse[order]
    times = None if times is None else times[order]
    starts = np.flatnonzero(np.r_[True, inverse[1:] != inverse[:-1]])
    stops = np.r_[starts[1:], len(inverse)]
    names = [str(id_) for id_ in unique]
    for name, start, stop in zip(names, starts, stops):
        if stop - start < min_length:
            raise DataError(f'{source}: series "{name}" has {stop - start} rows; at least '
                            f"{min_length} are needed")
    if times is not None:
        same = np.flatnonzero((inverse[1:] == inverse[:-1]) & (times[1:] == times[:-1]))
        if same.size:
            row = same[0]
            raise DataError(f'{_place(table, int(order[row + 1]), source)}: series "{names[inverse[row]]}" '
                            f"has two rows at time {_time_label(times[row], zone)} ({time_column!r}); "
                            "each (id, time) must be one row")
    values, value_names, invalid = _values(table, exclude=(id_column, time_column), source=source)
    values = values[order]
    panel = Panel(tuple(names),
                  tuple(Series(values[a:b], value_names, f"{source}[{n}]", invalid)
                        for n, a, b in zip(names, starts, stops)),
                  tuple(None if times is None else times[a:b] for a, b in zip(starts, stops)),
                  source, time_column, zone)
    check_frequencies(panel)
    return panel


def from_wide(data, series_columns="all", time_column=None, source=None):
    """A panel from wide-format data: one column per series of the same quantity.
    series_columns: "all" (every numeric column but the time column), a list of column
    names, or a comma string "a,b,c". Each series is named by its column, holds one value
    column "value", and drops its leading and trailing missing cells (series of different
    lengths side by side); rows must be in time order."""
    table, time_column = _table(data, time_column)
    source = source or "table"
    times = _increasing_times(table, time_column, source)
    if series_columns == "all":
        columns = [name for name in table.column_names
                   if name != time_column and _is_numeric(table[name].type)]
    elif isinstance(series_columns, str):
        columns = [name.strip() for name in series_columns.split(",")]
    else:
        columns = [str(name) for name in series_columns]
    if not columns or len(set(columns)) != len(columns) or "" in columns:
        raise DataError(f"series_columns: expected distinct column names; got {series_columns!r}")
    ids, members, stamps = [], [], []
    for name in columns:
        value = _numeric(table, name, source)
        observed = np.flatnonzero(~np.isnan(value))
        if observed.size == 0:
            raise DataError(f'{source}: series column "{name}" holds no values')
        rows = slice(observed[0], observed[-1] + 1)
        ids.append(name)
        members.append(Series(value[rows, None], ("value",), f"{source}[{name}]"))
        stamps.append(None if times is None else times[rows])
    panel = Panel(tuple(ids), tuple(members), tuple(stamps), source, time_column,
                  _time_zone(table, time_column))
    check_frequencies(panel)
    return panel


def from_files(pattern, time_column=None, key=None):
    """A panel of one series per file: every regular, non-hidden file of a directory, or
    the files matching a glob pattern, in name order. id = the file name without its
    extension (and compression suffix); every file must hold the same columns."""
    pattern = os.fspath(pattern)
    paths = listed_files(pattern)
    if not paths:
        raise DataError(f"{pattern}: no data files found")
    ids = [file_id(path) for path in paths]
    repeated = sorted({id_ for id_ in ids if ids.count(id_) > 1})
    if repeated:
        raise DataError(f"{pattern}: several files give the series id {repeated[0]!r}; "
                        "ids are file names without extension and must be unique")
    members, stamps, time_names, time_zones = [], [], set(), []
    for path in paths:
        table, time_name = _table(path, time_column, key)
        time_names.add(time_name)
        time_zones.append(_time_zone(table, time_name))
        times = _increasing_times(table, time_name, path)
        values, names, invalid = _values(table, exclude=(time_name,), source=path)
        if members and names != members[0].names:
            raise DataError(f"{path}: columns {listing(names)} differ from those of {paths[0]} "
                            f"({listing(members[0].names)}); every file must hold the same columns")
        members.append(Series(values, names, path, invalid))
        stamps.append(times)
    if len(time_names) > 1:
        raise DataError(f"{pattern}: the files' time columns differ ({', '.join(sorted(map(str, time_names)))}); "
                        "name one with time_column")
    panel = Panel(tuple(ids), tuple(members), tuple(stamps), pattern, time_names.pop(),
                  _common_zone(pattern, paths, stamps, time_zones))
    check_frequencies(panel)
    return panel


def _common_zone(pattern, paths, stamps, time_zones):
    """The zone of a panel of files: None, or (stamps with offsets that differ between
    files, such as summer and winter time) the zone of the file whose stamps end last.
    Files with and without zones do not mix."""
    if len(set(time_zones)) <= 1:
        return time_zones[0]
    if None in time_zones:
        plain, zoned = (paths[time_zones.index(None)],
                        paths[next(i for i, zone in enumerate(time_zones) if zone is not None)])
        raise DataError(f"{pattern}: the time stamps of {zoned} have a zone, those of {plain} none; "
                        "write them all one way")
    return time_zones[int(np.argmax([times[-1] for times in stamps]))]


def as_panel(source, id_column=None, series_columns=None, time_column=None, key=None):
    """A Panel from a Panel, a directory or glob of files, a file or in-memory data (Table,
    DataFrame, array, Series): long format with id_column, wide with series_columns, else
    one series (id: the file name without extension, or "series")."""
    if id_column is not None and series_columns is not None:
        raise DataError("give id_column (long format) or series_columns (wide format), not both")
    layout = "id_column" if id_column is not None else "series_columns" if series_columns is not None else None
    if isinstance(source, Panel):   # read already: options that would change the reading are refused
        given = [name for name, value in (("key", key), ("id_column", id_column), ("series_columns", series_columns))
                 if value is not None]
        if time_column is not None and time_column != source.time_name:
            given.append("time_column")
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise DataError(f"{', '.join(given)}: {source.source} is a panel read already; "
                            f"{' and '.join(given)} {verb} to reading a table or files")
        return source
    if isinstance(source, Series) and id_column is None and series_columns is None:
        return single(source)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if is_file_pattern(path):
            if layout is not None:
                raise DataError(f"{layout}: {path} names files of one series each (the ids are their names); "
                                f"{layout} applies to one file holding many series")
            return from_files(path, time_column, key)
        table, time_column = _table(path, time_column, key, (id_column,) if id_column else ())
        name = file_id(path)
    else:
        table, time_column = _table(source, time_column, text_columns=(id_column,) if id_column else ())
        path, name = "table", "series"
    if id_column is not None:
        return from_long(table, id_column, time_column, source=path)
    if series_columns is not None:
        return from_wide(table, series_columns, time_column, source=path)
    times = _increasing_times(table, time_column, path)
    values, names, invalid = _values(table, exclude=(time_column,), source=path)
    panel = Panel((name,), (Series(values, names, path, invalid),), (times,), path, time_column,
                  _time_zone(table, time_column))
    check_frequencies(panel)   # reports gaps
    return panel


def to_long(panel, id_column="id", time_column="time"):
    """The panel as a long-format pyarrow Table: id, time (when the series have times),
    then the value columns; from_long(to_long(panel), ...) gives the panel back."""
    columns = {id_column: pa.array(np.repeat(np.array(panel.ids, dtype=object), panel.lengths),
                                   pa.string())}
    if all(times is not None for times in panel.times):
        columns[time_column] = time_array(np.concatenate(panel.times), panel.time_zone)
    values = np.concatenate([one.values for one in panel.series])
    for i, name in enumerate(panel.names):
        columns[name] = pa.array(values[:, i])
    return pa.table(columns)


def file_id(path):
    """The series id of a file: its name without the data extension and compression suffix."""
    name = os.path.basename(path)
    stem, extension = os.path.splitext(name)
    if extension.lower() in COMPRESSION:
        stem = os.path.splitext(stem)[0]
    return stem or name


# ---------------------------------------------------------------- frequencies

def frequency(times):
    """The step of a series' times (T,): the most common difference between consecutive
    times, months / quarters / years of uneven length in days as one label. Returns
    (label, step) with step a numpy timedelta64, a number, or a number of months for the
    calendar labels; None for fewer than two times."""
    if times is None or len(times) < 2:
        return None
    steps, counts = np.unique(np.diff(times), return_counts=True)
    step = steps[np.argmax(counts)]
    if np.issubdtype(times.dtype, np.datetime64):
        days = step.astype("timedelta64[ns]").astype(np.int64) / _DAY
        for (low, high), label, months in CALENDAR:
            if low <= days <= high:
                return label, months
        unit = next((unit for unit in ("D", "h", "m", "s") if step % np.timedelta64(1, unit) == 0), None)
        return str(step if unit is None else step.astype(f"timedelta64[{unit}]")), step
    return str(step), step


def check_frequencies(panel):
    """Every series with a time column must advance by the same step. Dated series whose
    stamps skip steps are reported in one GapWarning for the whole panel."""
    seen = None
    for series_id, times in zip(panel.ids, panel.times):
        found = frequency(times)
        if found is None:
            continue
        if seen is None:
            seen = (series_id, found[0])
        elif found[0] != seen[1]:
            raise DataError(f'{panel.source}: series "{seen[0]}" has a step of {seen[1]}, series '
                            f'"{series_id}" one of {found[0]}; all series must share one frequency')
    _warn_gaps(panel)


def _warn_gaps(panel):
    irregular = []   # (series id, its stamps, its Spacing) of the series with gaps
    for series_id, times in zip(panel.ids, panel.times):
        if times is not None and np.issubdtype(times.dtype, np.datetime64):
            found = stamps_module.spacing(times, panel.time_zone)
            if found.irregular:
                irregular.append((series_id, times, found))
    if irregular:
        series_id, times, found = irregular[0]
        warnings.warn(f'{panel.source}: {len(irregular)} series with gaps or uneven steps in the time stamps; '
                      f'series "{series_id}" has {found.irregular}, the first after '
                      f"{_time_label(times[found.first - 1], panel.time_zone)}; the frequency "
                      f"{found.frequency} of the other steps is used", stamps_module.GapWarning, stacklevel=3)


def future_times(times, steps, zone=None):
    """The `steps` times after a series' last time at its frequency, or None without times
    (or dated times without a frequency). Dated times: UTC instants of the zone `zone`,
    calendar steps (month ends, business days, ...) as engine.series.times infers them."""
    found = frequency(times)
    if found is None:
        return None
    if np.issubdtype(times.dtype, np.datetime64):
        step = stamps_module.infer_frequency(times, zone)
        return None if step is None else \
            stamps_module.next_stamps(times[-1], step, steps, zone).astype("datetime64[ns]")
    return times[-1] + np.arange(1, steps + 1) * found[1]


def time_array(times, zone):
    """Times (T,) as an Arrow array: dated ones as timestamps in the zone `zone`."""
    if zone is not None and np.issubdtype(times.dtype, np.datetime64):
        return pa.array(times.astype("datetime64[ns]"), pa.timestamp("ns", tz=zone))
    return pa.array(times)


# ---------------------------------------------------------------- tables

def _table(data, time_column=None, key=None, text_columns=()):
    """(table, time column name or None): a path through engine.series.read_table, other
    data through engine.series.as_table. time_column: a column of dates or times (parsed
    as engine.series does) or of numbers (a step count), None for the first column of
    dates if any (engine.series' default), False for none. text_columns: read as text,
    exactly as written (ids)."""
    named = time_column not in (None, False)
    if isinstance(data, pa.Table) and tables.SOURCE_KEY in (data.schema.metadata or {}):
        table = data   # read here already
    elif isinstance(data, (str, os.PathLike)):
        table = series_module.read_table(data, key=key, time_column=False if named else time_column,
                                         text_columns=text_columns)
    else:
        table = series_module.as_table(data, time_column=False if named else time_column,
                                       text_columns=text_columns)
    if not named:
        return table, tables.time_column_of(table) if time_column is None else None
    kind = _column(table, time_column, tables.source_of(table)).type
    if not (_is_numeric(kind) or pa.types.is_timestamp(kind)):
        table = tables.normalize(table, tables.source_of(table), time_column,
                                 csv_header=tables.csv_header_of(table), text_columns=text_columns)
    return table, time_column


def _column(table, name, source):
    if name not in table.column_names:
        raise DataError(f"{source}: no column {name!r}; available columns: {listing(table.column_names)}")
    return table[name]


def _is_numeric(kind):
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def _numeric(table, name, source):
    """Column `name` as float64 (T,), null -> NaN; an error for text or infinite values."""
    column = _column(table, name, source)
    if not _is_numeric(column.type):
        raise DataError(f"{source}: column {name!r} holds {column.type}, not numbers")
    values = column.cast(pa.float64()).fill_null(np.nan).to_numpy()
    if np.isinf(values).any():
        row = int(np.argmax(np.isinf(values)))
        raise DataError(f"{_place(table, row, source)}, column {name!r}: an infinite value")
    return values


def _values(table, exclude, source):
    """The value columns of a table (every column not in `exclude`): values (T, C) float64,
    names, and {name: message} for the non-numeric ones (NaN in values, an error if used)."""
    names = tuple(name for name in table.column_names if name not in exclude)
    if not names:
        raise DataError(f"{source}: no value columns besides {listing([e for e in exclude if e])}")
    text = [name for name in names if not _is_numeric(table[name].type)]
    if tables.csv_header_of(table) is not None:   # a CSV file: "FILE, line N, column ...", as for one series
        invalid = tables.CellProblems(table.select(text), text)
    else:
        invalid = {name: f"{source}: column {name!r} holds {table[name].type}, not numbers" for name in text}
    values = np.full((table.num_rows, len(names)), np.nan)
    for i, name in enumerate(names):
        if name not in invalid:
            values[:, i] = _numeric(table, name, source)
    return values, names, invalid


def _time_values(table, name, source):
    """Column `name` as datetime64[ns] (timestamps, dates, ISO text; UTC instants for
    stamps with a zone) or float64 (numbers)."""
    column = _column(table, name, source)
    if column.null_count:
        row = int(np.argmax(true_mask(pc.is_null(column))))
        raise DataError(f"{_place(table, row, source)}: the time column {name!r} is empty "
                        f"({column.null_count} empty cells in all)")
    if _is_numeric(column.type):
        return column.cast(pa.float64()).to_numpy()
    try:
        if pa.types.is_timestamp(column.type) and column.type.tz is not None:
            column = column.cast(pa.timestamp(column.type.unit))
        return column.cast(pa.timestamp("ns")).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise DataError(f"{source}: time column {name!r} does not hold dates or times ({error})") from None


def _time_zone(table, name):
    """The zone of the time column `name` (engine/series/zones.py), None without one."""
    kind = None if name is None else table[name].type
    return zones.check(kind.tz) if kind is not None and pa.types.is_timestamp(kind) else None


def _increasing_times(table, name, source):
    """The time column `name` of one series (None for no name), checked to increase."""
    if name is None:
        return None
    times = _time_values(table, name, source)
    if np.any(times[1:] <= times[:-1]):
        row = int(np.argmax(times[1:] <= times[:-1])) + 1
        where = _place(table, row, source).rsplit(", ", 1)[-1]   # "line N" of a CSV file, else "row N"
        raise DataError(f"{source}: time column {name!r} is not increasing at {where}")
    return times


def _place(table, row, source):
    """Where row `row` of a table is: "FILE, line N" for a CSV file (as engine.series
    says), else "SOURCE, row N"."""
    if tables.SOURCE_KEY in (table.schema.metadata or {}):
        return tables.place(table, row)
    return f"{source}, row {row}"


def _time_label(stamp, zone):
    if np.issubdtype(np.asarray(stamp).dtype, np.datetime64):
        return zones.labels(np.asarray([stamp]), zone)[0]
    return str(stamp)


_INTEGER = re.compile(r"^[+-]?\d+$")


def _id_order(keys):
    """The order of ids (N,) str: by value when all are integers (2 before 10; 02134 beside
    2134, as written), else as text."""
    if keys.size and all(_INTEGER.match(key) for key in keys):
        return np.array(sorted(range(len(keys)), key=lambda i: (int(keys[i]), keys[i])), dtype=np.int64)
    return np.argsort(keys, kind="stable")


def _some(ids, count=5):
    shown = listing(ids[:count])
    return shown + (f" and {len(ids) - count} more" if len(ids) > count else "")
