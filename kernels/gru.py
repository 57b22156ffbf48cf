"""GRU layer over one chunk, PyTorch's formulation, gate order r, z, n:

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

Per-row helpers take 1-D rows so the inner loops vectorise (see kernels/lstm.py).
"""

from kernels.activations import sigmoid, tanh
from kernels.blocks import (block_weight_gradients, finish_state, gradient_into_step, input_projection,
                            meet_after_backward_step, seed_partials, share_into_previous)
from kernels.common import add_into, column_sums, squared_norm, zero_fill, zero_reset_rows, zero_reset_states
from kernels.config import inline_jit, jit
from kernels.gemm import gemm
from kernels.masks import (masked_columns, masked_rows, scale_columns, scale_rows, zoneout_backward,
                           zoneout_forward)
from kernels.sync import wait


@jit
def gru_forward(h, gates, hidden_n, recurrent, x, resets, weight_ih, weight_hh_t, bias_ih, bias_hh, keep_prev,
                h_prev, zone_h):
    """h: (T+1, B, H); row 0 holds the initial state (input), rows 1.. are written.
    gates: (T, B, 3H) out, the activated gates r, z, n. hidden_n: (T, B, H) out,
    W_hn h_{t-1} + b_hn per step (the backward pass needs it). recurrent: (B, 3H)
    scratch. x: (T, B, I). resets: (T, B) booleans, True where a new series starts: the
    state entering that step is zero (h[t] keeps the output of step t - 1).
    weight_ih: (3H, I).
    weight_hh_t: (H, 3H), a C-contiguous transpose of weight_hh (twice as fast as a transposed
    view at H <= 64, measured here). biases: (3H,). Masks (kernels/masks.py), each
    0-sized without its option: keep_prev (B, H) recurrent dropout's, on h_{t-1} in the
    recurrent products of all gates (the interpolation with z reads the unmasked h_{t-1});
    h_prev (T, B, H) the masked h_{t-1} of each step (written here); zone_h (T, B, H)
    zoneout's: h[t + 1] holds the zoned-out state."""
    T, B, I = x.shape
    H = h.shape[2]
    dropping = keep_prev.shape[0] > 0
    zoning = zone_h.shape[0] > 0
    gemm(x.reshape(T * B, I), weight_ih.T, gates.reshape(T * B, 3 * H))
    for t in range(T):
        previous = h[t]
        if dropping:  # W_hh reads the masked h_{t-1}
            masked_rows(h_prev[t], h[t], keep_prev)
            previous = h_prev[t]
        gemm(previous, weight_hh_t, recurrent)  # (B, H) x (H, 3H)
        zero_reset_rows(recurrent, resets[t])  # h_prev = 0 for reset streams
        for b in range(B):
            _cell_forward(h[t + 1, b], gates[t, b], hidden_n[t, b], h[t, b], recurrent[b],
                          bias_ih, bias_hh, H)
            if resets[t, b]:  # redo h_t with h_prev = 0 (the common loop stays as it was)
                _restart_forward(h[t + 1, b], gates[t, b], H)
            if zoning:
                zoneout_forward(h[t + 1, b], h[t, b], zone_h[t, b], resets[t, b])


@inline_jit
def _restart_forward(h_next, gates, H):
    """The step of a stream whose state is zero: h_t = (1 - z) * n. gates: (3H,) the
    activated gates (with h_prev = 0 in their recurrent part)."""
    one = h_next.dtype.type(1)
    gz, gn = gates[H:2 * H], gates[2 * H:]
    for j in range(H):
        h_next[j] = (one - gz[j]) * gn[j]


@inline_jit
def _cell_forward(h_next, gates, hidden_n, h_prev, recurrent, bias_ih, bias_hh, H):
    """One stream, one step. h_next, hidden_n: (H,) out. gates: (3H,) in: x W_ih^T;
    out: activated gates. h_prev: (H,). recurrent: (3H,) h_prev W_hh^T."""
    one = h_next.dtype.type(1)
    gr, gz, gn = gates[:H], gates[H:2 * H], gates[2 * H:]
    rr, rz, rn = recurrent[:H], recurrent[H:2 * H], recurrent[2 * H:]
    ar, az, an = bias_ih[:H], bias_ih[H:2 * H], bias_ih[2 * H:]
    br, bz, bn = bias_hh[:H], bias_hh[H:2 * H], bias_hh[2 * H:]
    for j in range(H):
        r = sigmoid(gr[j] + rr[j] + ar[j] + br[j])
        z = sigmoid(gz[j] + rz[j] + az[j] + bz[j])
        hn = rn[j] + bn[j]
        n = tanh(gn[j] + an[j] + r * hn)
        h_next[j] = (one - z) * n + z * h_prev[j]
        gr[j] = r
        gz[j] = z
        gn[j] = n
        hidden_n[j] = hn


