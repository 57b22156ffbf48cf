"""Pieces shared by the cell kernels."""
import numba
import numpy as np

from kernels.config import JIT_OPTIONS, inline_jit, jit
from kernels.gemm import gemm


@jit
def gate_weight_gradients(dweight_ih, dweight_hh, dbias_ih, dbias_hh, dgates, h, x):
    """Whole-chunk GEMMs after the time loop (RNN and LSTM, whose input- and hidden-side
    pre-activation gradients are the same array; the GRU arranges its own).

    dgates: (T, B, G*H). h: (T+1, B, H) hidden states, row t the h_{t-1} of step t.
    x: (T, B, I). Overwrites dweight_ih (GH, I), dweight_hh (GH, H), both biases (GH,)."""
    T, B, I = x.shape
    H = h.shape[2]
    dgates_2d = dgates.reshape(T * B, dgates.shape[2])
    gemm(dgates_2d.T, x.reshape(T * B, I), dweight_ih)  # (GH, T*B) x (T*B, I)
    gemm(dgates_2d.T, h[:T].reshape(T * B, H), dweight_hh)  # (GH, T*B) x (T*B, H)
    column_sums(dbias_ih, dgates_2d)
    for row in range(dbias_ih.shape[0]):  # a loop, not dbias_hh[:] = dbias_ih: the slice copy
        dbias_hh[row] = dbias_ih[row]      # compiles Numba's shape-error text, seconds of cold start


@inline_jit
def zero_reset_rows(rows, resets_t):
    """Zero row b of rows (B, N) where resets_t[b] (B,) is True: streams that start a new
    series at this step. Per step it reads B booleans; it writes only the reset rows."""
    for b in range(rows.shape[0]):
        if resets_t[b]:
            zero_fill(rows[b])


@inline_jit
def zero_fill(row):
    """row (N,) = 0, as a loop: a slice assignment (row[:] = 0, a[i, lo:hi] = 0) compiles
    Numba's general set-slice code, about 0.3 s of cold start at each site
    (python -m bench.compile_profile). Whole C-contiguous arrays pass as a.reshape(-1)."""
    for j in range(row.shape[0]):
        row[j] = 0


@inline_jit
def add_into(out, other):
    """out (N,) += other (N,), as a loop (an array expression compiles Numba's
    broadcasting code, and in a parallel kernel a parallel region of its own)."""
    for j in range(out.shape[0]):
        out[j] += other[j]


@inline_jit
def ordered_sum(values):
    """Sum of values (N,) in index order (values.sum() in a parallel kernel becomes a
    parallel reduction: compiled separately, and its order is the scheduler's)."""
    total = values[0]
    for j in range(1, values.shape[0]):
        total += values[j]
    return total


@jit
def zero_reset_states(h, resets):
    """Zero h[t, b] (T, B, H) where resets[t, b] (T, B): after it, row t holds the state
    entering step t (no longer the output of step t-1), which the whole-chunk dW_hh GEMM
    reads as h_prev."""
    for t in range(resets.shape[0]):
        zero_reset_rows(h[t], resets[t])


@jit
def column_sums(out, matrix):
    """out: (N,) = sum over the rows of matrix (M, N)."""
    zero_fill(out)
    for row in range(matrix.shape[0]):
        for column in range(matrix.shape[1]):
            out[column] += matrix[row, column]


@numba.njit(fastmath={"reassoc", "contract"}, **JIT_OPTIONS)
def squared_norm(matrix):
    """Sum of squares of a 2-D array, accumulated in float64 (reassociation lets it vectorise)."""
    total = 0.0
    for row in range(matrix.shape[0]):
        for column in range(matrix.shape[1]):
            total += np.float64(matrix[row, column]) ** 2
    return total


@jit
def combine_scaled(out, out_scale, other, other_scale):
    """out (P,) = out * out_scale + other * other_scale, in out's dtype."""
    a = out.dtype.type(out_scale)
    b = out.dtype.type(other_scale)
    for index in range(out.shape[0]):
        out[index] = out[index] * a + other[index] * b
