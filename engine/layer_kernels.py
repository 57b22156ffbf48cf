"""One direction of one layer over a chunk: the cell's forward or backward kernel call
(kernels/lstm.py, gru.py, rnn.py) with the layer's masks (kernels/masks.py), shared by
one-directional and bidirectional layers."""
import numpy as np

from kernels.gru import gru_backward, gru_forward
from kernels.lstm import lstm_backward, lstm_forward
from kernels.rnn import rnn_backward, rnn_forward


def run_forward(model, parameters, buffers, layer_input, resets, masked=False):
    """Fill `buffers` (engine.workspace.LayerBuffers, h[0] (and c[0]) set) over
    layer_input (T, B, I_k) with resets (T, B); parameters: (weight_ih, weight_hh,
    bias_ih, bias_hh) of this layer and direction. masked: the trainer's masks in
    `buffers` apply (else none, and zoneout's expectation; LayerBuffers.forward_masks)."""
    weight_ih, weight_hh, bias_ih, bias_hh = parameters
    np.copyto(buffers.weight_hh_t, weight_hh.T)
    weight_hh = buffers.weight_hh_t  # (H, G*H) contiguous: the faster GEMM layout
    masks = buffers.forward_masks(model.cell, masked)
    if model.cell == "lstm":
        lstm_forward(buffers.h, buffers.c, buffers.gates, buffers.recurrent,
                     layer_input, resets, weight_ih, weight_hh, bias_ih, bias_hh, *masks)
    elif model.cell == "gru":
        gru_forward(buffers.h, buffers.gates, buffers.hidden_n, buffers.recurrent,
                    layer_input, resets, weight_ih, weight_hh, bias_ih, bias_hh, *masks)
    else:
        rnn_forward(buffers.h, buffers.gates, buffers.recurrent,
                    layer_input, resets, weight_ih, weight_hh, bias_ih, bias_hh, model.relu, *masks)


def run_backward(model, weight_hh, buffers, grads, above_grad, above_weight, layer_input, resets, masked=False):
    """Backward through the direction run_forward filled: grads (dweight_ih, dweight_hh,
    dbias_ih, dbias_hh) are overwritten; dL/dh_t from above is above_grad[t] (B, K) times
    above_weight (K, H), times dropout's mask buffers.drop[t] when masked;
    buffers.dh_state (and dc_state) hold dL/d(final state) on entry. masked: as the
    forward ran."""
    masks = buffers.backward_masks(model.cell, masked)
    if model.cell == "lstm":
        lstm_backward(*grads, buffers.dh_state, buffers.dc_state, buffers.dh_norm_sq,
                      buffers.dh, above_grad, above_weight, buffers.h, buffers.c,
                      buffers.gates, layer_input, resets, weight_hh, *masks)
    elif model.cell == "gru":
        gru_backward(*grads, buffers.dh_state, buffers.dh_norm_sq, buffers.dh, buffers.direct,
                     above_grad, above_weight, buffers.h, buffers.gates, buffers.hidden_n,
                     layer_input, resets, weight_hh, *masks)
    else:
        rnn_backward(*grads, buffers.dh_state, buffers.dh_norm_sq, buffers.dh, above_grad,
                     above_weight, buffers.h, buffers.gates, layer_input, resets, weight_hh,
                     model.relu, *masks)
