"""LSTM layer over one chunk, PyTorch's formulation, gate order i, f, g, o:

    i, f, o = sigmoid(.), g = tanh(.)   of   W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

The per-row helpers take 1-D rows (one stream of one step): slicing the rows before the
inner loop lets LLVM prove the gate blocks apart and vectorise the loop.
"""

from kernels.activations import sigmoid, tanh
from kernels.blocks import (block_gate_weight_gradients, finish_state, gradient_into_step, input_projection,
                            meet_after_backward_step, seed_partials, share_into_previous)
from kernels.common import (add_into, gate_weight_gradients, squared_norm, zero_fill, zero_reset_rows,
                            zero_reset_states)
from kernels.config import inline_jit, jit
from kernels.gemm import gemm
from kernels.masks import (add_rows, lstm_candidate, masked_columns, masked_rows, scale_columns, scale_rows,
                           zoneout_backward, zoneout_cell_backward, zoneout_forward)
from kernels.sync import wait


@jit
def lstm_forward(h, c, gates, recurrent, x, resets, weight_ih, weight_hh_t, bias_ih, bias_hh, keep_prev, h_prev,
                 zone_h, zone_c):
    """h, c: (T+1, B, H); row 0 holds the initial state (input), rows 1.. are written.
    gates: (T, B, 4H) out, the activated gates i, f, g, o (kept for the backward pass).
    recurrent: (B, 4H) scratch. x: (T, B, I). resets: (T, B) booleans, True where a new
    series starts: the state entering that step is zero (h[t] keeps the output of step
    t - 1, which the head and the layer above read). weight_ih: (4H, I).
    weight_hh_t: (H, 4H), a C-contiguous transpose of weight_hh (twice as fast as a transposed
    view at H <= 64, measured here).
    bias_ih, bias_hh: (4H,). Masks (kernels/masks.py), each 0-sized without its option:
    keep_prev (B, H) recurrent dropout's, h_prev (T, B, H) the masked h_{t-1} of each step
    (written here); zone_h, zone_c (T, B, H) zoneout's: h[t + 1] and c[t + 1] hold the
    zoned-out states, the candidate h~_t = o * tanh(c~_t) of the unzoned c~_t."""
    T, B, I = x.shape
    H = h.shape[2]
    dropping = keep_prev.shape[0] > 0
    zoning = zone_h.shape[0] > 0
    # Input projection of the whole chunk: one GEMM, (T*B, I) x (I, 4H).
    gemm(x.reshape(T * B, I), weight_ih.T, gates.reshape(T * B, 4 * H))
    for t in range(T):
        previous = h[t]
        if dropping:  # W_hh reads the masked h_{t-1}
            masked_rows(h_prev[t], h[t], keep_prev)
            previous = h_prev[t]
        gemm(previous, weight_hh_t, recurrent)  # (B, H) x (H, 4H)
        zero_reset_rows(recurrent, resets[t])  # h_prev = 0 for reset streams
        for b in range(B):
            _cell_forward(h[t + 1, b], c[t + 1, b], gates[t, b], c[t, b], recurrent[b],
                          bias_ih, bias_hh, H)
            if resets[t, b]:  # redo c_t, h_t with c_prev = 0 (the common loop stays as it was)
                _restart_forward(h[t + 1, b], c[t + 1, b], gates[t, b], H)
            if zoning:
                zoneout_forward(c[t + 1, b], c[t, b], zone_c[t, b], resets[t, b])
                zoneout_forward(h[t + 1, b], h[t, b], zone_h[t, b], resets[t, b])


@inline_jit
def _restart_forward(h_next, c_next, gates, H):
    """The step of a stream whose state is zero: c_t = i * g, h_t = o * tanh(c_t).
    gates: (4H,) the activated gates (with h_prev = 0 in their recurrent part)."""
    gi, gg, go = gates[:H], gates[2 * H:3 * H], gates[3 * H:]
    for j in range(H):
        c_t = gi[j] * gg[j]
        c_next[j] = c_t
        h_next[j] = go[j] * tanh(c_t)


