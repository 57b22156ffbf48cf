"""Pieces of the hidden-block kernels (the `split` plan, engine/split.py).

In that plan W worker threads share one chunk of all B streams, the hidden units of every
layer split into n blocks of Hb = H / n: worker w computes blocks w, w + W, .. (one each
when n = W). The gate columns of a layer are kept in block order, block k holding gate
0, 1, .. G-1 of its units (G*Hb columns), and stored block by block: gates (n, T, B, G*Hb),
so one block's part of every per-step product and of the element-wise pass is contiguous
(the element-wise pass ran at half speed on blocks strided within (T, B, GH) rows,
measured here). Every worker runs the same kernel call. Per step, each block computes its
part of the recurrent GEMM and of the element-wise pass, and for backward its own partial
dL/dh_{t-1} (B, H) over its gate columns; the workers meet once per step at a barrier
(kernels/sync.py), after which each sums the n partials of its own units. Every sum has a
fixed order, so the result depends on n, not on W or on scheduling.

The helpers shared by the three cells are compiled once (@jit, not inlined): a
specialisation per dtype serves every cell's kernel.
"""

from kernels.common import column_sums, ordered_sum, squared_norm, zero_fill, zero_reset_rows
from kernels.config import inline_jit, jit
from kernels.gemm import gemm
from kernels.masks import scale_rows
from kernels.sync import wait


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
    gemm(above_grad[0, t], above_weight[0], dh)
    for j in range(1, above_grad.shape[0]):
        gemm(above_grad[j, t], above_weight[j], scratch)
        for b in range(dh.shape[0]):
            for u in range(dh.shape[1]):
                dh[b, u] += scratch[b, u]


@jit
def input_projection(worker, workers, gates, x, weight_ih):
    """The hoisted input projection of the worker's blocks: gates[k] (T, B, G*Hb) =
    x (T, B, I) weight_ih[k]^T, weight_ih: (n, G*Hb, I)."""
    T, B, I = x.shape
    for k in range(worker, gates.shape[0], workers):
        gemm(x.reshape(T * B, I), weight_ih[k].T, gates[k].reshape(T * B, gates.shape[3]))


@jit
def seed_partials(worker, workers, partials, dh_state, T):
    """Before backward's time loop: the parity buffer step T - 1 reads holds dL/d(final h)
    (B, H) as block 0's partial and zeros as the others'."""
    for k in range(worker, partials.shape[1], workers):
        if k == 0:
            copy_row(partials[T % 2, 0].reshape(-1), dh_state.reshape(-1))
        else:
            zero_fill(partials[T % 2, k].reshape(-1))


@jit
def gradient_into_step(split, above_grad, t, above_weight, reading, k, Hb):
    """Block k's dL/dh_t at the start of backward step t: split.dh[k] (B, Hb) from above
    (see from_above); returns split.state[k] (B, Hb), dL/dh_t through time, the summed
    partials of its units."""
    from_above(split.dh[k], above_grad, t, above_weight, split.scratch[k])
    sum_partials(split.state[k], reading, k * Hb)
    return split.state[k]


@jit
def finish_state(worker, workers, dh_state, partials, Hb):
    """After step 0: dh_state (B, H) = dL/dh_0, each worker summing the partials
    (n, B, H) of its blocks' units."""
    for k in range(worker, partials.shape[0], workers):
        sum_partials(dh_state[:, k * Hb:(k + 1) * Hb], partials, k * Hb)


@jit
def share_into_previous(norms, k, dh, dgates, weight_hh, writing, resets_t, keep_prev):
    """The end of block k's backward step: the squared norm of its dL/dh_t dh (B, Hb) into
    norms[k], and its share of dL/dh_{t-1}, writing (B, H) = dgates (B, G*Hb) weight_hh
    (G*Hb, H), times recurrent dropout's mask keep_prev (B, H) (0-sized without it), zero
    for the streams reset at this step (nothing flows back past a reset)."""
    norms[k] = squared_norm(dh)
    gemm(dgates, weight_hh, writing)
    if keep_prev.shape[0] > 0:  # W_hh read the masked h_{t-1}
        scale_rows(writing, keep_prev)
    zero_reset_rows(writing, resets_t)


@jit
def meet_after_backward_step(worker, workers, sync, dh_norm_sq, norms, t):
    """The workers' barrier at the end of backward step t, after which worker 0 sums the
    blocks' squared norms (n,) into dh_norm_sq[t]. False once aborted (kernels/sync.py)."""
    if not wait(sync, workers):
        return False
    if worker == 0:
        dh_norm_sq[t] = ordered_sum(norms)
    return True


@jit
def block_weight_gradients(worker, workers, dweight, dbias, parts, bias_parts, dgates, inputs, order):
    """dweight (GH, K) = dgates^T inputs and dbias (GH, 1) its column sums, in the
    parameters' row order, each worker its own blocks' rows. dgates: (n, T*B, G*Hb);
    inputs: (T*B, K); parts (n, G*Hb, K), bias_parts (n, G*Hb, 1): scratch; order (GH,):
    the parameter row of each block-order row."""
    rows = parts.shape[1]
    for k in range(worker, dgates.shape[0], workers):
        gemm(dgates[k].T, inputs, parts[k])
        bias = bias_parts[k]
        column_sums(bias.reshape(-1), dgates[k])
        for row in range(rows):
            copy_row(dweight[order[k * rows + row]], parts[k, row])
            dbias[order[k * rows + row], 0] = bias[row, 0]


@jit
def block_gate_weight_gradients(worker, workers, dweight_ih, dweight_hh, dbias_ih, dbias_hh, split,
                                dgates, h, x, order):
    """The whole-chunk weight gradients of RNN and LSTM (whose input- and hidden-side
    pre-activation gradients are the same array; the GRU arranges its own): dgates
    (n, T, B, G*Hb); h (T+1, B, H), row t the h_{t-1} of step t; x (T, B, I); split: the
    layer's scratch (engine/split.py); outputs (biases (GH, 1)) in the parameters' row order."""
    T, B, I = x.shape
    H = h.shape[2]
    blocks = dgates.reshape(dgates.shape[0], T * B, dgates.shape[3])
    block_weight_gradients(worker, workers, dweight_ih, dbias_ih, split.ih_parts, split.bias_parts, blocks,
                           x.reshape(T * B, I), order)
    block_weight_gradients(worker, workers, dweight_hh, dbias_hh, split.hh_parts, split.bias_parts, blocks,
                           h[:T].reshape(T * B, H), order)


@inline_jit
def copy_row(out, row):
    """out[:] = row, as a loop (a slice copy compiles Numba's shape-error text)."""
    for j in range(out.shape[0]):
        out[j] = row[j]
