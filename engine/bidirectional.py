"""Bidirectional layers (torch's bidirectional=True) over one chunk, composed from the
one-directional kernels: the reverse direction of layer k runs the same forward and
backward kernels on time-reversed contiguous copies (its input reversed; what reaches it
from above reversed), with its own parameters (weight_ih_l{k}_reverse, ...) and its own
training masks (recurrent dropout, zoneout; dropout on its half of the output), held
in its reversed time order.

Layer k's output at step t is [h_forward(t), h_reverse(t)] (2H), as torch's `output`:
h_forward(t) has read steps 0..t, h_reverse(t) steps t..T-1. A reset at step t (a new
series starts there) cuts both directions: the forward one enters t from a zero state,
the reverse one enters t - 1 from a zero state, so neither carries state, nor gradient,
across the boundary. Buffers: engine.workspace.PairBuffers, one per layer, beside the
two directions' LayerBuffers (torch's order: workspace.layers[2k] forward, [2k + 1]
reverse).
"""
import numpy as np

from engine.layer_kernels import run_backward, run_forward


def forward_pairs(model, workspace, x):
    """Both directions of every layer over x (T, B, I), each LayerBuffers' h[0] (and c[0])
    already set, with workspace.resets and the masks bptt._load_masks put in the
    directions' buffers (applied when workspace.masked); returns the top layer's output
    (T, B, 2H). Below the top, a pair's output holds the layer's output after dropout
    (each direction's mask, in its own time order), what the layer above reads."""
    masked = workspace.masked
    reverse_resets(workspace.reversed_resets, workspace.resets)
    H = model.hidden_size
    layer_input = x
    for k, pair in enumerate(workspace.pairs):
        forward, reverse = workspace.layers[2 * k], workspace.layers[2 * k + 1]
        run_forward(model, model.layer_parameters(k), forward, layer_input, workspace.resets, masked)
        np.copyto(pair.reversed_input, layer_input[::-1])
        run_forward(model, model.layer_parameters(k, reverse=True), reverse, pair.reversed_input,
                    workspace.reversed_resets, masked)
        if masked and forward.drop.size:  # dropout on the 2H output the layer above reads
            np.multiply(forward.h[1:], forward.drop, out=pair.output[:, :, :H])
            np.multiply(reverse.h[:0:-1], reverse.drop[::-1], out=pair.output[:, :, H:])
        else:
            np.copyto(pair.output[:, :, :H], forward.h[1:])
            np.copyto(pair.output[:, :, H:], reverse.h[:0:-1])  # reverse step s is time T - 1 - s
        layer_input = pair.output
    return layer_input


def reverse_resets(reversed_resets, resets):
    """reversed_resets (T, B): the resets (T, B) as the reverse direction meets them. A
    reset at time t cuts the state between t - 1 and t, which the reverse direction
    crosses entering its step T - t; its step 0 (time T - 1) starts from its initial state."""
    reversed_resets[0] = False
    np.copyto(reversed_resets[1:], resets[:0:-1])


def backward_pairs(model, workspace, x, grad_views, dh_final=None, dc_final=None):
    """Backward through the chunk forward_pairs ran, after the head's: workspace.dy holds
    dL/dy_hat. Overwrites every layer's gradients in grad_views; dh_final, dc_final:
    optional dL/d(final state) (2L, B, H) in torch's order (None: zero)."""
    H = model.hidden_size
    for k in range(model.num_layers - 1, -1, -1):
        pair = workspace.pairs[k]
        sources = _above_sources(model, workspace, k)
        for reverse in (False, True):
            index = 2 * k + reverse
            buffers = workspace.layers[index]
            buffers.dh_state[...] = 0 if dh_final is None else dh_final[index]
            if model.cell == "lstm":
                buffers.dc_state[...] = 0 if dc_final is None else dc_final[index]
            _fill_above(pair, sources, reverse, H)
            if reverse:
                layer_input, resets = pair.reversed_input, workspace.reversed_resets
            else:
                layer_input, resets = (workspace.pairs[k - 1].output if k > 0 else x), workspace.resets
            grads = tuple(grad_views[name] for name in model.layout.layer_names(k, reverse))
            run_backward(model, model.layer_parameters(k, reverse)[1], buffers, grads, pair.above,
                         pair.above_weight, layer_input, resets, workspace.masked)


def _above_sources(model, workspace, k):
    """What reads layer k's output, each (gradient (T, B, K_i), whether it is in reversed
    time, weight (K_i, 2H)): the head's dL/dy_hat, or both directions of layer k + 1 with
    their pre-activation gradients (left in their gates by their backward)."""
    if k == model.num_layers - 1:
        return [(workspace.dy, False, model.views["head.weight"])]
    return [(workspace.layers[2 * k + 2].gates, False, model.layer_parameters(k + 1)[0]),
            (workspace.layers[2 * k + 3].gates, True, model.layer_parameters(k + 1, reverse=True)[0])]


def _fill_above(pair, sources, reverse, H):
    """pair.above (T, B, K) and pair.above_weight (K, H) for one direction: the sources
    side by side in that direction's time order, with their weights' columns of its half
    of the output, so that its dL/dh at its step s is above[s] above_weight."""
    half = slice(H, 2 * H) if reverse else slice(0, H)
    column = 0
    for gradient, reversed_time, weight in sources:
        columns = slice(column, column + gradient.shape[2])
        np.copyto(pair.above[:, :, columns], gradient[::-1] if reversed_time != reverse else gradient)
        np.copyto(pair.above_weight[columns], weight[:, half])
        column = columns.stop