@inline_jit
def _cell_forward(h_next, c_next, gates, c_prev, recurrent, bias_ih, bias_hh, H):
    """One stream, one step. h_next, c_next: (H,) out. gates: (4H,) in: x W_ih^T; out:
    activated gates. c_prev: (H,). recurrent: (4H,) h_prev W_hh^T."""
    gi, gf, gg, go = gates[:H], gates[H:2 * H], gates[2 * H:3 * H], gates[3 * H:]
    ri, rf, rg, ro = recurrent[:H], recurrent[H:2 * H], recurrent[2 * H:3 * H], recurrent[3 * H:]
    ai, af, ag, ao = bias_ih[:H], bias_ih[H:2 * H], bias_ih[2 * H:3 * H], bias_ih[3 * H:]
    bi, bf, bg, bo = bias_hh[:H], bias_hh[H:2 * H], bias_hh[2 * H:3 * H], bias_hh[3 * H:]
    for j in range(H):
        i = sigmoid(gi[j] + ri[j] + ai[j] + bi[j])
        f = sigmoid(gf[j] + rf[j] + af[j] + bf[j])
        g = tanh(gg[j] + rg[j] + ag[j] + bg[j])
        o = sigmoid(go[j] + ro[j] + ao[j] + bo[j])
        c_t = f * c_prev[j] + i * g
        c_next[j] = c_t
        h_next[j] = o * tanh(c_t)
        gi[j] = i
        gf[j] = f
        gg[j] = g
        go[j] = o


@jit
def lstm_backward(dweight_ih, dweight_hh, dbias_ih, dbias_hh, dh_state, dc_state, dh_norm_sq,
                  dh, above_grad, above_weight, h, c, gates, x, resets, weight_hh, drop, keep_prev, h_prev,
                  zone_h, zone_c, carry_h, carry_c, candidate):
    """Backward over the chunk that lstm_forward filled; overwrites every gradient output.

    dweight_*, dbias_*: out, shaped like the parameters. dh_state, dc_state: (B, H) in:
    dL/d(final h, c); out: dL/d(h_0, c_0). dh_norm_sq: (T,) out, squared norm of the total
    dL/dh_t per step (diagnostics). dh: (B, H) scratch. above_grad: (T, B, K) gradient of
    what this layer feeds (the head's outputs, or the next layer's gate pre-activations),
    above_weight: (K, H) its weight: dL/dh_t from above is above_grad[t] above_weight,
    formed per step so no (T, B, H) buffer is needed. h, c, gates: the forward caches;
    gates is overwritten with the gradients of the gate pre-activations (what the layer
    below reads as its above_grad). resets: as in lstm_forward; no gradient
    crosses a reset, and afterwards rows t of h and c hold the zero state entering a
    reset step (the head and the layer above, which read them as outputs, are done).
    Masks (kernels/masks.py), each 0-sized without its option: drop (T, B, H) dropout's
    on this layer's output as the layer above read it; keep_prev, h_prev, zone_h, zone_c
    as lstm_forward left them. carry_h, carry_c, candidate (B, H): zoneout's scratch (with
    zoneout, dh_norm_sq is of the candidate's share (1 - m) dL/dh_t)."""
    T, B, I = x.shape
    H = h.shape[2]
    dropped = drop.shape[0] > 0
    dropping = keep_prev.shape[0] > 0
    zoning = zone_h.shape[0] > 0
    for t in range(T - 1, -1, -1):
        gemm(above_grad[t], above_weight, dh)  # (B, K) x (K, H): dL/dh_t from above
        if dropped:
            scale_rows(dh, drop[t])
        for b in range(B):
            c_t = c[t + 1, b]
            if zoning:  # the cell's backward sees its candidates' shares; the rest is carried
                zoneout_backward(dh[b], dh_state[b], carry_h[b], zone_h[t, b])
                zoneout_cell_backward(dc_state[b], carry_c[b], zone_c[t, b])
                lstm_candidate(candidate[b], gates[t, b], c[t, b], resets[t, b], H)
                c_t = candidate[b]
            _cell_backward(gates[t, b], dh[b], dh_state[b], dc_state[b], c[t, b], c_t, H)
            if resets[t, b]:  # c_prev = 0: the forget gate had nothing to act on
                zero_fill(gates[t, b, H:2 * H])
        dh_norm_sq[t] = squared_norm(dh)
        gemm(gates[t], weight_hh, dh_state)  # (B, 4H) x (4H, H): dL/dh_{t-1} via W_hh
        if dropping:  # W_hh read the masked h_{t-1}
            scale_rows(dh_state, keep_prev)
        if zoning:  # plus the paths h_t = m h_{t-1} + .., c_t = m c_{t-1} + ..
            add_rows(dh_state, carry_h)
            add_rows(dc_state, carry_c)
        zero_reset_rows(dh_state, resets[t])  # nothing flows back past a reset
        zero_reset_rows(dc_state, resets[t])
    zero_reset_states(h, resets)  # h[:T] is now h_prev of every step, for the dW_hh GEMM
    zero_reset_states(c, resets)
    previous = h
    if dropping:
        zero_reset_states(h_prev, resets)
        previous = h_prev
    gate_weight_gradients(dweight_ih, dweight_hh, dbias_ih, dbias_hh, gates, previous, x)


