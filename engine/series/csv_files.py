"""CSV files (optionally .gz / .bz2 / .zst) as pyarrow Tables, read by pyarrow's
multi-threaded reader. Python only looks at the first lines (delimiter, header) and, when
something is wrong, rescans the file to name the line; the cells themselves never become
Python objects.

The rules (docs/data.md): delimiter , ; tab or runs of whitespace, detected from the
first lines; a header when the first line holds text and no number; lines starting with #
skipped anywhere; empty / NA / NaN / null cells missing (any case); quoted cells the csv way;
in a one-column file a blank line between values is a missing value.
"""
import csv
import itertools
import re

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from engine.series.base import MISSING, DataError
from engine.series.buffers import true_mask

COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}
SAMPLE_LINES = 20                  # content lines the delimiter and header are judged on
_SAMPLE_LIMIT = 1 << 22            # read at most 4 MiB looking for them
_CHUNK = 1 << 20
# every spelling of the missing tokens: "", "na", "NA", "Na", "nA", "nan", ...
NULL_VALUES = sorted({"".join(letters) for token in MISSING
                      for letters in itertools.product(*({c.lower(), c.upper()} for c in token))})
_COMMENT = re.compile(rb"(?m)^[ \t]*#[^\n]*(?:\n|\Z)")
_RUNS = re.compile(rb"[ \t]+")
_LINE_ENDS = re.compile(rb"(?m)^[ \t]+|[ \t]+(?=\r?$)")
_CONVERSION = re.compile(r"In CSV column #(\d+): CSV conversion error")
_SINGLE = "\x1f"                   # "delimiter" of a one-column file: never splits a line


class Layout:
    """What the first lines say: delimiter ("," ";" "\t" " " or None for one column),
    column names, whether the first content line is a header, and where the data rows
    begin: after `skip_lines` physical lines, at byte `offset` (past any byte-order mark);
    the column types are inferred from `head`."""

    def __init__(self, delimiter, names, has_header, skip_lines, offset, head):
        self.delimiter, self.names, self.has_header = delimiter, names, has_header
        self.skip_lines, self.offset = skip_lines, offset
        self.head = head    # the first lines of the file, whole, as read (bytes)


def open_stream(path):
    """The file's bytes, decompressed by extension."""
    compression = COMPRESSION.get(_extension(path))
    try:
        return pa.input_stream(path, compression=compression)
    except (OSError, pa.ArrowException) as error:
        raise DataError(f"{path}: cannot read the file ({first_line(error)})") from None


def read_csv(path, text_columns=()):
    """The file as a pyarrow Table (a column with a non-numeric cell stays text;
    engine/series/tables.py converts) and its Layout. text_columns: columns read as text
    whatever they hold (ids: 02134 keeps its zero, 2^64 - 1 its digits).

    pyarrow reads the file itself, skipping blank lines and the comment lines it finds
    ragged; only a whitespace-delimited file, or one with a comment line as wide as the
    data (found afterwards in the first column), goes through the cleaning stream."""
    layout = sniff(path)
    cleaned = layout.delimiter == " "
    text = [name for name in layout.names if name in set(map(str, text_columns))]
    table = _read_typed(path, layout, cleaned, text)
    if layout.delimiter is None:
        table = _trim_blank_ends(_without_comment_rows(table))
    elif not cleaned and _has_comment_rows(table):
        table = _read_typed(path, layout, True, text)
    if table.num_rows == 0:
        raise DataError(f"{path}: the file holds a header line but no data rows")
    return _drop_empty_trailing_column(table, layout), layout


def _read_typed(path, layout, cleaned, text=()):
    """The whole file with the column types pyarrow infers from the first block (numbers as
    float64), the columns `text` and each column that later fails to convert read as
    text. Giving the types saves pyarrow's inference of every block: a third less time
    and memory."""
    first_block = _first_block_types(path, layout, cleaned)
    types = None if first_block is None else {name: _wanted(kind) for name, kind in zip(layout.names, first_block)}
    if text:
        types = {**(types or {}), **{name: pa.string() for name in text}}
    while True:
        try:
            return _read(path, layout, cleaned, types)
        except _TextColumn as column:
            types[layout.names[column.index]] = pa.string()


def _wanted(kind):
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind):
        return pa.float64()
    if pa.types.is_date(kind) or (pa.types.is_timestamp(kind) and kind.tz is None):
        return kind
    return pa.string()   # stamps with a zone offset too: engine/series/tables.py keeps the offset


class _TextColumn(Exception):
    """pyarrow could not convert column `index` to the type of the first block."""

    def __init__(self, index):
        super().__init__(index)
        self.index = index


def _options(layout, cleaned, types):
    single = layout.delimiter is None
    read_options = pacsv.ReadOptions(column_names=layout.names, use_threads=True, block_size=_CHUNK,
                                     skip_rows=0 if cleaned else layout.skip_lines)
    parse_options = pacsv.ParseOptions(delimiter=_SINGLE if single else layout.delimiter,
                                       quote_char=False if single else '"',
                                       ignore_empty_lines=not single,
                                       invalid_row_handler=_skip_blank_or_comment)
    convert_options = pacsv.ConvertOptions(
        null_values=NULL_VALUES, strings_can_be_null=not single, true_values=[], false_values=[],
        column_types={layout.names[0]: pa.string()} if single else types)
    return read_options, parse_options, convert_options


