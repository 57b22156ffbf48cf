"""Elman RNN layer over one chunk: h' = act(W_ih x + b_ih + W_hh h + b_hh), act tanh or relu."""
import numpy as np

from kernels.activations import tanh
from kernels.blocks import (block_gate_weight_gradients, finish_state, gradient_into_step, input_projection,
                            seed_partials, zero_reset_columns)
from kernels.common import ordered_sum, squared_norm, zero_reset_rows
from kernels.config import inline_jit, jit
from kernels.sync import wait


@jit
def rnn_forward(worker, workers, sync, h, gates, recurrent, x, resets, weight_ih, weight_hh_t, bias_ih,
                bias_hh, relu):
    """Forward over one chunk in blocks and workers (see kernels/lstm.py lstm_forward).

    h: (T+1, B, H); row 0 holds the initial state (input), rows 1.. are written.
    gates: (n, T, B, Hb) scratch for the hoisted input projection (reused by backward).
    recurrent: (n, B, Hb) scratch. x: (T, B, I). resets: (T, B) booleans, True where a
    new series starts: the state entering that step is zero (h[t] keeps the output of
    step t - 1). weight_ih: (n, Hb, I); weight_hh_t: (n, H, Hb), C-contiguous; biases
    (n, Hb): block k's rows (columns of W_hh^T). relu: True for ReLU, False for tanh."""
    T, B, I = x.shape
    n, _, _, Hb = gates.shape
    input_projection(worker, workers, gates, x, weight_ih)
    for t in range(T):
        for k in range(worker, n, workers):
            lo = k * Hb
            np.dot(h[t], weight_hh_t[k], recurrent[k])  # (B, H) x (H, Hb)
            zero_reset_rows(recurrent[k], resets[t])  # h_prev = 0 for reset streams
            for b in range(B):
                _cell_forward(h[t + 1, b, lo:lo + Hb], gates[k, t, b], recurrent[k, b],
                              bias_ih[k], bias_hh[k], relu)
        if not wait(sync, workers):
            return


@inline_jit
def _cell_forward(h_next, gates, recurrent, bias_ih, bias_hh, relu):
    """One stream, one step; all rows (H,). gates: x W_ih^T; recurrent: h_prev W_hh^T."""
    zero = h_next.dtype.type(0)
    if relu:
        for j in range(h_next.shape[0]):
            h_next[j] = max(gates[j] + recurrent[j] + bias_ih[j] + bias_hh[j], zero)
    else:
        for j in range(h_next.shape[0]):
            h_next[j] = tanh(gates[j] + recurrent[j] + bias_ih[j] + bias_hh[j])


@jit
def rnn_backward(worker, workers, sync, dweight_ih, dweight_hh, dbias_ih, dbias_hh, dh_state, dh_norm_sq,
                 split, above_grad, above_weight, h, gates, x, resets, weight_hh, order, relu):
    """Backward over the chunk that rnn_forward filled; overwrites every gradient output.
    Arguments as in kernels/lstm.py lstm_backward (Hb gate columns per block); gates is
    overwritten with the pre-activation gradients. No gradient crosses a reset, and
    afterwards row t of h holds the zero state entering a reset step."""
    T, B = x.shape[0], x.shape[1]
    n, _, _, Hb = gates.shape
    partials, norms = split.partials, split.norms
    seed_partials(worker, workers, partials, dh_state, T)
    if not wait(sync, workers):
        return
    for t in range(T - 1, -1, -1):
        reading, writing = partials[(t + 1) % 2], partials[t % 2]
        for k in range(worker, n, workers):
            lo = k * Hb
            through = gradient_into_step(split, dh_state, above_grad, t, above_weight[k], reading, n, k, Hb)
            dh = split.dh[k]
            for b in range(B):
                _cell_backward(gates[k, t, b], dh[b], through[b], h[t + 1, b, lo:lo + Hb], relu)
            norms[t % 2, k] = squared_norm(dh)
            into = through if n == 1 else writing[k]  # dL/dh_{t-1} via W_hh, or this block's share
            np.dot(gates[k, t], weight_hh[k], into)  # (B, Hb) x (Hb, H)
            zero_reset_rows(into, resets[t])  # nothing flows back past a reset
        if not wait(sync, workers):
            return
        if worker == 0:
            dh_norm_sq[t] = ordered_sum(norms[t % 2])
    finish_state(worker, workers, dh_state, partials[0], Hb)
    for k in range(worker, n, workers):  # h[:T] becomes h_prev of every step, for the dW_hh GEMM
        zero_reset_columns(h, resets, k * Hb, Hb)
    if not wait(sync, workers):
        return
    block_gate_weight_gradients(worker, workers, dweight_ih, dweight_hh, dbias_ih, dbias_hh, split, gates, h, x,
                                order)


@inline_jit
def _cell_backward(dgates, dh, dh_state, h_t, relu):
    """One stream, one step; all rows (H,). dgates: out, pre-activation gradient. dh: in:
    from above; out: total dL/dh_t. dh_state: through time. h_t: this step's output."""
    one = h_t.dtype.type(1)
    zero = h_t.dtype.type(0)
    for j in range(h_t.shape[0]):
        dh_t = dh[j] + dh_state[j]
        dh[j] = dh_t
        if relu:
            dgates[j] = dh_t if h_t[j] > zero else zero
        else:
            dgates[j] = dh_t * (one - h_t[j] * h_t[j])