@inline_jit
def _cell_backward(gates, dh, dh_state, dc_state, c_prev, c_t, H):
    """One stream, one step. gates: (4H,) in: activated gates; out: pre-activation
    gradients. dh: (H,) in: dL/dh_t from above; out: total dL/dh_t. dh_state: (H,)
    dL/dh_t through time. dc_state: (H,) in: dL/dc_t through time; out: dL/dc_{t-1}."""
    one = gates.dtype.type(1)
    gi, gf, gg, go = gates[:H], gates[H:2 * H], gates[2 * H:3 * H], gates[3 * H:]
    for j in range(H):
        dh_t = dh[j] + dh_state[j]
        dh[j] = dh_t
        i, f, g, o = gi[j], gf[j], gg[j], go[j]
        tanh_c = tanh(c_t[j])  # recomputed rather than stored
        # c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)
        dc_t = dc_state[j] + dh_t * o * (one - tanh_c * tanh_c)
        gi[j] = dc_t * g * i * (one - i)
        gf[j] = dc_t * c_prev[j] * f * (one - f)
        gg[j] = dc_t * i * (one - g * g)
        go[j] = dh_t * tanh_c * o * (one - o)
        dc_state[j] = dc_t * f


@jit
def lstm_forward_split(worker, workers, sync, h, c, gates, recurrent, x, resets, weight_ih, weight_hh_t,
                       bias_ih, bias_hh, keep_prev, h_prev, zone_h, zone_c):
    """lstm_forward for the hidden-block plan (kernels/blocks.py): the layer's units in
    n = gates.shape[0] blocks of Hb; this call runs the blocks of `worker` of `workers`,
    meeting the others at each step's end (sync: kernels/sync.py).
    gates: (n, T, B, 4Hb) out, block k the activated gates i, f, g, o of its units.
    recurrent: (n, B, 4Hb) scratch. weight_ih: (n, 4Hb, I), block k the rows of W_ih for
    its gates. weight_hh_t: (n, H, 4Hb), the columns of W_hh^T for them. bias_ih, bias_hh:
    (n, 4Hb). h, c, x, resets and the masks: as in lstm_forward."""
    T, B, I = x.shape
    n, _, _, width = gates.shape
    Hb = width // 4
    dropping = keep_prev.shape[0] > 0
    zoning = zone_h.shape[0] > 0
    input_projection(worker, workers, gates, x, weight_ih)  # one GEMM per block: (T*B, I) x (I, 4Hb)
    if dropping:  # each block masks its own units of h_{t-1} (here h_0, later its new h_t)
        for k in range(worker, n, workers):
            masked_columns(h_prev[0], h[0], keep_prev, k * Hb, Hb)
        if not wait(sync, workers):
            return
    for t in range(T):
        previous = h_prev[t] if dropping else h[t]
        for k in range(worker, n, workers):
            lo = k * Hb
            gemm(previous, weight_hh_t[k], recurrent[k])  # (B, H) x (H, 4Hb)
            zero_reset_rows(recurrent[k], resets[t])  # h_prev = 0 for reset streams
            for b in range(B):
                _cell_forward(h[t + 1, b, lo:lo + Hb], c[t + 1, b, lo:lo + Hb], gates[k, t, b],
                              c[t, b, lo:lo + Hb], recurrent[k, b], bias_ih[k], bias_hh[k], Hb)
                if resets[t, b]:  # redo c_t, h_t with c_prev = 0 (the common loop stays as it was)
                    _restart_forward(h[t + 1, b, lo:lo + Hb], c[t + 1, b, lo:lo + Hb], gates[k, t, b], Hb)
                if zoning:
                    zoneout_forward(c[t + 1, b, lo:lo + Hb], c[t, b, lo:lo + Hb], zone_c[t, b, lo:lo + Hb],
                                    resets[t, b])
                    zoneout_forward(h[t + 1, b, lo:lo + Hb], h[t, b, lo:lo + Hb], zone_h[t, b, lo:lo + Hb],
                                    resets[t, b])
            if dropping and t + 1 < T:
                masked_columns(h_prev[t + 1], h[t + 1], keep_prev, lo, Hb)
        if not wait(sync, workers):
            return


