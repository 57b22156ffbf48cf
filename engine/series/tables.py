"""Arrow tables between the readers and the Series: column types made uniform (numbers
float64, the time column timestamps, text strings), the time column chosen, and one
float64 (T, C) array cut from the columns, with every problem located by file and line
(CSV) or row (other sources)."""
import json
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.series import csv_files, times, zones
from engine.series.buffers import numpy_values, text_array, true_mask
from engine.series.base import MISSING, DataError, Series, listing

# schema metadata of a table from read_table / as_table
SOURCE_KEY = b"bptt.source"        # the path, or "array", "pandas.DataFrame", ...
TIME_KEY = b"bptt.time_column"     # the time column's name, absent without one
CSV_KEY = b"bptt.csv"              # {"header": bool} when rows are the data lines of a CSV file



_MISSING = text_array(MISSING)
_NULL_TEXT = pa.nulls(1, pa.string())[0]
# text layouts of time stamps tried after ISO 8601 (day-first or month-first with "/" is
# ambiguous, so it is not guessed)
TIME_FORMATS = ("%Y/%m/%d", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y-%m-%d %H:%M", "%Y-%m",
                "%d.%m.%Y", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M")


def normalize(table, source, time_column=None, csv_header=None, text_columns=()):
    """A table with numeric columns float64 (integers, and text holding only numbers and
    missing tokens, converted), dictionary and boolean columns as text, the time column
    (named, or the first date/time column) as timestamps (a zone kept as the type's tz),
    the columns named in text_columns (such as ids) as text (as_text), and the metadata
    keys above."""
    names = [str(name) for name in table.column_names]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataError(f"{source}: repeated column names {', '.join(map(repr, repeated))}")
    text_columns = {str(name) for name in text_columns}
    table = pa.table([as_text(column) if name in text_columns else _uniform(column)
                      for name, column in zip(names, table.columns)], names=names)
    metadata = {SOURCE_KEY: str(source).encode()}
    if csv_header is not None:
        metadata[CSV_KEY] = json.dumps({"header": csv_header}).encode()
    table = table.replace_schema_metadata(metadata)
    time_name = _time_column(table, time_column, skip=text_columns)
    if time_name is not None:
        index = names.index(time_name)
        table = table.set_column(index, time_name, _as_timestamps(table, time_name))
        table = table.replace_schema_metadata({**metadata, TIME_KEY: time_name.encode()})
    return table


def _uniform(column):
    kind = column.type
    if pa.types.is_dictionary(kind):
        return _uniform(pc.cast(column, kind.value_type))
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind) \
            or pa.types.is_null(kind):
        return pc.cast(column, pa.float64(), safe=False)
    if pa.types.is_boolean(kind) or pa.types.is_time(kind):
        return pc.cast(column, pa.string())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        numbers = _text_as_numbers(column)
        return column if numbers is None else numbers
    return column