def _first_block_types(path, layout, cleaned):
    """The column types pyarrow infers from the lines sniff read (layout.head), or None
    (pyarrow infers every block) when those lines hold no data row."""
    head = pa.BufferReader(layout.head)
    read_options, parse_options, convert_options = _options(layout, cleaned, None)
    read_options.use_threads = False
    try:
        return pacsv.read_csv(_Cleaned(head, layout) if cleaned else head, read_options,
                              parse_options, convert_options).schema.types
    except pa.ArrowInvalid as error:
        if "Empty CSV file" in str(error):
            return None
        raise _read_error(path, error) from None


def _read(path, layout, cleaned, types):
    with open_stream(path) as raw:
        try:
            return pacsv.read_csv(_Cleaned(raw, layout) if cleaned else raw,
                                  *_options(layout, cleaned, types))
        except pa.ArrowInvalid as error:
            text_column = _CONVERSION.search(str(error))
            if text_column:
                raise _TextColumn(int(text_column.group(1))) from None
            raise _read_error(path, error) from None
        except (OSError, pa.ArrowException) as error:
            raise DataError(f"{path}: cannot read the file ({first_line(error)})") from None


def _read_error(path, error):
    if "Empty CSV file" in str(error):
        return DataError(f"{path}: the file holds a header line but no data rows")
    return _parse_error(path, error)


def _comment_rows(table):
    """Arrow bool per row: the first cell is text starting with # (a comment line), or None
    when the first column is not text."""
    column = table.column(0)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return None
    return pc.starts_with(pc.utf8_ltrim_whitespace(column), "#")


def _has_comment_rows(table):
    comments = _comment_rows(table)
    return comments is not None and bool(pc.any(comments).as_py())


def _without_comment_rows(table):
    """A one-column table (text, no nulls) without its comment lines."""
    return table.filter(pc.invert(_comment_rows(table))) if _has_comment_rows(table) else table