@jit
def gru_backward(dweight_ih, dweight_hh, dbias_ih, dbias_hh, dh_state, dh_norm_sq, dh, direct,
                 above_grad, above_weight, h, gates, hidden_n, x, resets, weight_hh, drop, keep_prev, h_prev,
                 zone_h, carry):
    """Backward over the chunk that gru_forward filled; overwrites every gradient output.

    dweight_*, dbias_*: out, shaped like the parameters. dh_state: (B, H) in: dL/d(final
    h); out: dL/dh_0. dh_norm_sq: (T,) out. dh, direct: (B, H) scratch. above_grad
    (T, B, K), above_weight (K, H): dL/dh_t from above is above_grad[t] above_weight (see
    lstm_backward). h, gates, hidden_n: forward caches, overwritten: in the time loop
    gates takes the hidden-side pre-activation gradients (r, z, r * dn) and hidden_n the
    input-side dn; after it gates holds the input-side gradients (r, z, dn), which the
    layer below reads as its above_grad. No (T, B, 3H) scratch is needed. resets: as
    in gru_forward; no gradient crosses a reset, and afterwards row t of h holds the
    zero state entering a reset step (see lstm_backward). Masks (kernels/masks.py), each
    0-sized without its option: drop (T, B, H) dropout's on this layer's output as the
    layer above read it; keep_prev, h_prev, zone_h as gru_forward left them. carry (B, H):
    zoneout's scratch, dL/dh_{t-1} through h_t = m h_{t-1} + .. (added to direct; with
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
        # h[t] as the output of step t - 1 is no longer read (the step t - 1 cell reads
        # h[t - 1]): from here on it is h_prev, zero for reset streams.
        zero_reset_rows(h[t], resets[t])
        for b in range(B):
            if zoning:  # the cell's backward sees its candidate's share; the rest is carried
                zoneout_backward(dh[b], dh_state[b], carry[b], zone_h[t, b])
            _cell_backward(gates[t, b], hidden_n[t, b], direct[b], dh[b], dh_state[b], h[t, b], H)
            if zoning:
                add_into(direct[b], carry[b])
        dh_norm_sq[t] = squared_norm(dh)
        gemm(gates[t], weight_hh, dh_state)  # (B, 3H) x (3H, H)
        if dropping:  # W_hh read the masked h_{t-1}
            scale_rows(dh_state, keep_prev)
        add_into(dh_state.reshape(-1), direct.reshape(-1))  # plus the path h' = ... + z * h
        zero_reset_rows(dh_state, resets[t])  # nothing flows back past a reset
    previous = h
    if dropping:
        zero_reset_states(h_prev, resets)
        previous = h_prev
    gates_2d = gates.reshape(T * B, 3 * H)
    gemm(gates_2d.T, previous[:T].reshape(T * B, H), dweight_hh)  # (3H, T*B) x (T*B, H)
    column_sums(dbias_hh, gates_2d)
    for t in range(T):  # the n block: input side dn instead of r * dn (a loop: see common.py)
        for b in range(B):
            for j in range(H):
                gates[t, b, 2 * H + j] = hidden_n[t, b, j]
    gemm(gates_2d.T, x.reshape(T * B, I), dweight_ih)  # (3H, T*B) x (T*B, I)
    column_sums(dbias_ih, gates_2d)


@inline_jit
def _cell_backward(gates, hidden_n, direct, dh, dh_state, h_prev, H):
    """One stream, one step. gates: (3H,) in: r, z, n; out: hidden-side pre-activation
    gradients (dr, dz, r * dn). hidden_n: (H,) in: W_hn h + b_hn; out: dn. direct: (H,)
    out: dL/dh_{t-1} through z * h. dh: (H,) in: from above; out: total dL/dh_t.
    dh_state: (H,) through time."""
    one = gates.dtype.type(1)
    gr, gz, gn = gates[:H], gates[H:2 * H], gates[2 * H:]
    for j in range(H):
        dh_t = dh[j] + dh_state[j]
        dh[j] = dh_t
        r, z, n = gr[j], gz[j], gn[j]
        # h' = (1 - z) * n + z * h;  n = tanh(a_n + r * hidden_n)
        dn = dh_t * (one - z) * (one - n * n)
        dr = dn * hidden_n[j] * r * (one - r)
        dz = dh_t * (h_prev[j] - n) * z * (one - z)
        direct[j] = dh_t * z
        gr[j] = dr
        gz[j] = dz
        gn[j] = dn * r
        hidden_n[j] = dn


@jit
def gru_forward_split(worker, workers, sync, h, gates, hidden_n, recurrent, x, resets, weight_ih,
                      weight_hh_t, bias_ih, bias_hh, keep_prev, h_prev, zone_h):
    """gru_forward for the hidden-block plan (see kernels/lstm.py lstm_forward_split):
    gates (n, T, B, 3Hb), recurrent (n, B, 3Hb), weight_ih (n, 3Hb, I), weight_hh_t
    (n, H, 3Hb), biases (n, 3Hb); h, hidden_n (T, B, H) and the masks as in gru_forward."""
    T, B, I = x.shape
    n, _, _, width = gates.shape
    Hb = width // 3
    dropping = keep_prev.shape[0] > 0
    zoning = zone_h.shape[0] > 0
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
            gemm(previous, weight_hh_t[k], recurrent[k])  # (B, H) x (H, 3Hb)
            zero_reset_rows(recurrent[k], resets[t])  # h_prev = 0 for reset streams
            for b in range(B):
                _cell_forward(h[t + 1, b, lo:lo + Hb], gates[k, t, b], hidden_n[t, b, lo:lo + Hb],
                              h[t, b, lo:lo + Hb], recurrent[k, b], bias_ih[k], bias_hh[k], Hb)
                if resets[t, b]:  # redo h_t with h_prev = 0 (the common loop stays as it was)
                    _restart_forward(h[t + 1, b, lo:lo + Hb], gates[k, t, b], Hb)
                if zoning:
                    zoneout_forward(h[t + 1, b, lo:lo + Hb], h[t, b, lo:lo + Hb], zone_h[t, b, lo:lo + Hb],
                                    resets[t, b])
            if dropping and t + 1 < T:
                masked_columns(h_prev[t + 1], h[t + 1], keep_prev, lo, Hb)
        if not wait(sync, workers):
            return


@jit
def gru_backward_split(worker, workers, sync, dweight_ih, dweight_hh, dbias_ih, dbias_hh, dh_state,
                       dh_norm_sq, split, above_grad, above_weight, h, gates, hidden_n, x, resets, weight_hh,
                       order, drop, keep_prev, h_prev, zone_h, carry):
    """gru_backward for the hidden-block plan (arguments as in kernels/lstm.py
    lstm_backward_split; split.direct (B, H) carries dL/dh_{t-1} through z * h, and
    zoneout's m * h, each block its own columns; the masks and carry as in gru_backward)."""
    T, B, I = x.shape
    H = h.shape[2]
    n, _, _, width = gates.shape
    Hb = width // 3
    dropped = drop.shape[0] > 0
    dropping = keep_prev.shape[0] > 0
    zoning = zone_h.shape[0] > 0
    partials, norms, direct = split.partials, split.norms, split.direct
    seed_partials(worker, workers, partials, dh_state, T)
    for k in range(worker, n, workers):
        for b in range(B):
            zero_fill(direct[b, k * Hb:(k + 1) * Hb])
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
                for u in range(Hb):  # plus the path h' = ... + z * h of step t + 1
                    state[b, u] += direct[b, lo + u]
                # h[t] as the output of step t - 1 is no longer read (the step t - 1 cell
                # reads h[t - 1]): from here on it is h_prev, zero for reset streams.
                if resets[t, b]:
                    zero_fill(h[t, b, lo:lo + Hb])
                if zoning:  # as in gru_backward
                    zoneout_backward(dh[b], state[b], carry[b, lo:lo + Hb], zone_h[t, b, lo:lo + Hb])
                _cell_backward(gates[k, t, b], hidden_n[t, b, lo:lo + Hb], direct[b, lo:lo + Hb],
                               dh[b], state[b], h[t, b, lo:lo + Hb], Hb)
                if zoning:
                    add_into(direct[b, lo:lo + Hb], carry[b, lo:lo + Hb])
                if resets[t, b]:  # nothing flows back past a reset
                    zero_fill(direct[b, lo:lo + Hb])
            # this block's share of dL/dh_{t-1}: (B, 3Hb) x (3Hb, H)
            share_into_previous(norms[t % 2], k, dh, gates[k, t], weight_hh[k], writing[k], resets[t], keep_prev)
        if not meet_after_backward_step(worker, workers, sync, dh_norm_sq, norms[t % 2], t):
            return
    finish_state(worker, workers, dh_state, partials[0], Hb)
    previous = h
    if dropping:
        if worker == 0:
            zero_reset_states(h_prev, resets)
        if not wait(sync, workers):
            return
        previous = h_prev
    blocks = gates.reshape(n, T * B, width)
    block_weight_gradients(worker, workers, dweight_hh, dbias_hh, split.hh_parts, split.bias_parts, blocks,
                           previous[:T].reshape(T * B, H), order)
    for k in range(worker, n, workers):
        lo = k * Hb
        for b in range(B):
            for u in range(Hb):
                dh_state[b, lo + u] += direct[b, lo + u]
        for t in range(T):  # the n gates: input side dn instead of r * dn
            for b in range(B):
                for u in range(Hb):
                    gates[k, t, b, 2 * Hb + u] = hidden_n[t, b, lo + u]
    block_weight_gradients(worker, workers, dweight_ih, dbias_ih, split.ih_parts, split.bias_parts, blocks,
                           x.reshape(T * B, I), order)
