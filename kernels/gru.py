"""GRU layer over one chunk, PyTorch's formulation, gate order r, z, n:

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h
"""
import numpy as np

from kernels.activations import sigmoid
from kernels.common import gate_weight_gradients
from kernels.config import jit


@jit
def gru_forward(h, gates, hidden_n, recurrent, x, weight_ih, weight_hh, bias_ih, bias_hh):
    """h: (T+1, B, H); row 0 holds the initial state (input), rows 1.. are written.
    gates: (T, B, 3H) out, the activated gates r, z, n. hidden_n: (T, B, H) out,
    W_hn h_{t-1} + b_hn per step (the backward pass needs it). recurrent: (B, 3H)
    scratch. x: (T, B, I). weight_ih: (3H, I). weight_hh: (3H, H). biases: (3H,)."""
    T, B, I = x.shape
    H = h.shape[2]
    one = h.dtype.type(1)
    np.dot(x.reshape(T * B, I), weight_ih.T, gates.reshape(T * B, 3 * H))
    for t in range(T):
        np.dot(h[t], weight_hh.T, recurrent)  # (B, H) x (H, 3H)
        for b in range(B):
            for j in range(H):
                jz = H + j
                jn = 2 * H + j
                r = sigmoid(gates[t, b, j] + bias_ih[j] + recurrent[b, j] + bias_hh[j], one)
                z = sigmoid(gates[t, b, jz] + bias_ih[jz] + recurrent[b, jz] + bias_hh[jz], one)
                hn = recurrent[b, jn] + bias_hh[jn]
                n = np.tanh(gates[t, b, jn] + bias_ih[jn] + r * hn)
                h[t + 1, b, j] = (one - z) * n + z * h[t, b, j]
                gates[t, b, j] = r
                gates[t, b, jz] = z
                gates[t, b, jn] = n
                hidden_n[t, b, j] = hn


@jit
def gru_backward(dx, dweight_ih, dweight_hh, dbias_ih, dbias_hh, dh_state, dh_norm_sq,
                 dgates_hidden, direct, dh, h, gates, hidden_n, x, weight_ih, weight_hh,
                 need_dx):
    """Backward over the chunk that gru_forward filled; overwrites every gradient output.

    dx: (T, B, I) out (only if need_dx). dweight_*, dbias_*: out, shaped like the
    parameters. dh_state: (B, H) in: dL/d(final h); out: dL/dh_0. dh_norm_sq: (T,) out.
    dgates_hidden: (T, B, 3H) scratch, gradient of W_hh h + b_hh. direct: (B, H) scratch.
    dh: (T, B, H) in, dL/dh_t from above. h, gates, hidden_n: forward caches; gates is
    overwritten with the gradient of the input-side pre-activations."""
    T, B, I = x.shape
    H = h.shape[2]
    one = h.dtype.type(1)
    for t in range(T - 1, -1, -1):
        norm_sq = h.dtype.type(0)
        for b in range(B):
            for j in range(H):
                dh_t = dh[t, b, j] + dh_state[b, j]
                norm_sq += dh_t * dh_t
                jz = H + j
                jn = 2 * H + j
                r = gates[t, b, j]
                z = gates[t, b, jz]
                n = gates[t, b, jn]
                # h' = (1 - z) * n + z * h;  n = tanh(a_n + r * hn)
                dn = dh_t * (one - z) * (one - n * n)
                dr = dn * hidden_n[t, b, j] * r * (one - r)
                dz = dh_t * (h[t, b, j] - n) * z * (one - z)
                direct[b, j] = dh_t * z
                gates[t, b, j] = dr
                gates[t, b, jz] = dz
                gates[t, b, jn] = dn
                dgates_hidden[t, b, j] = dr
                dgates_hidden[t, b, jz] = dz
                dgates_hidden[t, b, jn] = dn * r
        dh_norm_sq[t] = norm_sq
        np.dot(dgates_hidden[t], weight_hh, dh_state)  # (B, 3H) x (3H, H)
        for b in range(B):
            for j in range(H):
                dh_state[b, j] += direct[b, j]
    gate_weight_gradients(dx, dweight_ih, dweight_hh, dbias_ih, dbias_hh,
                          gates, dgates_hidden, h, x, weight_ih, need_dx)