def sniff(path):
    """The Layout from the first content lines (today's rules, unchanged)."""
    head, lines = _sample(path)
    content = [(start, text) for start, text in lines if text.strip() and not text.lstrip().startswith("#")]
    if not content:
        raise DataError(f"{path}: the file holds no data")
    delimiter = _detect_delimiter([text for _, text in content[:SAMPLE_LINES]])
    first = [cell.strip() for cell in split(content[0][1], delimiter)]
    # a header: some text and no number or missing-value token (unnamed columns allowed)
    has_header = any(first) and all(cell == "" or not _is_value(cell) for cell in first)
    names = [(cell or str(index)) if has_header else str(index) for index, cell in enumerate(first)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataError(f"{path}: repeated column names {', '.join(map(repr, repeated))}")
    first_index = next(index for index, (start, _) in enumerate(lines) if start == content[0][0])
    skip_lines = first_index + int(has_header)
    if skip_lines >= len(lines):
        raise DataError(f"{path}: the file holds a header line but no data rows")
    offset = lines[skip_lines][0] if has_header else lines[0][0]   # past a byte-order mark
    return Layout(delimiter, names, has_header, skip_lines, offset, head)


def _sample(path):
    """The first lines of the file (bytes, whole lines) and their (byte offset, text),
    enough to hold SAMPLE_LINES content lines."""
    with open_stream(path) as stream:
        data = b""
        while len(data) < _SAMPLE_LIMIT:
            chunk = _read_block(stream, _CHUNK // 16, path)
            data += chunk
            if not chunk or data.count(b"\n") > 4 * SAMPLE_LINES:
                break
    if b"\x00" in data:
        raise DataError(f"{path}: cannot read the file as UTF-8 text (it holds NUL bytes: a binary file?)")
    if chunk:   # more follows: keep whole lines only
        data = data[:data.rfind(b"\n") + 1] or data
    lines = []
    start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    for raw in data[start:].split(b"\n"):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: cannot read the file as UTF-8 text ({error})") from None
        lines.append((start, text.rstrip("\r")))
        start += len(raw) + 1
    return data, lines


def split(line, delimiter):
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
        widths = [len(split(line, delimiter)) for line in sample]
        score = (len(set(widths)) == 1, widths[0])
        if widths[0] > 1 and score > best_score:
            best, best_score = delimiter, score
    return best


def _is_value(cell):
    """A number (finite) or a missing-value token."""
    if cell.strip().lower() in MISSING:
        return True
    try:
        return abs(float(cell)) != float("inf")
    except ValueError:
        return False


class _Cleaned:
    """A read-only binary stream over the data rows of a CSV file: the bytes before
    layout.offset (comments, header) skipped, comment lines removed and, for a whitespace-
    delimited file, runs of blanks turned into one space. Works on whole lines."""

    def __init__(self, raw, layout):
        self._raw, self._layout = raw, layout
        self._carry = b""
        self._skip = layout.offset
        self._buffer = b""
        self._done = False
        self.closed = False

    def readable(self):
        return True

    def seekable(self):
        return False

    def close(self):
        self.closed = True

    def read(self, size=-1):
        while not self._done and (size < 0 or len(self._buffer) < size):
            self._buffer += self._next_lines()
        if size < 0:
            size = len(self._buffer)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def _next_lines(self):
        chunk = self._raw.read(_CHUNK)
        end_of_file = not chunk
        if self._skip:
            dropped = min(self._skip, len(chunk))
            chunk, self._skip = chunk[dropped:], self._skip - dropped
        data = self._carry + chunk
        if end_of_file:
            self._done, lines, self._carry = True, data, b""
        else:
            end = data.rfind(b"\n") + 1
            lines, self._carry = data[:end], data[end:]
        if b"#" in lines:
            lines = _COMMENT.sub(b"", lines)
        if self._layout.delimiter == " ":
            lines = _RUNS.sub(b" ", _LINE_ENDS.sub(b"", lines))
        return lines


def _skip_blank_or_comment(row):
    """pyarrow's callback for a row of the wrong width: blank and comment lines are skipped."""
    text = row.text.strip()
    return "skip" if text == "" or text.startswith("#") else "error"


def _trim_blank_ends(table):
    """A one-column table read as text without its leading and trailing blank lines."""
    lengths = pc.utf8_length(pc.utf8_trim_whitespace(table.column(0)))
    rows = true_mask(pc.cast(lengths, pa.bool_())).nonzero()[0]
    if len(rows) == 0:
        return table.slice(0, 0)
    return table.slice(int(rows[0]), int(rows[-1]) - int(rows[0]) + 1)


def _drop_empty_trailing_column(table, layout):
    """Lines that all end with a delimiter make an unnamed last column without a value: drop it."""
    last = table.num_columns - 1
    unnamed = not layout.has_header or layout.names[last] == str(last)
    if last > 0 and unnamed and table.column(last).null_count == table.num_rows:
        return table.remove_column(last)
    return table


def _parse_error(path, error):
    """A DataError for pyarrow's parse error: the first ragged line, found by rescanning."""
    message = first_line(error)
    if "invalid UTF8" in message or "UTF-8" in message:
        return DataError(f"{path}: cannot read the file as UTF-8 text ({message})")
    if "Expected" in message and "columns" in message:
        layout = sniff(path)
        for number, line in data_lines(path, layout):
            cells = split(line, layout.delimiter)
            if len(cells) != len(layout.names):
                return DataError(f"{path}, line {number}: expected {len(layout.names)} cells like "
                                 f"the first line, found {len(cells)}")
    return DataError(f"{path}: cannot read the file as CSV ({message})")


def data_lines(path, layout=None):
    """(line number, text) of every data row, in order, as the reader counts them (a rescan
    in Python, only to name the line of a problem)."""
    layout = layout or sniff(path)
    single = layout.delimiter is None
    skip_header = layout.has_header
    started = False
    pending = []            # blank lines of a one-column file, rows only if a value follows
    for number, line in enumerate(_physical_lines(path), 1):
        line = line.rstrip("\r").lstrip("\ufeff") if number == 1 else line.rstrip("\r")
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        if not stripped:
            if single and started:
                pending.append((number, line))
            continue
        if skip_header:
            skip_header = False
            continue
        started = True
        yield from pending
        pending = []
        yield number, line


def _read_block(stream, size, path):
    """Up to `size` bytes; a corrupt compressed file is a DataError naming it."""
    try:
        return stream.read(size)
    except (OSError, pa.ArrowException) as error:
        raise DataError(f"{path}: cannot read the file ({first_line(error)})") from None


def _physical_lines(path):
    """The decoded lines of the file, read a block at a time."""
    with open_stream(path) as stream:
        carry = b""
        while True:
            block = _read_block(stream, _CHUNK, path)
            if not block:
                break
            lines = (carry + block).split(b"\n")
            carry = lines.pop()
            for line in lines:
                yield line.decode("utf-8", errors="replace")
        yield carry.decode("utf-8", errors="replace")


def cell_of_row(path, row, name):
    """The cell of column `name` in data row `row` (0-based) of a CSV file, stripped, as
    written in the file (a number too large for a float stays "1e400"); None if not found."""
    layout = sniff(path)
    if name not in layout.names:
        return None
    for index, (_, line) in enumerate(data_lines(path, layout)):
        if index == row:
            cells = split(line, layout.delimiter)
            position = layout.names.index(name)
            return cells[position].strip() if position < len(cells) else None
    return None


def line_of_row(path, row):
    """The line number of data row `row` (0-based) of a CSV file."""
    for index, (number, _) in enumerate(data_lines(path)):
        if index == row:
            return number
    return None


def _extension(path):
    lower = path.lower()
    return "." + lower.rsplit(".", 1)[-1] if "." in lower.rsplit("/", 1)[-1] else ""


def first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
