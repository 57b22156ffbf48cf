"""What a sweep was started on, kept in its folder (data.json) so that --resume refuses
other data: a resumed sweep on another file would mix trials of two data sets in
results.csv and compare losses that do not compare.

The record: the file (resolved path, size, modification time, SHA-256 of its bytes) when
the data came from one, or the files of a directory or glob panel (each one's name, size,
time and SHA-256); the data as read (its columns, rows, for a panel its series ids, and a
SHA-256 of its values, names, ids and time stamps, which covers in-memory data and how a
file was read: --key, --time-column, --id-column, --series-columns), and the data options
(targets, inputs, streams, validation tail, ...). Same bytes and options are the same
data: a copy, a moved or a touched file resumes; the path and time are kept to say which
file it was.
"""
import datetime
import hashlib
import json
import os

import numpy as np

from engine.files import atomic_write, is_file_pattern, listed_files
from engine.panel import Panel

FILE_NAME = "data.json"
_BLOCK = 1 << 20


def identity(source, data, data_options):
    """The record of the data a sweep runs on. source: what the caller gave (a path, a
    directory or glob of files, a Series, an array, ...); data: it as read (a Series or a
    Panel); data_options: train_series' data options."""
    path = source_path(source)
    file = _file_record(path, os.path.realpath(path)) if path is not None and os.path.isfile(path) else None
    files = None
    if path is not None and is_file_pattern(path):   # a panel of files: each one by name
        files = [_file_record(member, os.path.basename(member)) for member in listed_files(path)]
    series = data.series if isinstance(data, Panel) else (data,)
    read = {"columns": list(map(str, series[0].names)), "rows": int(sum(len(one.values) for one in series)),
            "sha256": _data_sha256(data)}
    if isinstance(data, Panel):
        read["ids"] = len(data.ids)
    return {"file": file, **({"files": files} if files is not None else {}), "source": str(data.source),
            "series": read, "data_options": json.loads(json.dumps(data_options, default=str))}


def _file_record(path, name):
    status = os.stat(path)
    return {"path": name, "size": status.st_size,
            "modified": datetime.datetime.fromtimestamp(status.st_mtime, datetime.timezone.utc).isoformat(),
            "sha256": _file_sha256(path)}


def source_path(source):
    """The file, directory or glob pattern the data came from, or None (a demo, an array,
    a table)."""
    path = source if isinstance(source, (str, os.PathLike)) else getattr(source, "source", None)
    path = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    return path if path is not None and (os.path.isfile(path) or is_file_pattern(path)) else None


def differences(stored, current):
    """What differs between two records, as phrases for one error line ([] if the same data)."""
    found = []
    old_file, new_file = stored.get("file"), current.get("file")
    if (old_file is None) != (new_file is None):
        found.append(f"the source ({_describe(stored)} then, {_describe(current)} now)")
    elif old_file is not None and old_file.get("sha256") != new_file["sha256"]:
        found.append(f"the file's content ({old_file.get('path')}: {old_file.get('size')} bytes modified "
                     f"{old_file.get('modified')}; now {new_file['path']}: {new_file['size']} bytes modified "
                     f"{new_file['modified']})")
    found += _files_differences(stored.get("files"), current.get("files"))
    old_series, new_series = stored.get("series") or {}, current["series"]
    if not found and old_series.get("sha256") != new_series["sha256"]:
        what = ("columns" if old_series.get("columns") != new_series["columns"] else
                "rows" if old_series.get("rows") != new_series["rows"] else "values")
        found.append(f"the series read ({what} differ: {_describe(stored)} then, {_describe(current)} now)")
    old_options, new_options = stored.get("data_options") or {}, current["data_options"]
    for name in sorted(set(old_options) | set(new_options)):
        if old_options.get(name) != new_options.get(name):
            found.append(f"--{name.replace('_', '-')} ({old_options.get(name)!r} then, "
                         f"{new_options.get(name)!r} now)")
    return found


def _files_differences(stored, current):
    """The files of a panel that differ: other names, or the first file whose content changed."""
    if stored is None and current is None:
        return []
    if stored is None or current is None:
        return [f"the source ({'files' if stored else 'not files'} then, {'files' if current else 'not files'} now)"]
    old_names, new_names = [f.get("path") for f in stored], [f["path"] for f in current]
    if old_names != new_names:
        gone, added = sorted(set(old_names) - set(new_names)), sorted(set(new_names) - set(old_names))
        return [f"the panel's files ({len(old_names)} then, {len(new_names)} now"
                + (f"; gone: {', '.join(gone[:3])}" if gone else "") + (f"; new: {', '.join(added[:3])}" if added else "")
                + ")"]
    changed = [new for old, new in zip(stored, current) if old.get("sha256") != new["sha256"]]
    return [f"the content of {len(changed)} of the panel's files (first {changed[0]['path']}: now "
            f"{changed[0]['size']} bytes modified {changed[0]['modified']})"] if changed else []


def check_same(output_dir, current):
    """Raise ValueError unless the sweep in output_dir was started on `current`'s data. A
    folder without the record (a sweep of an earlier version) is taken as it is."""
    path = os.path.join(output_dir, FILE_NAME)
    try:
        with open(path, encoding="utf-8") as file:
            stored = json.load(file)
    except FileNotFoundError:
        return
    except (OSError, ValueError) as error:
        raise ValueError(f"--resume: {path} cannot be read ({error}); it records the data this sweep "
                         "was started on") from None
    if not isinstance(stored, dict):
        raise ValueError(f"--resume: {path} is not a record of the data this sweep was started on")
    found = differences(stored, current)
    if found:
        raise ValueError(f"--resume: the sweep in {output_dir} was started on other data: "
                         f"{'; '.join(found)} differ; resume on the same data and data options, or use a new -o")


def write(output_dir, record):
    with atomic_write(os.path.join(output_dir, FILE_NAME), "w") as file:
        json.dump(record, file, indent=2)
        file.write("\n")


def _describe(record):
    file = record.get("file")
    series = record.get("series") or {}
    where = file["path"] if file else record.get("source", "?")
    return f"{where}, {series.get('rows')} rows of {', '.join(series.get('columns') or [])}"


def _file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _data_sha256(data):
    """A hash of the data as read: a Series' values, names and stamps; a panel's, series by
    series with their ids."""
    digest = hashlib.sha256()
    if isinstance(data, Panel):
        for series_id, one, times in zip(data.ids, data.series, data.times):
            digest.update(json.dumps(series_id).encode())
            _add_series(digest, one, times)
    else:
        _add_series(digest, data, data.time)
    return digest.hexdigest()


def _add_series(digest, series, time):
    """The values (T, C) float64, the column names and the time stamps (or None) of one series."""
    values = np.ascontiguousarray(series.values, dtype=np.float64)
    digest.update(repr(values.shape).encode())
    digest.update(memoryview(values).cast("B"))  # no copy of the values
    digest.update(json.dumps(list(map(str, series.names))).encode())
    if time is not None:
        time = np.asarray(time)
        digest.update(str(time.dtype).encode())
        if time.dtype.kind == "M":
            digest.update(memoryview(np.ascontiguousarray(time).view(np.int64)).cast("B"))
        else:  # stamps kept as objects (with their zones)
            digest.update(json.dumps(list(map(str, time))).encode())
