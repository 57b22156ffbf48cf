"""Elman RNN layer over one chunk: h' = act(W_ih x + b_ih + W_hh h + b_hh), act tanh or relu."""
import numpy as np

from kernels.common import gate_weight_gradients
from kernels.config import jit


@jit
def rnn_forward(h, gates, recurrent, x, weight_ih, weight_hh, bias_ih, bias_hh, relu):
    """h: (T+1, B, H); row 0 holds the initial state (input), rows 1.. are written.
    gates: (T, B, H) scratch for the hoisted input projection (reused by backward).
    recurrent: (B, H) scratch. x: (T, B, I). weight_ih: (H, I). weight_hh: (H, H).
    biases: (H,). relu: True for ReLU, False for tanh."""
    T, B, I = x.shape
    H = h.shape[2]
    zero = h.dtype.type(0)
    np.dot(x.reshape(T * B, I), weight_ih.T, gates.reshape(T * B, H))
    for t in range(T):
        np.dot(h[t], weight_hh.T, recurrent)  # (B, H) x (H, H)
        for b in range(B):
            for j in range(H):
                pre = gates[t, b, j] + recurrent[b, j] + bias_ih[j] + bias_hh[j]
                h[t + 1, b, j] = max(pre, zero) if relu else np.tanh(pre)


@jit
def rnn_backward(dx, dweight_ih, dweight_hh, dbias_ih, dbias_hh, dh_state, dh_norm_sq,
                 dh, h, gates, x, weight_ih, weight_hh, relu, need_dx):
    """Backward over the chunk that rnn_forward filled; overwrites every gradient output.

    dx: (T, B, I) out (only if need_dx). dweight_*, dbias_*: out. dh_state: (B, H) in:
    dL/d(final h); out: dL/dh_0. dh_norm_sq: (T,) out. dh: (T, B, H) in, dL/dh_t from
    above. h: forward cache. gates: overwritten with the pre-activation gradients."""
    T, B, I = x.shape
    H = h.shape[2]
    one = h.dtype.type(1)
    zero = h.dtype.type(0)
    for t in range(T - 1, -1, -1):
        norm_sq = zero
        for b in range(B):
            for j in range(H):
                dh_t = dh[t, b, j] + dh_state[b, j]
                norm_sq += dh_t * dh_t
                h_t = h[t + 1, b, j]
                if relu:
                    gates[t, b, j] = dh_t if h_t > zero else zero
                else:
                    gates[t, b, j] = dh_t * (one - h_t * h_t)
        dh_norm_sq[t] = norm_sq
        np.dot(gates[t], weight_hh, dh_state)  # (B, H) x (H, H)
    gate_weight_gradients(dx, dweight_ih, dweight_hh, dbias_ih, dbias_hh,
                          gates, gates, h, x, weight_ih, need_dx)
