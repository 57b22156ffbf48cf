"""Pieces of the hidden-block kernels (the `split` plan, engine/split.py).

In that plan n threads share one chunk of all B streams: thread k owns the hidden units
k*Hb .. (k+1)*Hb - 1 (Hb = H / n) of every layer. The gate columns of a layer are kept in
block order, block k holding gate 0, 1, .. G-1 of its units (G*Hb columns), and stored
block by block: gates (n, T, B, G*Hb), so one thread's part of every per-step product
and of the element-wise pass is contiguous (the element-wise pass ran at half speed on
blocks strided within (T, B, GH) rows, measured here). Per step,
each thread computes its block of the recurrent GEMM and of the element-wise pass, and
for backward its own partial dL/dh_{t-1} (B, H) over its gate columns; the threads meet
once per step (the end of a prange), after which each sums the n partials of its own
units. Every sum has a fixed order, so the result depends on n, not on scheduling.
"""
import numba
import numpy as np

from kernels.common import zero_fill
from kernels.config import inline_jit, jit, parallel_jit


@inline_jit
def sum_partials(out, partials, lo):
    """out (B, Hb) = sum over j of partials[j][:, lo:lo+Hb], partials (n, B, H), in j order."""
    for b in range(out.shape[0]):
        for u in range(out.shape[1]):
            out[b, u] = partials[0, b, lo + u]
        for j in range(1, partials.shape[0]):
            for u in range(out.shape[1]):
                out[b, u] += partials[j, b, lo + u]


@inline_jit
def from_above(dh, above_grad, t, above_weight, scratch):
    """dh (B, Hb) = sum over j of above_grad[j, t] (B, K) above_weight[j] (K, Hb): one
    block's dL/dh_t from what the layer feeds, above_grad (J, T, B, K) (the head: J = 1;
    the layer above: its J gate blocks). scratch: (B, Hb)."""
    np.dot(above_grad[0, t], above_weight[0], dh)
    for j in range(1, above_grad.shape[0]):
        np.dot(above_grad[j, t], above_weight[j], scratch)
        for b in range(dh.shape[0]):
            for u in range(dh.shape[1]):
                dh[b, u] += scratch[b, u]


@parallel_jit
def input_projection(gates, x, weight_ih):
    """The hoisted input projection, a block per thread: gates[k] (T, B, G*Hb) = x (T, B, I)
    weight_ih[k]^T, weight_ih: (n, G*Hb, I)."""
    T, B, I = x.shape
    for k in numba.prange(gates.shape[0]):
        np.dot(x.reshape(T * B, I), weight_ih[k].T, gates[k].reshape(T * B, gates.shape[3]))


@inline_jit
def seed_partials(partials, dh_state, T):
    """Before backward's time loop: the parity buffer step T - 1 reads holds dL/d(final h)
    (B, H) as block 0's partial and zeros as the others'."""
    zero_fill(partials[T % 2].reshape(-1))
    copy_row(partials[T % 2, 0].reshape(-1), dh_state.reshape(-1))


@inline_jit
def gradient_into_step(dh, state, above_grad, t, above_weight, scratch, partials, lo):
    """One block's dL/dh_t at the start of backward step t: dh (B, Hb) from above (see
    from_above), state (B, Hb) through time (the summed partials of its units)."""
    from_above(dh, above_grad, t, above_weight, scratch)
    sum_partials(state, partials, lo)


@parallel_jit
def block_weight_gradients(dweight, dbias, parts, bias_parts, dgates, inputs, order):
    """dweight (GH, K) = dgates^T inputs and dbias (GH, 1) its column sums, in the
    parameters' row order, each thread its own block's rows. dgates: (n, T*B, G*Hb);
    inputs: (T*B, K); parts (n, G*Hb, K), bias_parts (n, G*Hb, 1): scratch; order: (GH,)
    the parameter row of each block-order row."""
    n, rows = parts.shape[0], parts.shape[1]
    for k in numba.prange(n):  # one parallel region: each costs about a second of cold compile
        np.dot(dgates[k].T, inputs, parts[k])
        bias = bias_parts[k]
        zero_fill(bias.reshape(-1))
        for row in range(dgates.shape[1]):
            for column in range(dgates.shape[2]):
                bias[column, 0] += dgates[k, row, column]
        for row in range(rows):
            copy_row(dweight[order[k * rows + row]], parts[k, row])
            dbias[order[k * rows + row], 0] = bias[row, 0]


@jit
def block_gate_weight_gradients(dweight_ih, dweight_hh, dbias_ih, dbias_hh, split, dgates, h, x,
                                order):
    """kernels.common.gate_weight_gradients for the hidden-block plan: dgates (n, T, B,
    G*Hb); split: the plan's scratch (engine/split.py); outputs (biases (GH, 1)) in the
    parameters' row order."""
    T, B, I = x.shape
    H = h.shape[2]
    blocks = dgates.reshape(dgates.shape[0], T * B, dgates.shape[3])
    block_weight_gradients(dweight_hh, dbias_hh, split.hh_parts, split.bias_parts, blocks,
                           h[:T].reshape(T * B, H), order)
    block_weight_gradients(dweight_ih, dbias_ih, split.ih_parts, split.bias_parts, blocks,
                           x.reshape(T * B, I), order)


@inline_jit
def copy_row(out, row):
    """out[:] = row, as a loop (a slice copy compiles Numba's shape-error text)."""
    for j in range(out.shape[0]):
        out[j] = row[j]
