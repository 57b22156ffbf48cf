"""Pieces shared by the cell kernels."""
import numba
import numpy as np

from kernels.config import JIT_OPTIONS, jit


@jit
def gate_weight_gradients(dx, dweight_ih, dweight_hh, dbias_ih, dbias_hh,
                          dgates_input, dgates_hidden, h, x, weight_ih, need_dx):
    """Whole-chunk GEMMs after the time loop, shared by the three cells.

    dgates_input: (T, B, G*H), gradient of the pre-activations fed by W_ih x + b_ih.
    dgates_hidden: (T, B, G*H), same for W_hh h + b_hh (the same array for RNN and LSTM).
    h: (T+1, B, H) hidden states, row t is the h_{t-1} of step t."""
    T, B, I = x.shape
    H = h.shape[2]
    GH = dgates_input.shape[2]
    dgi = dgates_input.reshape(T * B, GH)
    dgh = dgates_hidden.reshape(T * B, GH)
    np.dot(dgi.T, x.reshape(T * B, I), dweight_ih)  # (GH, T*B) x (T*B, I)
    np.dot(dgh.T, h[:T].reshape(T * B, H), dweight_hh)  # (GH, T*B) x (T*B, H)
    column_sums(dbias_ih, dgi)
    column_sums(dbias_hh, dgh)
    if need_dx:
        np.dot(dgi, weight_ih, dx.reshape(T * B, I))  # (T*B, GH) x (GH, I)


@jit
def column_sums(out, matrix):
    """out: (N,) = sum over the rows of matrix (M, N)."""
    out[:] = 0
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