def as_text(column):
    """A column as text, each cell as written: text as it is, integers in decimal (all 64
    bits), floats holding whole numbers as integers (1.0 -> "1"), other types cast."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        return as_text(pc.cast(column, kind.value_type))
    if _is_text(kind):
        return column
    if pa.types.is_floating(kind):
        values = pc.cast(column, pa.float64())
        whole = pc.and_kleene(pc.equal(pc.floor(values), values), pc.less(pc.abs(values), 2.0 ** 53))
        if pc.all(whole).as_py() in (True, None):
            return pc.cast(pc.cast(values, pa.int64()), pa.string())
    return pc.cast(column, pa.string())


def _text_as_numbers(column):
    """A text column as float64 when every cell is a number or missing, else None."""
    try:
        return pc.cast(column, pa.float64())               # the common case: clean numbers
    except pa.ArrowInvalid:
        pass
    trimmed, missing = _cleaned(column)
    try:
        return pc.cast(pc.if_else(missing, _NULL_TEXT, trimmed), pa.float64())
    except pa.ArrowInvalid:
        return None


def _cleaned(column):
    """(cells without surrounding whitespace, mask of missing cells) of a text column."""
    trimmed = pc.utf8_trim_whitespace(column)
    missing = pc.or_(pc.is_null(trimmed), pc.is_in(pc.utf8_lower(trimmed), value_set=_MISSING))
    return trimmed, missing


def _time_column(table, requested, skip=()):
    """The name of the time column: `requested` (checked), else the first column (not in
    `skip`) of dates or times, or of text whose first cells parse as such (see
    _parse_times; a later cell that does not is then an error); False: none."""
    if requested is False:
        return None
    if requested is None:
        for name, column in zip(table.column_names, table.columns):
            if name not in skip and (_is_temporal(column.type) or (
                    _is_text(column.type) and _parse_times(column.slice(0, 20)) is not None)):
                return name
        return None
    requested = str(requested)
    if requested not in table.column_names:
        raise DataError(f"time column: unknown column {requested!r} in {source_of(table)}; "
                        f"available columns: {listing(table.column_names)}")
    return requested


def _is_temporal(kind):
    return pa.types.is_timestamp(kind) or pa.types.is_date(kind)


def _is_text(kind):
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _parse_times(column):
    """A text column as timestamps, if all of it parses as ISO 8601 or one of TIME_FORMATS
    (blank cells are missing times), else None."""
    trimmed = pc.utf8_trim_whitespace(column)
    blank = pc.invert(pc.cast(pc.utf8_length(trimmed), pa.bool_()))
    trimmed = pc.if_else(blank, _NULL_TEXT, trimmed)
    if trimmed.null_count == len(trimmed):
        return None
    try:
        return pc.cast(trimmed, pa.timestamp("us"))
    except pa.ArrowInvalid:
        pass
    try:   # every stamp with a zone offset: UTC instants, the zone of the last one kept
        instants = pc.cast(trimmed, pa.timestamp("us", tz="UTC"))
        last = trimmed.drop_null()[-1].as_py()
        return pc.cast(instants, pa.timestamp("us", tz=zones.offset_of_text(last) or "UTC"))
    except pa.ArrowInvalid:
        pass
    for layout in TIME_FORMATS:
        try:
            return pc.strptime(trimmed, format=layout, unit="us")
        except pa.ArrowInvalid:
            continue
    return None


def _as_timestamps(table, name):
    """The column `name` as timestamps: dates and times as they are, text parsed."""
    column = table.column(name)
    if pa.types.is_timestamp(column.type):
        if column.type.tz is not None:
            zones.check(column.type.tz)   # a zone this machine knows
        return column
    if pa.types.is_date(column.type):
        return pc.cast(column, pa.timestamp("s"))
    if _is_text(column.type):
        parsed = _parse_times(column)
        if parsed is not None:
            return parsed
        trimmed = pc.utf8_trim_whitespace(column)
        mixed = _first_zone_change(trimmed)
        if mixed is not None:
            row, zoned = mixed
            raise DataError(f"{place(table, row)}, {label(table, name)}: the time column mixes stamps with "
                            f"and without a zone offset: {trimmed[row].as_py()!r} has "
                            f"{'one' if zoned else 'none'}, the stamps before it "
                            f"{'none' if zoned else 'one'}; write every stamp the same way")
        kind = pa.timestamp("us", tz="UTC" if pc.any(pc.match_substring_regex(trimmed, _ZONED)).as_py() else None)
        row = _first_failure(trimmed, lambda part: pc.cast(part, kind))
        raise DataError(f"{place(table, row)}, {label(table, name)}: not a date or time: "
                        f"{trimmed[row].as_py()!r}")
    raise DataError(f'time column "{name}" of {source_of(table)} holds {column.type} values, '
                    "not dates or times")


_ZONED = r"[T ]\d{1,2}:\d{2}(:\d{2}(\.\d*)?)?(Z|[+-]\d{2}:?\d{2})$"   # a stamp ending in a zone offset


def _first_zone_change(trimmed):
    """(row, zoned) of the first stamp written with a zone offset when the first one has
    none, or the reverse; None when all are written alike."""
    zoned = true_mask(pc.fill_null(pc.match_substring_regex(trimmed, _ZONED), False))
    present = true_mask(pc.is_valid(trimmed))
    rows = np.flatnonzero(present)
    if rows.size == 0:
        return None
    changed = rows[zoned[rows] != zoned[rows[0]]]
    return None if changed.size == 0 else (int(changed[0]), bool(zoned[changed[0]]))


def _first_failure(column, convert):
    """The first row of `column` that `convert` rejects (ArrowInvalid), by bisection."""
    start, length = 0, len(column)
    while length > 1:
        half = length // 2
        try:
            convert(column.slice(start, half))
            start, length = start + half, length - half
        except pa.ArrowInvalid:
            length = half
    return start


# ---------------------------------------------------------------- places in the source

def source_of(table):
    return _source(table.schema.metadata)


def csv_header_of(table):
    """Whether the CSV file of a table from read_table has a header line; None when the
    table does not come from a CSV file."""
    metadata = table.schema.metadata or {}
    return json.loads(metadata[CSV_KEY])["header"] if CSV_KEY in metadata else None


def time_column_of(table):
    """The name of the table's time column, or None."""
    name = (table.schema.metadata or {}).get(TIME_KEY)
    return None if name is None else name.decode()


def place(table, row):
    """Where row `row` (0-based) of a table from read_table / as_table is: "FILE, line N"
    for a CSV file, else "SOURCE, row N"."""
    metadata = table.schema.metadata or {}
    if CSV_KEY in metadata:
        return f"{source_of(table)}, line {csv_files.line_of_row(source_of(table), row)}"
    return f"{source_of(table)}, row {row}"


def label(table, name):
    """How a column is named in messages: 'column "temp"', or 'column 2' in a CSV file
    without a header (today's words)."""
    metadata = table.schema.metadata or {}
    if CSV_KEY in metadata and not json.loads(metadata[CSV_KEY])["header"]:
        return f"column {name}"
    return f'column "{name}"'


