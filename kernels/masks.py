"""The training-only masks of the cell kernels (docs/training.md, "Regularisation").

Masks are data read in the time loop, like resets; a kernel whose mask array is empty
(0-sized, the rate is 0) runs today's arithmetic untouched:
  drop (T, B, H): dropout on a layer's output as the layer above reads it (0, or
    1/(1-p) for a kept unit); the engine multiplies the output before the layer above
    reads it, and the layer's backward multiplies dL/dh_t from above by it.
  keep_prev (B, H): recurrent (variational) dropout, one mask per stream and window on
    h_{t-1} in the recurrent product W_hh h_{t-1} only; h_prev (T, B, H) holds the
    masked h_{t-1} of every step (the recurrent GEMM's input, and the whole-chunk
    dW_hh GEMM's).
  zone_h, zone_c (T, B, H): zoneout, h_t = m h_{t-1} + (1 - m) h~_t (and c likewise for
    the LSTM), m in {0, 1} in training and the rate p at inference (its expectation).
Helpers shared by the cells (compiled once per dtype, called out of line: only the masked
path calls them).
"""
from kernels.config import jit


@jit
def scale_rows(rows, mask):
    """rows (B, N) *= mask (B, N)."""
    for b in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            rows[b, j] *= mask[b, j]


@jit
def masked_rows(out, rows, mask):
    """out (B, N) = rows (B, N) * mask (B, N)."""
    for b in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            out[b, j] = rows[b, j] * mask[b, j]


@jit
def zoneout_forward(new, prev, keep, reset):
    """new (N,) = keep * prev + (1 - keep) * new: the unit keeps its previous value with
    weight keep (N,); prev (N,) counts as zero when `reset` (a new series)."""
    one = new.dtype.type(1)
    if reset:
        for j in range(new.shape[0]):
            new[j] = (one - keep[j]) * new[j]
    else:
        for j in range(new.shape[0]):
            new[j] = keep[j] * prev[j] + (one - keep[j]) * new[j]


@jit
def zoneout_backward(dh, state, carry, keep):
    """Before a cell's backward step, all (N,): the total dL/dh_t = dh + state splits into
    the candidate's share dh = (1 - keep) dL/dh_t (state = 0, so the cell sees exactly it)
    and carry = keep dL/dh_t, the gradient of h_{t-1} through h_t = keep h_{t-1} + ..."""
    one = dh.dtype.type(1)
    for j in range(dh.shape[0]):
        total = dh[j] + state[j]
        carry[j] = keep[j] * total
        dh[j] = (one - keep[j]) * total
        state[j] = 0


@jit
def zoneout_cell_backward(dc, carry, keep):
    """The LSTM's c: dc (N,) in: dL/dc_t; out: the candidate's share (1 - keep) dL/dc_t;
    carry (N,) = keep dL/dc_t, the gradient of c_{t-1} through c_t = keep c_{t-1} + ..."""
    one = dc.dtype.type(1)
    for j in range(dc.shape[0]):
        carry[j] = keep[j] * dc[j]
        dc[j] = (one - keep[j]) * dc[j]


@jit
def lstm_candidate(out, gates, c_prev, reset, H):
    """out (H,) = f * c_{t-1} + i * g, the LSTM's candidate cell state from the activated
    gates (4H,) i, f, g, o (recomputed for backward, as forward computed it); c_prev (H,)
    counts as zero when `reset`."""
    for j in range(H):
        if reset:
            out[j] = gates[j] * gates[2 * H + j]
        else:
            out[j] = gates[H + j] * c_prev[j] + gates[j] * gates[2 * H + j]


@jit
def add_rows(out, rows):
    """out (B, N) += rows (B, N)."""
    for b in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[b, j] += rows[b, j]


@jit
def masked_columns(out, rows, mask, lo, width):
    """out[:, lo:lo+width] = rows[:, lo:lo+width] * mask[:, lo:lo+width], all (B, H): one
    hidden block's units."""
    for b in range(rows.shape[0]):
        for u in range(lo, lo + width):
            out[b, u] = rows[b, u] * mask[b, u]


@jit
def scale_columns(rows, mask, lo):
    """rows (B, Hb) *= mask[:, lo:lo+Hb], mask (B, H): one hidden block's units."""
    for b in range(rows.shape[0]):
        for u in range(rows.shape[1]):
            rows[b, u] *= mask[b, lo + u]
