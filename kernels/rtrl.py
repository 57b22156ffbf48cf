"""Forward-mode gradients over a chunk that a cell's forward kernel has filled: exact RTRL
(Williams & Zipser 1989) and UORO's rank-one estimate (Tallec & Ollivier 2018).

Per stream and layer the influence M = d state / d theta of the recurrent parameters
(theta: the first P entries of the flat buffer, every layer's weight_ih, weight_hh,
bias_ih, bias_hh) is carried from step to step as M(t) = J M(t-1) + J_x M(below, t) +
the immediate term: J, the new state's derivative by the state entering, is per unit of
the cell a dense part, (the cell's element-wise derivative) x W_hh, on h, and a diagonal
part on c (LSTM: f) or h (GRU: z); J_x likewise through W_ih.

The dense products, (S, H) x (H, W) for a block of W parameter columns (S state rows
per layer: LSTM's c and h, 2H, else H), are the work: one GEMM per stream, layer, step
and block, half the FLOP of multiplying d gates / d theta by W_hh first ((G*H, H) x
(H, W)) for LSTM, a third for GRU. The Jacobians are formed once per stream and step,
then shared by the blocks; the rest is one element-wise pass over the block, which the
GEMM has just left in cache. The influence is laid out (B, L, N, H, W): N blocks of W
columns, each stream's (H, W) block of a layer contiguous. The caches read are the
forward kernels' own (kernels/lstm.py, gru.py, rnn.py): h, c (T+1, B, H) (row t the
output of step t - 1, not zeroed at a reset: a reset is read from `resets` here), the
activated gates (T, B, G*H), GRU's W_hn h + b_hn (T, B, H). Layer tuples (one array per
layer) are Numba UniTuples: every layer's arrays have the same type (RNN and GRU pass h
for c).

cell: 0 RNN, 1 LSTM, 2 GRU. offsets (L, 4): the flat offsets of each layer's weight_ih,
weight_hh, bias_ih, bias_hh.
"""
import numba
import numpy as np

from kernels.activations import tanh
from kernels.common import add_into, zero_fill
from kernels.config import JIT_OPTIONS, inline_jit, jit
from kernels.gemm import gemm

RNN, LSTM, GRU = 0, 1, 2
CELL_CODES = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


@jit
def add_row(d, j, first, values, scale, p0):
    """d[j, first + i - p0] += scale values[i] for the i whose column falls in d's block
    (columns p0 .. p0 + width - 1 of the whole P)."""
    width = d.shape[1]
    lo = max(first, p0)
    hi = min(first + values.shape[0], p0 + width)
    for p in range(lo, hi):
        d[j, p - p0] += scale * values[p - first]


