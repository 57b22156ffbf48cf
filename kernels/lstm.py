"""LSTM layer over one chunk, PyTorch's formulation, gate order i, f, g, o:

    i, f, o = sigmoid(.), g = tanh(.)   of   W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)
"""
import numpy as np

from kernels.activations import sigmoid
from kernels.common import gate_weight_gradients
from kernels.config import jit


@jit
def lstm_forward(h, c, gates, recurrent, x, weight_ih, weight_hh, bias_ih, bias_hh):
    """h, c: (T+1, B, H); row 0 holds the initial state (input), rows 1.. are written.
    gates: (T, B, 4H) out, the activated gates i, f, g, o (kept for the backward pass).
    recurrent: (B, 4H) scratch. x: (T, B, I). weight_ih: (4H, I). weight_hh: (4H, H).
    bias_ih, bias_hh: (4H,)."""
    T, B, I = x.shape
    H = h.shape[2]
    one = h.dtype.type(1)
    # Input projection of the whole chunk: one GEMM, (T*B, I) x (I, 4H).
    np.dot(x.reshape(T * B, I), weight_ih.T, gates.reshape(T * B, 4 * H))
    for t in range(T):
        np.dot(h[t], weight_hh.T, recurrent)  # (B, H) x (H, 4H)
        for b in range(B):
            for j in range(H):
                i = sigmoid(gates[t, b, j] + recurrent[b, j] + bias_ih[j] + bias_hh[j], one)
                jf = H + j
                f = sigmoid(gates[t, b, jf] + recurrent[b, jf] + bias_ih[jf] + bias_hh[jf], one)
                jg = 2 * H + j
                g = np.tanh(gates[t, b, jg] + recurrent[b, jg] + bias_ih[jg] + bias_hh[jg])
                jo = 3 * H + j
                o = sigmoid(gates[t, b, jo] + recurrent[b, jo] + bias_ih[jo] + bias_hh[jo], one)
                c_t = f * c[t, b, j] + i * g
                c[t + 1, b, j] = c_t
                h[t + 1, b, j] = o * np.tanh(c_t)
                gates[t, b, j] = i
                gates[t, b, jf] = f
                gates[t, b, jg] = g
                gates[t, b, jo] = o


@jit
def lstm_backward(dx, dweight_ih, dweight_hh, dbias_ih, dbias_hh, dh_state, dc_state,
                  dh_norm_sq, dh, h, c, gates, x, weight_ih, weight_hh, need_dx):
    """Backward over the chunk that lstm_forward filled; overwrites every gradient output.

    dx: (T, B, I) out, dL/dx (written only if need_dx). dweight_*, dbias_*: out, shaped
    like the parameters. dh_state, dc_state: (B, H) in: dL/d(final h, c); out: dL/d(h_0,
    c_0). dh_norm_sq: (T,) out, squared norm of the total dL/dh_t per step (diagnostics).
    dh: (T, B, H) in, dL/dh_t from above (head or next layer). h, c, gates: the forward
    caches; gates is overwritten with the pre-activation gate gradients."""
    T, B, I = x.shape
    H = h.shape[2]
    one = h.dtype.type(1)
    for t in range(T - 1, -1, -1):
        norm_sq = h.dtype.type(0)
        for b in range(B):
            for j in range(H):
                dh_t = dh[t, b, j] + dh_state[b, j]
                norm_sq += dh_t * dh_t
                jf = H + j
                jg = 2 * H + j
                jo = 3 * H + j
                i = gates[t, b, j]
                f = gates[t, b, jf]
                g = gates[t, b, jg]
                o = gates[t, b, jo]
                tanh_c = np.tanh(c[t + 1, b, j])  # recomputed rather than stored
                # c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)
                dc_t = dc_state[b, j] + dh_t * o * (one - tanh_c * tanh_c)
                gates[t, b, j] = dc_t * g * i * (one - i)
                gates[t, b, jf] = dc_t * c[t, b, j] * f * (one - f)
                gates[t, b, jg] = dc_t * i * (one - g * g)
                gates[t, b, jo] = dh_t * tanh_c * o * (one - o)
                dc_state[b, j] = dc_t * f
        dh_norm_sq[t] = norm_sq
        np.dot(gates[t], weight_hh, dh_state)  # (B, 4H) x (4H, H): dL/dh_{t-1} via W_hh
    gate_weight_gradients(dx, dweight_ih, dweight_hh, dbias_ih, dbias_hh,
                          gates, gates, h, x, weight_ih, need_dx)

