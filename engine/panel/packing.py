"""Packing many series end to end into B parallel streams, with resets (docs/data.md).

Series are placed longest first, each into the currently shortest stream; with `cut`, a
series longer than its share ceil(sum T_i / B) is first cut into contiguous pieces of
near-equal length, which go to different streams where possible. Each series (and piece)
starts with a reset: the state entering its first step is zero and no gradient crosses
into the previous one, so training on the packed streams equals training on each
series alone, without padding between series. Only the stream ends are padded (inputs
0, targets NaN, so the loss masks them).
"""
import math
from dataclasses import dataclass

import numpy as np

from engine.series import DataError


@dataclass(frozen=True, eq=False)
class Layout:
    """Where the rows of N series sit in `steps` x `streams` packed steps.

    lengths: (N,) rows per series. pieces: (P, 5) int64 rows (series, first_row,
    stop_row, stream, first_step): rows [first_row, stop_row) of the series occupy steps
    [first_step, first_step + stop_row - first_row) of the stream."""
    lengths: tuple
    pieces: np.ndarray
    steps: int
    streams: int

    @property
    def resets(self):
        """(T, B) bool: True at the first step of every series and piece."""
        resets = np.zeros((self.steps, self.streams), dtype=bool)
        resets[self.pieces[:, 4], self.pieces[:, 3]] = True
        return resets

    def origin(self):
        """(series, row): two (T, B) int64 maps from each packed step to the series index
        and row it holds, -1 for padding."""
        series = np.full((self.steps, self.streams), -1, dtype=np.int64)
        row = np.full((self.steps, self.streams), -1, dtype=np.int64)
        for index, first, stop, stream, step in self.pieces:
            series[step:step + stop - first, stream] = index
            row[step:step + stop - first, stream] = np.arange(first, stop)
        return series, row

    def pack(self, arrays, fill=0.0, dtype=np.float64):
        """N arrays (T_i, F) (or (T_i,)) -> (T, B, F) (or (T, B)), padding `fill`."""
        if len(arrays) != len(self.lengths):
            raise ValueError(f"expected {len(self.lengths)} arrays, one per series; got {len(arrays)}")
        trailing = np.shape(arrays[0])[1:]
        packed = np.full((self.steps, self.streams) + trailing, fill, dtype=dtype)
        for index, first, stop, stream, step in self.pieces:
            packed[step:step + stop - first, stream] = arrays[index][first:stop]
        return packed

    def unpack(self, packed):
        """(T, B, F) packed values -> N arrays (T_i, F) float64, NaN for rows not packed."""
        packed = np.asarray(packed)
        arrays = [np.full((length,) + packed.shape[2:], np.nan) for length in self.lengths]
        for index, first, stop, stream, step in self.pieces:
            arrays[index][first:stop] = packed[step:step + stop - first, stream]
        return arrays


def pack_layout(lengths, streams, cut=True):
    """The Layout of series of `lengths` rows in `streams` streams (see the module doc).
    Without `cut` every series stays whole (the streams then last at least as long as
    the longest series). Series of length 0 are left out."""
    lengths = tuple(int(length) for length in lengths)
    if isinstance(streams, bool) or not isinstance(streams, (int, np.integer)) or streams < 1:
        raise DataError(f"streams must be an integer >= 1; got {streams!r}")
    if not lengths or sum(lengths) == 0:
        raise DataError("there are no series rows to pack")
    share = math.ceil(sum(lengths) / streams)
    pieces = []   # (length, series, first_row, stop_row)
    for index, length in enumerate(lengths):
        count = math.ceil(length / share) if cut else 1
        bounds = np.linspace(0, length, count + 1).round().astype(np.int64) if length else []
        pieces += [(b - a, index, a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    pieces.sort(key=lambda piece: (-piece[0], piece[1], piece[2]))   # longest first, stable
    filled = np.zeros(streams, dtype=np.int64)
    placed = np.empty((len(pieces), 5), dtype=np.int64)
    used = {}   # series -> streams holding a piece of it
    for k, (length, index, first, stop) in enumerate(pieces):
        candidates = filled
        if index in used and len(used[index]) < streams:   # keep a series' pieces apart
            candidates = filled.copy()
            candidates[list(used[index])] = np.iinfo(np.int64).max
        stream = int(np.argmin(candidates))               # the shortest, lowest index first
        placed[k] = (index, first, stop, stream, filled[stream])
        filled[stream] += length
        used.setdefault(index, set()).add(stream)
    return Layout(lengths, placed, int(filled.max()), int(streams))
