"""Elman RNN layer over one chunk: h' = act(W_ih x + b_ih + W_hh h + b_hh), act tanh or relu."""

from kernels.activations import tanh
from kernels.blocks import (block_gate_weight_gradients, finish_state, gradient_into_step, input_projection,
                            meet_after_backward_step, seed_partials, share_into_previous)
from kernels.common import gate_weight_gradients, squared_norm, zero_reset_rows, zero_reset_states
from kernels.config import inline_jit, jit
from kernels.gemm import gemm
from kernels.masks import masked_columns, masked_rows, scale_columns, scale_rows
from kernels.sync import wait


@jit
def rnn_forward(h, gates, recurrent, x, resets, weight_ih, weight_hh_t, bias_ih, bias_hh, relu, keep_prev,
                h_prev):
    """h: (T+1, B, H); row 0 holds the initial state (input), rows 1.. are written.
    gates: (T, B, H) scratch for the hoisted input projection (reused by backward).
    recurrent: (B, H) scratch. x: (T, B, I). resets: (T, B) booleans, True where a new
    series starts: the state entering that step is zero (h[t] keeps the output of step
    t - 1). weight_ih: (H, I).
    weight_hh_t: (H, H), a C-contiguous transpose of weight_hh (twice as fast as a transposed
    view at H <= 64, measured here).
    biases: (H,). relu: True for ReLU, False for tanh. keep_prev (B, H), h_prev (T, B, H):
    recurrent dropout's mask and the masked h_{t-1} of each step, written here; both
    0-sized without it (kernels/masks.py)."""
    T, B, I = x.shape
    H = h.shape[2]
    dropping = keep_prev.shape[0] > 0
    gemm(x.reshape(T * B, I), weight_ih.T, gates.reshape(T * B, H))
    for t in range(T):
        previous = h[t]
        if dropping:  # W_hh reads the masked h_{t-1}
            masked_rows(h_prev[t], h[t], keep_prev)
            previous = h_prev[t]
        gemm(previous, weight_hh_t, recurrent)  # (B, H) x (H, H)
        zero_reset_rows(recurrent, resets[t])  # h_prev = 0 for reset streams
        for b in range(B):
            _cell_forward(h[t + 1, b], gates[t, b], recurrent[b], bias_ih, bias_hh, relu)


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
def rnn_backward(dweight_ih, dweight_hh, dbias_ih, dbias_hh, dh_state, dh_norm_sq, dh,
                 above_grad, above_weight, h, gates, x, resets, weight_hh, relu, drop, keep_prev, h_prev):
    """Backward over the chunk that rnn_forward filled; overwrites every gradient output.

    dweight_*, dbias_*: out. dh_state: (B, H) in: dL/d(final h); out: dL/dh_0.
    dh_norm_sq: (T,) out. dh: (B, H) scratch. above_grad (T, B, K), above_weight (K, H):
    dL/dh_t from above is above_grad[t] above_weight (see lstm_backward). h: forward
    cache. gates: overwritten with the pre-activation gradients. resets: (T, B) as in
    rnn_forward; no gradient crosses a reset, and afterwards row t of h holds the zero
    state entering a reset step (see lstm_backward). drop (T, B, H): dropout's mask on
    this layer's output as the layer above read it; keep_prev, h_prev: as rnn_forward
    left them; each 0-sized without its option (kernels/masks.py)."""
    T, B, I = x.shape
    dropped = drop.shape[0] > 0
    dropping = keep_prev.shape[0] > 0
    for t in range(T - 1, -1, -1):
        gemm(above_grad[t], above_weight, dh)  # (B, K) x (K, H)
        if dropped:
            scale_rows(dh, drop[t])
        for b in range(B):
            _cell_backward(gates[t, b], dh[b], dh_state[b], h[t + 1, b], relu)
        dh_norm_sq[t] = squared_norm(dh)
        gemm(gates[t], weight_hh, dh_state)  # (B, H) x (H, H)
        if dropping:  # W_hh read the masked h_{t-1}
            scale_rows(dh_state, keep_prev)
        zero_reset_rows(dh_state, resets[t])  # nothing flows back past a reset
    zero_reset_states(h, resets)  # h[:T] is now h_prev of every step, for the dW_hh GEMM
    previous = h
    if dropping:
        zero_reset_states(h_prev, resets)
        previous = h_prev
    gate_weight_gradients(dweight_ih, dweight_hh, dbias_ih, dbias_hh, gates, previous, x)


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