@inline_jit
def block_rows(first, length, rows, p0, width):
    """(lo, hi): the rows j < rows of a row-major block (rows, length) at flat offset
    `first` with an entry among the columns p0 .. p0 + width - 1."""
    return max(0, (p0 - first) // length), min(rows, -(-(p0 + width - first) // length))


@jit
def add_immediate(d_state, factors_x, factors_h, x_in, h_prev, reset, offsets_k, p0):
    """The immediate term d state / d theta of one stream's step (inputs held fixed), added
    into d_state (R, width) within the block of columns p0 .. p0 + width - 1: gate row q's
    input-side pre-activation sum_i W_ih[q, i] x_in[i] + b_ih[q] reaches state row
    part H + q % H with weight factors_x[part, q], the hidden side's likewise from h_prev
    (H,) (zero at a reset: nothing to add), W_hh and b_hh with factors_h (state_factors).
    Only the gate rows with a column in the block are visited (a block holds a few)."""
    parts, rows = factors_x.shape
    width = d_state.shape[1]
    I, H = x_in.shape[0], h_prev.shape[0]
    ih, hh, bih, bhh = offsets_k[0], offsets_k[1], offsets_k[2], offsets_k[3]
    for part in range(parts):
        lo, hi = block_rows(ih, I, rows, p0, width)
        for q in range(lo, hi):
            add_row(d_state, part * H + q % H, ih + q * I, x_in, factors_x[part, q], p0)
        if not reset:
            lo, hi = block_rows(hh, H, rows, p0, width)
            for q in range(lo, hi):
                add_row(d_state, part * H + q % H, hh + q * H, h_prev, factors_h[part, q], p0)
        for first, factors in ((bih, factors_x), (bhh, factors_h)):
            lo, hi = block_rows(first, 1, rows, p0, width)
            for q in range(lo, hi):
                d_state[part * H + q % H, first + q - p0] += factors[part, q]


@inline_jit
def rnn_slope(relu, h_new, one, zero):
    """d h' / d a of an RNN unit from its output h' = act(a)."""
    if relu:
        return one if h_new > zero else zero
    return one - h_new * h_new


@inline_jit
def lstm_coefficients(i, f, g, o, c, c_new, one):
    """An LSTM unit's d c' / d a_i, a_f, a_g and d h' / d a_o, d c' (c' = f c + i g,
    h' = o tanh(c'); i, f, o = sigmoid, g = tanh), c the cell state entering."""
    tanh_c = tanh(c_new)
    return g * i * (one - i), c * f * (one - f), i * (one - g * g), tanh_c * o * (one - o), o * (one - tanh_c * tanh_c)


@inline_jit
def lstm_influence(f, k_i, k_f, k_g, k_o, k_c, m_c, d_i, d_f, d_g, d_o):
    """One entry of an LSTM unit's new (m_c, m_h) from m_c entering and d a of its gates."""
    m = f * m_c + k_i * d_i + k_f * d_f + k_g * d_g
    return m, k_o * d_o + k_c * m


@inline_jit
def gru_influence(r, z, n, h, hidden_n, m_h, x_r, h_r, x_z, h_z, x_n, h_n, one):
    """One entry of a GRU unit's new m_h (r, z = sigmoid(x_. + h_.), n = tanh(x_n + r h_n),
    h' = (1 - z) n + z h) from m_h entering and d a of both sides (x_., h_.)."""
    d_r = r * (one - r) * (x_r + h_r)
    d_z = z * (one - z) * (x_z + h_z)
    d_n = (one - n * n) * (x_n + r * h_n + hidden_n * d_r)
    return (one - z) * d_n + (h - n) * d_z + z * m_h


@jit
def state_factors(cell, relu, factors, diagonal, gates, hidden_n, h_prev, c_prev, h_new, c_new, reset):
    """How one stream's new state at one step moves with the step's gate pre-activations
    and with the state entering, unit by unit (the cell's derivative, as in
    lstm_influence, gru_influence). State rows: part 0 LSTM's c, else h; part 1 LSTM's h.
    factors (4, G*H) out: [part] the weight of gate row q's input-side pre-activation in
    state row (part, q % H), [2 + part] the hidden side's (they differ in GRU's n gate).
    diagonal (2, H) out: [part] the weight of the entering c (LSTM) or h (GRU: z) in state
    row (part, j); RNN has none (0). gates (G*H,), hidden_n, h_prev, c_prev, h_new, c_new
    (H,) as in the forward caches; h_prev, c_prev read as zero at a reset."""
    H = h_new.shape[0]
    one = h_new.dtype.type(1)
    zero = h_new.dtype.type(0)
    if cell == RNN:
        for j in range(H):
            slope = rnn_slope(relu, h_new[j], one, zero)
            factors[0, j] = factors[2, j] = slope
            diagonal[0, j] = zero
    elif cell == LSTM:  # c' = f c + k_i a_i + k_f a_f + k_g a_g, h' = k_o a_o + k_c c'
        for j in range(H):
            i, f, g, o = gates[j], gates[H + j], gates[2 * H + j], gates[3 * H + j]
            k_i, k_f, k_g, k_o, k_c = lstm_coefficients(i, f, g, o, zero if reset else c_prev[j], c_new[j], one)
            for side in (0, 2):
                factors[side, j], factors[side, H + j], factors[side, 2 * H + j] = k_i, k_f, k_g
                factors[side, 3 * H + j] = zero
                factors[side + 1, j], factors[side + 1, H + j] = k_c * k_i, k_c * k_f
                factors[side + 1, 2 * H + j], factors[side + 1, 3 * H + j] = k_c * k_g, k_o
            diagonal[0, j], diagonal[1, j] = f, k_c * f
    else:  # h' = (1 - z) n + z h: the n gate's hidden side is r (W_hn h + b_hn)
        for j in range(H):
            r, z, n = gates[j], gates[H + j], gates[2 * H + j]
            h = zero if reset else h_prev[j]
            k_n = (one - z) * (one - n * n)
            k_r = k_n * hidden_n[j] * r * (one - r)
            k_z = (h - n) * z * (one - z)
            factors[0, j] = factors[2, j] = k_r
            factors[0, H + j] = factors[2, H + j] = k_z
            factors[0, 2 * H + j], factors[2, 2 * H + j] = k_n, k_n * r
            diagonal[0, j] = z


@jit
def state_jacobian(jacobian, weight, factors):
    """jacobian (parts H, K): the new state's derivative by a layer input (h entering, or
    the layer below's output) through one weight (G*H, K) (W_hh or W_ih): row (part, j)
    = sum over the gates g of factors[part, g H + j] weight[g H + j] (factors (parts, G*H)).
    The cell's element-wise derivative folded into the weight once per stream and step,
    so that each block's product is (parts H, H) x (H, W) and not (G*H, H) x (H, W)."""
    parts = factors.shape[0]
    H = jacobian.shape[0] // parts
    G = weight.shape[0] // H
    for part in range(parts):
        for j in range(H):
            row = jacobian[part * H + j]
            zero_fill(row)
            for g in range(G):
                factor, gate_row = factors[part, g * H + j], weight[g * H + j]
                for i in range(row.shape[0]):
                    row[i] += factor * gate_row[i]


@jit
def new_influence(cell, m_h, m_c, d_state, diagonal):
    """One stream's new influence of one layer (H, W), in place: d_state (parts H, W) (the
    Jacobians' products and the immediate term) plus the entering influence along the
    diagonal (state_factors): LSTM m_h = d_h + k_c f m_c, m_c = d_c + f m_c; GRU
    m_h = d + z m_h; RNN m_h = d. The column loop is the inner one (it vectorises)."""
    H, W = m_h.shape
    for j in range(H):
        row_h = m_h[j]
        if cell == LSTM:
            keep_c, keep_h, row_c, d_c, d_h = diagonal[0, j], diagonal[1, j], m_c[j], d_state[j], d_state[H + j]
            for p in range(W):
                entering = row_c[p]
                row_h[p] = d_h[p] + keep_h * entering
                row_c[p] = d_c[p] + keep_c * entering
        elif cell == GRU:
            keep, d = diagonal[0, j], d_state[j]
            for p in range(W):
                row_h[p] = d[p] + keep * row_h[p]
        else:
            d = d_state[j]
            for p in range(W):
                row_h[p] = d[p]


@jit
def cell_tangent(cell, relu, m_h, m_c, d_x, d_h, gates, hidden_n, h_prev, c_prev, h_new, c_new, reset):
    """One stream's new tangent of one layer (UORO's state-sized vector), in place: m_h,
    m_c (H,) in: of the state entering the step (zero where `reset`); out: of the new
    state. d_x, d_h (G*H,): d a of the gates' input and hidden sides (RNN and LSTM: their
    sum in d_h). gates (G*H,) activated, hidden_n (H,) GRU's W_hn h + b_hn, h_prev, c_prev
    (H,) the state entering, h_new, c_new (H,) the step's output. One loop over the units
    per cell, which vectorises."""
    H = m_h.shape[0]
    one = m_h.dtype.type(1)
    zero = m_h.dtype.type(0)
    if cell == RNN:
        for j in range(H):
            m_h[j] = rnn_slope(relu, h_new[j], one, zero) * d_h[j]
    elif cell == LSTM:
        for j in range(H):
            i, f, g, o = gates[j], gates[H + j], gates[2 * H + j], gates[3 * H + j]
            k_i, k_f, k_g, k_o, k_c = lstm_coefficients(i, f, g, o, zero if reset else c_prev[j], c_new[j], one)
            m_c[j], m_h[j] = lstm_influence(f, k_i, k_f, k_g, k_o, k_c, m_c[j], d_h[j], d_h[H + j], d_h[2 * H + j],
                                            d_h[3 * H + j])
    else:
        for j in range(H):
            m_h[j] = gru_influence(gates[j], gates[H + j], gates[2 * H + j], zero if reset else h_prev[j],
                                   hidden_n[j], m_h[j], d_x[j], d_h[j], d_x[H + j], d_h[H + j], d_x[2 * H + j],
                                   d_h[2 * H + j], one)


@inline_jit
def layer_step(cell, m_h, m_c, m_below, below, d_state, d_below, jacobian_x, jacobian_h, factors, diagonal, x_in,
               h_prev, reset, offsets_k, p0):
    """One stream's influence (H, width) of one layer carried over one step, in place, for
    the block of parameter columns p0 .. p0 + width - 1 (columns evolve independently):
    the state Jacobians' products with the influence entering (jacobian_h) and with the
    layer below's new one (m_below, read when `below`: the first layer's input does not
    depend on theta), the step's own d state / d theta, then the diagonal part
    (new_influence). d_state, d_below (parts H, width): scratch. A reset zeroes the
    influence entering the step."""
    if reset:
        zero_fill(m_h.reshape(-1))
        zero_fill(m_c.reshape(-1))
        zero_fill(d_state.reshape(-1))
    else:
        gemm(jacobian_h, m_h, d_state)  # (parts H, H) x (H, W): the influence product
    if below:
        gemm(jacobian_x, m_below, d_below)  # (parts H, H) x (H, W)
        add_into(d_state.reshape(-1), d_below.reshape(-1))
    parts = d_state.shape[0] // m_h.shape[0]
    add_immediate(d_state, factors[:parts], factors[2:2 + parts], x_in, h_prev, reset, offsets_k, p0)
    new_influence(cell, m_h, m_c, d_state, diagonal)


@inline_jit
def top_gradient(dh_top, dy_tb, head_weight):
    """dh_top (H,) = dy_tb (O,) head_weight (O, H): dL_t/dh_top of one stream; whether
    any entry is non-zero (a step without a counted target has nothing to add)."""
    zero_fill(dh_top)
    any_target = False
    for o in range(dy_tb.shape[0]):
        if dy_tb[o] != 0:
            any_target = True
            for j in range(dh_top.shape[0]):
                dh_top[j] += dy_tb[o] * head_weight[o, j]
    return any_target


@jit
def rtrl_chunk(grad, influence_h, influence_c, jacobians, factors, diagonals, d_state, d_below, dh_top, hs, cs,
               gates, hidden_ns, x, resets, dy, weights_ih, weights_hh, head_weight, offsets, cell, relu, first):
    """Exact RTRL over a chunk of T steps for the streams first .. first + S - 1 of the
    caches (a shard's): overwrites grad (P,) with their share of the gradient of the loss
    whose dL/dy_hat is dy (T, B, O), through the recurrent parameters (the head's own
    gradient is head_backward's), and carries their influence_h, influence_c (S, L, N, H, W)
    (LSTM's c; the others pass influence_h) across the chunk in place: the P columns in N
    blocks of W (N W >= P; the columns past P stay zero), each block contiguous.

    Per stream, the state Jacobians of every step and layer are formed first (jacobians
    (T', L, 2, parts H, H), T' >= T: [0] by the layer below's output, [1] by h entering;
    factors (T', L, 4, G*H), diagonals (T', L, 2, H): state_factors), then reused by
    every block. Columns evolve independently, and streams too: each stream's block is
    carried through all T steps (every layer) before the next block, so that it stays in
    cache for the chunk (the influence is far larger than the caches: walked step by
    step, each step would stream all of it from memory). grad's sums run over streams,
    then steps.

    d_state, d_below (parts H, W), dh_top (H,): scratch (parts: 2 for LSTM's c and h, else
    1). hs, cs (T+1, B, H), gates (T, B, G*H), hidden_ns (T, B, H): per-layer tuples of
    the forward caches. x (T, B, I). resets (T, B). weights_ih, weights_hh: per-layer
    tuples (G*H, I_k), (G*H, H). head_weight (O, H). offsets (L, 4), cell, relu: see the
    module."""
    T = resets.shape[0]
    S, L = influence_h.shape[0], len(hs)
    blocks, width = influence_h.shape[2], influence_h.shape[4]
    P = grad.shape[0]
    parts = d_state.shape[0] // dh_top.shape[0]
    zero_fill(grad)
    for s in range(S):
        b = first + s
        for t in range(T):  # the step's Jacobians, shared by the blocks
            for k in range(L):
                state_factors(cell, relu, factors[t, k], diagonals[t, k], gates[k][t, b], hidden_ns[k][t, b],
                              hs[k][t, b], cs[k][t, b], hs[k][t + 1, b], cs[k][t + 1, b], resets[t, b])
                if not resets[t, b]:
                    state_jacobian(jacobians[t, k, 1], weights_hh[k], factors[t, k, 2:2 + parts])
                if k > 0:
                    state_jacobian(jacobians[t, k, 0], weights_ih[k], factors[t, k, :parts])
        for n in range(blocks):
            p0 = n * width
            columns = min(width, P - p0)
            block = grad[p0:p0 + columns]
            for t in range(T):
                for k in range(L):
                    below = k > 0
                    layer_step(cell, influence_h[s, k, n], influence_c[s, k, n], influence_h[s, max(k - 1, 0), n],
                               below, d_state, d_below, jacobians[t, k, 0], jacobians[t, k, 1], factors[t, k],
                               diagonals[t, k], hs[k - 1][t + 1, b] if below else x[t, b], hs[k][t, b],
                               resets[t, b], offsets[k], p0)
                if top_gradient(dh_top, dy[t, b], head_weight):
                    m_top = influence_h[s, L - 1, n]
                    for j in range(dh_top.shape[0]):  # grad += dh_top M_top
                        coefficient, row = dh_top[j], m_top[j]
                        for q in range(columns):  # an index from 0 (p0 + q would not vectorise)
                            block[q] += coefficient * row[q]


@jit
def step_vjp(cell, relu, nu_h, nu_c, carry_in, carry_out, below, da_x, da_h, weight_ih, gates, hidden_n, h_prev,
             c_prev, h_new, c_new, reset):
    """nu^T d state_t / d a of one stream's layer, the state entering held fixed: the
    weights da_x, da_h (G*H,) out of the input- and hidden-side pre-activations, whose
    outer products with (x_in, 1) and (h_prev, 1) are nu^T d state_t / d theta of the
    layer's weight_ih, bias_ih and weight_hh, bias_hh (theta_step applies them). RNN and
    LSTM's two sides are the same: only da_x is written (one output array per loop and one
    loop per cell, so that the loops vectorise). nu_h, nu_c (H,): the weights of the
    layer's new h and c (nu_c LSTM only); carry_in (H,): what the layer above adds to nu_h
    through this layer's output (backpropagated within the step). carry_out (I_k,): out,
    the same for the layer below (when `below`)."""
    H = h_new.shape[0]
    one = h_new.dtype.type(1)
    zero = h_new.dtype.type(0)
    if cell == RNN:  # h' = act(a)
        for j in range(H):
            dh = nu_h[j] + carry_in[j]
            if relu:
                da_x[j] = dh if h_new[j] > zero else zero
            else:
                da_x[j] = dh * (one - h_new[j] * h_new[j])
    elif cell == LSTM:  # c' = f c + i g, h' = o tanh(c')
        for j in range(H):
            dh = nu_h[j] + carry_in[j]
            i, f, g, o = gates[j], gates[H + j], gates[2 * H + j], gates[3 * H + j]
            c = zero if reset else c_prev[j]
            tanh_c = tanh(c_new[j])
            dc = nu_c[j] + dh * o * (one - tanh_c * tanh_c)
            da_x[j] = dc * g * i * (one - i)
            da_x[H + j] = dc * c * f * (one - f)
            da_x[2 * H + j] = dc * i * (one - g * g)
            da_x[3 * H + j] = dh * tanh_c * o * (one - o)
    else:  # r, z = sigmoid(x_. + h_.), n = tanh(x_n + r h_n), h' = (1 - z) n + z h
        for j in range(H):
            dh = nu_h[j] + carry_in[j]
            r, z, n = gates[j], gates[H + j], gates[2 * H + j]
            h = zero if reset else h_prev[j]
            da_n = dh * (one - z) * (one - n * n)
            da_r = da_n * hidden_n[j] * r * (one - r)
            da_z = dh * (h - n) * z * (one - z)
            da_x[j], da_x[H + j], da_x[2 * H + j] = da_r, da_z, da_n
            da_h[j], da_h[H + j], da_h[2 * H + j] = da_r, da_z, da_n * r
    if below:  # the layer below's output x_in: carry_out = W_ih^T da_x
        zero_fill(carry_out)
        for j in range(da_x.shape[0]):
            for i in range(weight_ih.shape[1]):
                carry_out[i] += weight_ih[j, i] * da_x[j]


@numba.njit(fastmath={"reassoc", "contract"}, **JIT_OPTIONS)
def squared_sum(values):
    """Sum of squares of values (N,), in float64 (reassociation lets it vectorise; an
    index loop, as `for value in values` does not)."""
    total = 0.0
    for i in range(values.shape[0]):
        total += np.float64(values[i]) * np.float64(values[i])
    return total


@numba.njit(fastmath={"reassoc", "contract"}, **JIT_OPTIONS)
def theta_squared_norm(row):
    """|row|^2 of theta~ (P,): partial sums of 512 entries in row's dtype (float32 lanes:
    twice common.squared_norm's float64 rate; relative error ~1e-7, ample for UORO's
    scaling), added in float64."""
    total = 0.0
    for start in range(0, row.shape[0], 512):
        block = row[start:start + 512]
        part = row.dtype.type(0)
        for i in range(block.shape[0]):  # an index from 0: a shifted one would not vectorise
            part += block[i] * block[i]
        total += part
    return total


@jit
def theta_step(theta, keep, add, da_x, da_h, x_in, h_prev, reset, offsets_k):
    """One layer's blocks of one stream's theta~ (P,), in place: theta~ keep + add v, v =
    nu^T d state / d theta, the outer products of step_vjp's weights da_x, da_h (G*H,)
    with (x_in, 1) and (h_prev, 1) (h_prev zero at a reset): weight_ih by columns (the
    inputs are few: a row of I entries is too short a loop), weight_hh by rows."""
    rows, I, H = da_x.shape[0], x_in.shape[0], h_prev.shape[0]
    ih, hh, bih, bhh = offsets_k[0], offsets_k[1], offsets_k[2], offsets_k[3]
    for i in range(I):
        column, value = theta[ih + i:ih + rows * I:I], x_in[i]
        for j in range(rows):
            column[j] = column[j] * keep + (add * da_x[j]) * value
    for j in range(rows):
        block, scale = theta[hh + j * H:hh + (j + 1) * H], add * da_h[j]
        if reset:
            for i in range(H):
                block[i] = block[i] * keep
        else:
            for i in range(H):
                block[i] = block[i] * keep + scale * h_prev[i]
    for block, weights in ((theta[bih:bih + rows], da_x), (theta[bhh:bhh + rows], da_h)):
        for j in range(rows):
            block[j] = block[j] * keep + add * weights[j]


@jit
def tangent_step(cell, relu, k, tangent_h, tangent_c, rows, d_x, d_h, weight_ih, weight_hh, gates, hidden_n,
                 h_prev, c_prev, h_new, c_new, resets):
    """J s~ of layer k for every stream at one step, in place: tangent_h, tangent_c
    (B, L, H, 1) hold on entry the tangent entering the step (zeroed at a reset) and, for
    the layers below k, their J s~ of this step. Two GEMMs for all B streams, (B, H) x
    (H, G*H) (W_hh, and W_ih from the layer below), then the cell's element-wise pass per
    stream (cell_tangent). rows (B, H), d_x, d_h (B, G*H): scratch. gates,
    hidden_n, h_prev, c_prev, h_new, c_new, resets: the step's rows (B, ...) of the caches."""
    B, H = rows.shape
    for b in range(B):
        for j in range(H):
            rows[b, j] = tangent_h[b, k, j, 0]
    gemm(rows, weight_hh.T, d_h)  # (B, H) x (H, G*H)
    sides = cell == GRU  # its n gate weighs the two sides differently
    if k > 0:
        for b in range(B):
            for j in range(H):
                rows[b, j] = tangent_h[b, k - 1, j, 0]
        gemm(rows, weight_ih.T, d_x)  # (B, H) x (H, G*H)
        if not sides:
            add_into(d_h.reshape(-1), d_x.reshape(-1))
    elif sides:
        zero_fill(d_x.reshape(-1))
    for b in range(B):
        cell_tangent(cell, relu, tangent_h[b, k].reshape(-1), tangent_c[b, k].reshape(-1), d_x[b], d_h[b], gates[b],
                     hidden_n[b], h_prev[b], c_prev[b], h_new[b], c_new[b], resets[b])


@jit
def uoro_chunk(grad, tangent_h, tangent_c, theta, theta_sq, bits, signs, rows, d_x, d_h, da_x, da_h, carries, dh_top,
               hs, cs, gates, hidden_ns, x, resets, dy, weights_ih, weights_hh, head_weight, offsets, cell, relu,
               epsilon, first):
    """UORO over a chunk of T steps for the streams first .. first + S - 1 of the caches (a
    shard's): overwrites grad (P,) with their share of the rank-one estimate of the
    gradient RTRL gives (arguments as in rtrl_chunk), and carries each stream's pair in
    place: tangent_h, tangent_c (S, L, H, 1) the state-sized vector s~ (LSTM's c part; the
    others pass tangent_h), theta (S, P) the parameter-sized one, influence ~ s~ theta^T.

    Per step and stream: s~ <- rho0 J s~ + rho1 nu, theta <- theta / rho0 + (nu^T I) / rho1,
    nu random signs (signs (L, W, H), W = 2 for LSTM's h and c, else 1, from the bits of
    bits (T, B, N) random bytes, entry q of a stream's step bit q % 8 of byte q // 8: +1
    where it is set), rho0 = sqrt((|theta| + eps) / (|J s~| + eps)), rho1 =
    sqrt((|nu^T I| + eps) / (|nu| + eps)): the variance-minimising scaling (Tallec &
    Ollivier 2018). Then grad += (dL_t/dh_top . s~_top) theta. A reset zeroes the pair.
    J s~ is formed for all streams at once per layer and step (tangent_step's GEMMs); the
    rest per stream, in stream order (grad's sums have a fixed order). |nu^T I| comes
    from the outer products' factors (|u v^T| = |u| |v|): per step and stream theta is
    walked three times (theta_step, grad's sum, theta_squared_norm), each loop vectorised.
    theta_sq (S,) float64, rows (S, H), d_x, d_h (S, G*H), da_x, da_h (L, G*H),
    carries (2, H), dh_top (H,): scratch."""
    T, S, L = resets.shape[0], theta.shape[0], len(hs)
    H = dh_top.shape[0]
    lstm = cell == LSTM
    sides = cell == GRU  # da_x and da_h differ (else step_vjp writes da_x only)
    one = signs.dtype.type(1)
    W = signs.shape[1]
    zero_fill(grad)
    last = first + S
    for s in range(S):  # |theta~|^2 per stream, then kept up to date after each step
        theta_sq[s] = theta_squared_norm(theta[s])
    for t in range(T):
        for s in range(S):
            if resets[t, first + s]:
                zero_fill(theta[s])
                theta_sq[s] = 0.0
                zero_fill(tangent_h[s].reshape(-1))
                zero_fill(tangent_c[s].reshape(-1))
        for k in range(L):  # J s~: the tangent through the step, lower layers first
            tangent_step(cell, relu, k, tangent_h, tangent_c, rows, d_x, d_h, weights_ih[k], weights_hh[k],
                         gates[k][t, first:last], hidden_ns[k][t, first:last], hs[k][t, first:last],
                         cs[k][t, first:last], hs[k][t + 1, first:last], cs[k][t + 1, first:last],
                         resets[t, first:last])
        for s in range(S):
            b = first + s
            reset = resets[t, b]
            step_bits = bits[t, b]
            for k in range(L):  # nu
                for w in range(W):
                    for j in range(H):
                        q = (k * W + w) * H + j
                        signs[k, w, j] = one if (step_bits[q >> 3] >> (q & 7)) & 1 else -one
            zero_fill(carries[1])
            vjp_sq = 0.0
            for k in range(L - 1, -1, -1):  # nu^T I: backpropagated within the step, top layer first
                below = k > 0
                x_in = hs[k - 1][t + 1, b] if below else x[t, b]
                carry_in, carry_out = carries[(L - k) % 2], carries[(L - 1 - k) % 2]
                step_vjp(cell, relu, signs[k, 0], signs[k, signs.shape[1] - 1], carry_in, carry_out, below,
                         da_x[k], da_h[k], weights_ih[k], gates[k][t, b], hidden_ns[k][t, b], hs[k][t, b],
                         cs[k][t, b], hs[k][t + 1, b], cs[k][t + 1, b], reset)
                h_sq = 0.0 if reset else squared_sum(hs[k][t, b])
                x_sq = squared_sum(da_x[k])
                vjp_sq += x_sq * (squared_sum(x_in) + 1.0) + (squared_sum(da_h[k]) if sides else x_sq) * (h_sq + 1.0)
            tangent_sq = squared_sum(tangent_h[s].reshape(-1)) + (squared_sum(tangent_c[s].reshape(-1))
                                                                  if lstm else 0.0)
            rho0 = np.sqrt((np.sqrt(theta_sq[s]) + epsilon) / (np.sqrt(tangent_sq) + epsilon))
            rho1 = np.sqrt((np.sqrt(vjp_sq) + epsilon) / (np.sqrt(L * signs.shape[1] * H) + epsilon))
            a0, a1 = theta.dtype.type(rho0), theta.dtype.type(rho1)
            for k in range(L):
                for j in range(H):
                    tangent_h[s, k, j, 0] = a0 * tangent_h[s, k, j, 0] + a1 * signs[k, 0, j]
                    if lstm:
                        tangent_c[s, k, j, 0] = a0 * tangent_c[s, k, j, 0] + a1 * signs[k, 1, j]
            weight = theta.dtype.type(0)
            if top_gradient(dh_top, dy[t, b], head_weight):
                for j in range(H):
                    weight += dh_top[j] * tangent_h[s, L - 1, j, 0]
            keep, add = theta.dtype.type(1.0 / rho0), theta.dtype.type(1.0 / rho1)
            for k in range(L):
                theta_step(theta[s], keep, add, da_x[k], da_h[k] if sides else da_x[k],
                           hs[k - 1][t + 1, b] if k > 0 else x[t, b], hs[k][t, b], reset, offsets[k])
            row = theta[s]
            if weight != 0:
                for p in range(row.shape[0]):
                    grad[p] += weight * row[p]
            theta_sq[s] = theta_squared_norm(theta[s])