def bad_cell_message(table, name):
    """The message for the first non-numeric (or infinite) cell of column `name`."""
    column = table.column(name)
    if pa.types.is_floating(column.type):
        row = int(np.argmax(np.isinf(np.concatenate([numpy_values(chunk) for chunk in column.chunks]))))
        cell = _as_written(table, row, name) or str(column[row].as_py())
    elif _is_text(column.type):
        trimmed, missing = _cleaned(column)
        cleaned = pc.if_else(missing, _NULL_TEXT, trimmed)
        row = _first_failure(cleaned, lambda part: pc.cast(part, pa.float64()))
        cell = trimmed[row].as_py()
    else:
        row = int(np.argmax(true_mask(pc.is_valid(column))))
        cell = str(column[row].as_py())
    return f"{place(table, max(row, 0))}, {label(table, name)}: not a finite number: {cell!r}"


def _as_written(table, row, name):
    """The text of a cell in its CSV file (None for other sources): a float column holds
    "1e400" as inf, which the user never wrote."""
    if CSV_KEY not in (table.schema.metadata or {}):
        return None
    return csv_files.cell_of_row(source_of(table), row, name)


# ---------------------------------------------------------------- table -> Series

class CellProblems(Mapping):
    """Column name -> error message, each message built only when asked for (locating a
    line in a CSV file rescans it)."""

    def __init__(self, table, names):
        self._table, self._names = table, tuple(names)

    def __getitem__(self, name):
        if name not in self._names:
            raise KeyError(name)
        return bad_cell_message(self._table, name)

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)


def to_series(table):
    """A Series from a normalised table: the time column (checked to increase) as `time`,
    the other columns as values (T, C) float64 built column by column from the Arrow
    buffers; columns that are not all finite numbers are NaN there and noted in `invalid`.

    Memory: each column's Arrow buffers are let go once copied (if the caller holds no
    other reference to the table, as read_file does not), and the (T, C) array only becomes
    resident as it is filled, so the peak stays near the table's size, not twice it."""
    time_name = time_column_of(table)
    names = [name for name in table.column_names if name != time_name]
    if not names:
        raise DataError(f"{source_of(table)}: no columns of values besides the time column "
                        f'"{time_name}"')
    metadata, rows = table.schema.metadata, table.num_rows
    columns = dict(zip(table.column_names, table.columns))
    del table
    stamps = zone = None
    if time_name is not None:
        zone = _zone(columns[time_name])
        stamps = _times(_one_column_table(time_name, columns.pop(time_name), metadata), time_name)
        times.warn_gaps(stamps, zone, f'{_source(metadata)}, time column "{time_name}"')
    pool = pa.default_memory_pool()
    pool.release_unused()   # the reader's scratch buffers, kept by the allocator
    values = np.empty((rows, len(names)))
    problems = {}   # name -> column, kept to locate the bad cell when asked
    for index, name in enumerate(names):
        column = columns.pop(name)
        if not pa.types.is_floating(column.type):
            values[:, index] = np.nan
            problems[name] = column
        elif not _copied_finite(column, values[:, index]):
            problems[name] = column
        del column
        pool.release_unused()   # hand the column's buffers back before filling the next
    kept = pa.table(list(problems.values()), names=list(problems)).replace_schema_metadata(metadata)
    return Series(values, tuple(names), _source(metadata), CellProblems(kept, problems), stamps, time_name, zone)


def _zone(column):
    """The zone of a timestamp column (engine/series/zones.py), None without one."""
    return zones.check(column.type.tz) if pa.types.is_timestamp(column.type) else None


def _copied_finite(column, out):
    """Copy a float64 chunked column into out (T,) (NaN for nulls); True if no value is infinite."""
    start = 0
    for chunk in column.chunks:
        out[start:start + len(chunk)] = numpy_values(chunk)
        start += len(chunk)
    return not np.isinf(out).any()


def _one_column_table(name, column, metadata):
    return pa.table([column], names=[name]).replace_schema_metadata(metadata)


def _source(metadata):
    return (metadata or {}).get(SOURCE_KEY, b"table").decode()


def _times(table, name):
    """(T,) datetime64 of the time column, with no gap and strictly increasing."""
    column = table.column(name)
    if column.null_count:
        row = int(np.argmax(true_mask(pc.is_null(column))))
        raise DataError(f'{place(table, row)}: the time column "{name}" has no value')
    # the stored integers count units since 1970 in UTC, with or without a time zone
    stamps = np.concatenate([numpy_values(chunk) for chunk in column.chunks] or [np.zeros(0, np.int64)])
    stamps = stamps.view(f"datetime64[{column.type.unit}]")
    row = times.first_out_of_order(stamps)
    if row is not None:
        raise DataError(f'{place(table, row)}: the time column "{name}" must increase; '
                        f"{stamps[row]} does not come after {stamps[row - 1]} "
                        f"({place(table, row - 1).rsplit(', ', 1)[-1]}); sort the rows by time "
                        "(or read the file without a time column: --time-column none)")
    return stamps