@jit
def rnn_forward_split(worker, workers, sync, h, gates, recurrent, x, resets, weight_ih, weight_hh_t,
                      bias_ih, bias_hh, relu, keep_prev, h_prev):
    """rnn_forward for the hidden-block plan (see kernels/lstm.py lstm_forward_split):
    gates (n, T, B, Hb), recurrent (n, B, Hb), weight_ih (n, Hb, I), weight_hh_t
    (n, H, Hb), biases (n, Hb); keep_prev, h_prev as in rnn_forward."""
    T, B, I = x.shape
    n, _, _, Hb = gates.shape
    dropping = keep_prev.shape[0] > 0
    input_projection(worker, workers, gates, x, weight_ih)
    if dropping:  # each block masks its own units of h_{t-1} (here h_0, later its new h_t)
        for k in range(worker, n, workers):
            masked_columns(h_prev[0], h[0], keep_prev, k * Hb, Hb)
        if not wait(sync, workers):
            return
    for t in range(T):
        previous = h_prev[t] if dropping else h[t]
        for k in range(worker, n, workers):
            lo = k * Hb
            gemm(previous, weight_hh_t[k], recurrent[k])  # (B, H) x (H, Hb)
            zero_reset_rows(recurrent[k], resets[t])  # h_prev = 0 for reset streams
            for b in range(B):
                _cell_forward(h[t + 1, b, lo:lo + Hb], gates[k, t, b], recurrent[k, b], bias_ih[k],
                              bias_hh[k], relu)
            if dropping and t + 1 < T:
                masked_columns(h_prev[t + 1], h[t + 1], keep_prev, lo, Hb)
        if not wait(sync, workers):
            return


@jit
def rnn_backward_split(worker, workers, sync, dweight_ih, dweight_hh, dbias_ih, dbias_hh, dh_state,
                       dh_norm_sq, split, above_grad, above_weight, h, gates, x, resets, weight_hh, order,
                       relu, drop, keep_prev, h_prev):
    """rnn_backward for the hidden-block plan (arguments as in kernels/lstm.py
    lstm_backward_split)."""
    T, B = x.shape[0], x.shape[1]
    n, _, _, Hb = gates.shape
    dropped = drop.shape[0] > 0
    dropping = keep_prev.shape[0] > 0
    partials, norms = split.partials, split.norms
    seed_partials(worker, workers, partials, dh_state, T)
    if not wait(sync, workers):
        return
    for t in range(T - 1, -1, -1):
        reading, writing = partials[(t + 1) % 2], partials[t % 2]
        for k in range(worker, n, workers):
            lo = k * Hb
            state = gradient_into_step(split, above_grad, t, above_weight[k], reading, k, Hb)
            dh = split.dh[k]
            if dropped:
                scale_columns(dh, drop[t], lo)
            for b in range(B):
                _cell_backward(gates[k, t, b], dh[b], state[b], h[t + 1, b, lo:lo + Hb], relu)
            # this block's share of dL/dh_{t-1}: (B, Hb) x (Hb, H)
            share_into_previous(norms[t % 2], k, dh, gates[k, t], weight_hh[k], writing[k], resets[t], keep_prev)
        if not meet_after_backward_step(worker, workers, sync, dh_norm_sq, norms[t % 2], t):
            return
    finish_state(worker, workers, dh_state, partials[0], Hb)
    if worker == 0:  # h[:T] becomes h_prev of every step, for the dW_hh GEMM (only reset rows are written)
        zero_reset_states(h, resets)
        if dropping:
            zero_reset_states(h_prev, resets)
    if not wait(sync, workers):
        return
    block_gate_weight_gradients(worker, workers, dweight_ih, dweight_hh, dbias_ih, dbias_hh, split, gates,
                                h_prev if dropping else h, x, order)