@jit
def lstm_backward_split(worker, workers, sync, dweight_ih, dweight_hh, dbias_ih, dbias_hh, dh_state,
                        dc_state, dh_norm_sq, split, above_grad, above_weight, h, c, gates, x, resets,
                        weight_hh, order, drop, keep_prev, h_prev, zone_h, zone_c, carry_h, carry_c, candidate):
    """lstm_backward for the hidden-block plan, in the blocks and workers of
    lstm_forward_split. dweight_ih (4H, I), dweight_hh (4H, H), dbias_ih, dbias_hh (4H, 1):
    out, in the parameters' own row order. dh_state, dc_state: (B, H) as in lstm_backward.
    split: the plan's scratch (engine/split.py). above_grad: (J, T, B, K) what the layer
    feeds, in J blocks (the head's outputs: J = 1; the layer above's gate gradients: its
    blocks); above_weight: (n, J, K, Hb), block k the columns of its units. gates: (n, T, B,
    4Hb), overwritten with the pre-activation gradients. weight_hh: (n, 4Hb, H), block k the
    rows of W_hh for its gates. order: (4H,) the parameter row of each block-order row.
    The masks and zoneout's scratch (B, H): as in lstm_backward, each block its own units
    (carry_h carries dL/dh_{t-1} through h_t = m h_{t-1} + .. into step t - 1)."""
    T, B = x.shape[0], x.shape[1]
    n, _, _, width = gates.shape
    Hb = width // 4
    dropped = drop.shape[0] > 0
    dropping = keep_prev.shape[0] > 0
    zoning = zone_h.shape[0] > 0
    partials, norms = split.partials, split.norms
    seed_partials(worker, workers, partials, dh_state, T)
    if zoning:
        for k in range(worker, n, workers):
            for b in range(B):
                zero_fill(carry_h[b, k * Hb:(k + 1) * Hb])
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
                c_t = c[t + 1, b, lo:lo + Hb]
                if zoning:  # as in lstm_backward, after the carry of step t + 1
                    add_into(state[b], carry_h[b, lo:lo + Hb])
                    zoneout_backward(dh[b], state[b], carry_h[b, lo:lo + Hb], zone_h[t, b, lo:lo + Hb])
                    zoneout_cell_backward(dc_state[b, lo:lo + Hb], carry_c[b, lo:lo + Hb], zone_c[t, b, lo:lo + Hb])
                    lstm_candidate(candidate[b, lo:lo + Hb], gates[k, t, b], c[t, b, lo:lo + Hb], resets[t, b], Hb)
                    c_t = candidate[b, lo:lo + Hb]
                _cell_backward(gates[k, t, b], dh[b], state[b], dc_state[b, lo:lo + Hb],
                               c[t, b, lo:lo + Hb], c_t, Hb)
                if zoning:
                    add_into(dc_state[b, lo:lo + Hb], carry_c[b, lo:lo + Hb])
                if resets[t, b]:  # c_prev = 0: the forget gate had nothing to act on
                    zero_fill(gates[k, t, b, Hb:2 * Hb])
                    zero_fill(dc_state[b, lo:lo + Hb])
                    if zoning:
                        zero_fill(carry_h[b, lo:lo + Hb])
            # this block's share of dL/dh_{t-1}: (B, 4Hb) x (4Hb, H)
            share_into_previous(norms[t % 2], k, dh, gates[k, t], weight_hh[k], writing[k], resets[t], keep_prev)
        if not meet_after_backward_step(worker, workers, sync, dh_norm_sq, norms[t % 2], t):
            return
    finish_state(worker, workers, dh_state, partials[0], Hb)
    if zoning:
        for k in range(worker, n, workers):
            for b in range(B):
                add_into(dh_state[b, k * Hb:(k + 1) * Hb], carry_h[b, k * Hb:(k + 1) * Hb])
    if worker == 0:  # h[:T] becomes h_prev of every step, for the dW_hh GEMM (only reset rows are written)
        zero_reset_states(h, resets)
        zero_reset_states(c, resets)
        if dropping:
            zero_reset_states(h_prev, resets)
    if not wait(sync, workers):
        return
    block_gate_weight_gradients(worker, workers, dweight_ih, dweight_hh, dbias_ih, dbias_hh, split, gates,
                                h_prev if dropping else h, x, order)
