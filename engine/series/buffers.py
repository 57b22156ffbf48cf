"""Arrow arrays to and from numpy through their buffers.

pyarrow imports pandas (when installed) as soon as it converts to or from Python or numpy
objects (to_numpy, pa.array, Python scalars in compute calls); these helpers go through the
buffers instead, so reading never imports pandas unless it is given a pandas object."""
import numpy as np
import pyarrow as pa


def numpy_values(array):
    """A fixed-width Arrow array (float64, int64, timestamp) as a numpy vector of its
    physical type: a read-only view of the buffer, or a copy with NaN at the nulls of a
    float column (elsewhere nulls are arbitrary)."""
    width = array.type.bit_width // 8
    dtype = np.float64 if pa.types.is_floating(array.type) else np.int64
    values = np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * width)
    if array.null_count and dtype is np.float64:
        values = np.where(valid_mask(array), values, np.nan)
    return values


def valid_mask(array):
    """(len,) bool numpy: True where the Arrow array holds a value."""
    if array.null_count == 0:
        return np.ones(len(array), dtype=bool)
    return _bits(array.buffers()[0], array.offset, len(array))


def true_mask(array):
    """(len,) bool numpy of a boolean Arrow array or chunked array, null read as False."""
    chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
    masks = [_bits(chunk.buffers()[1], chunk.offset, len(chunk)) & valid_mask(chunk) for chunk in chunks]
    return np.concatenate(masks) if masks else np.zeros(0, dtype=bool)


def _bits(buffer, offset, length):
    bits = np.unpackbits(np.frombuffer(buffer, dtype=np.uint8), bitorder="little")
    return bits[offset:offset + length].astype(bool)


def arrow_floats(values):
    """A contiguous float64 numpy vector as an Arrow array (no copy, no pandas)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    return pa.Array.from_buffers(pa.float64(), len(values), [None, pa.py_buffer(values)])


def text_array(strings):
    """A tuple of str as an Arrow string array."""
    data = [text.encode() for text in strings]
    offsets = np.cumsum([0] + [len(item) for item in data]).astype(np.int32)
    return pa.Array.from_buffers(pa.string(), len(data), [None, pa.py_buffer(offsets),
                                                          pa.py_buffer(b"".join(data))])
