"""Forward and backward passes of a whole model over one chunk, and full-sequence BPTT.

The engine owns the loop over layers; each layer's time loop runs in a kernel.
"""
import numpy as np

from engine.bidirectional import backward_pairs, forward_pairs
from engine.blas import set_blas_threads
from engine.layer_kernels import run_backward, run_forward
from engine.losses import LOSSES  # noqa: F401 (the loss names, importable from here as before)
from engine.masks import check_masks
from engine.validation import as_inputs, as_resets, as_state, as_targets, check_loss
from engine.workspace import Workspace
from kernels.head import (cross_entropy_gradient, gaussian_gradient, head_backward, head_forward, mse_gradient,
                          pinball_gradient, skip_backward, skip_forward)

# The kernels' GEMMs run single-threaded; parallelism comes from the thread plan's own
# threads (batch shards, engine/shards.py; hidden blocks, engine/split.py).
set_blas_threads(1)


def forward_chunk(model, workspace, x, state, resets=None, layers=None, masks=None):
    """Run every layer and the head over x (T, B, I) from `state`; fills `workspace`.
    A model with the linear path (Model(skip=True)) adds x V^T to the head's output.

    resets: optional (T, B) booleans, True where a stream starts a new series: the state
    entering that step is zero in every layer (kept in workspace.resets for backward).
    layers: how each layer's kernels run (default SERIAL; engine/split.py the other). A
    bidirectional model's layers run in engine/bidirectional.py (serially; the reverse
    direction meets a reset at t entering step t - 1).
    masks: the training-only masks of this chunk (engine/masks.ChunkMasks, copied into the
    workspace for backward), or None: no dropout, and zoneout's expectation."""
    layers = SERIAL if layers is None else layers
    if resets is None:
        workspace.resets[...] = False
    else:
        np.copyto(workspace.resets, resets)
    resets = workspace.resets
    _load_masks(model, workspace, masks)
    h0, c0 = _state_parts(model, state)
    for k, buffers in enumerate(workspace.layers):  # every layer (and direction)
        buffers.h[0] = h0[k]
        if model.cell == "lstm":
            buffers.c[0] = c0[k]
    if model.bidirectional:
        layer_input = forward_pairs(model, workspace, x)
    else:
        layer_input = x
        for k, buffers in enumerate(workspace.layers):
            layers.forward(model, k, buffers, layer_input, resets, workspace.masked)
            layer_input = _output(workspace, k)
    T, B = workspace.shape
    head_forward(workspace.y_hat.reshape(T * B, -1), layer_input.reshape(T * B, -1),
                 model.views["head.weight"], model.views["head.bias"])
    if model.skip:
        skip_forward(workspace.y_hat.reshape(T * B, -1), workspace.linear.reshape(T * B, -1), x.reshape(T * B, -1),
                     model.views["skip.weight"])


class SerialLayers:
    """Each layer's whole time loop in one kernel call on the calling thread (the plan of
    batch shards, engine/shards.py: parallelism comes from running shards side by side)."""

    nbytes = 0  # no buffers of its own

    def forward(self, model, k, buffers, layer_input, resets, masked=False):
        """masked: the trainer's masks apply (engine/workspace.py LayerBuffers.forward_masks)."""
        run_forward(model, model.layer_parameters(k), buffers, layer_input, resets, masked)

    def above_weight(self, model, k):
        """(K, H) the weight through which layer k's output feeds what is above it."""
        if k == model.num_layers - 1:
            return model.views["head.weight"]
        return model.layer_parameters(k + 1)[0]

    def backward(self, model, k, buffers, grads, above_grad, layer_input, resets, masked=False):
        """grads: layer k's (dweight_ih, dweight_hh, dbias_ih, dbias_hh) outputs."""
        run_backward(model, model.layer_parameters(k)[1], buffers, grads, above_grad,
                     self.above_weight(model, k), layer_input, resets, masked)


SERIAL = SerialLayers()


def _load_masks(model, workspace, masks):
    """Copy the chunk's masks into the workspace's buffers (workspace.masked records
    whether they apply); without them zoneout's arrays hold its expectation, the rate.
    The masks are in time order, per layer and direction (engine.masks.ChunkMasks); a
    reverse direction's buffers get its per-step masks in its own, reversed, time order."""
    workspace.masked = masks is not None
    for k, buffers in enumerate(workspace.layers):
        if masks is None:
            buffers.zone_h.fill(model.zoneout)
            buffers.zone_c.fill(model.zoneout)
            continue
        reverse = model.bidirectional and k % 2 == 1
        pairs = ((buffers.drop, masks.drop), (buffers.keep_prev, masks.keep_prev),
                 (buffers.zone_h, masks.zone_h), (buffers.zone_c, masks.zone_c))
        for buffer, mask in pairs:
            if buffer.size:
                steps = mask[k][::-1] if reverse and buffer.ndim == 3 else mask[k]
                np.copyto(buffer, steps)


def _output(workspace, k):
    """What reads layer k's output (T, B, H): the layer above, after dropout when the
    masks apply (the top layer's goes to the head as it is)."""
    buffers = workspace.layers[k]
    if workspace.masked and buffers.drop.size:
        np.multiply(buffers.h[1:], buffers.drop, out=buffers.dropped)
        return buffers.dropped
    return buffers.h[1:]


def state_after(model, workspace, step):
    """Copy of the state after `step` steps of the chunk last run forward (0 = initial).
    After a backward, a stream reset at `step` gets the zero state it enters that step
    with (the same state, as far as the steps from `step` on are concerned)."""
    h = np.stack([buffers.h[step] for buffers in workspace.layers])
    if model.cell == "lstm":
        return h, np.stack([buffers.c[step] for buffers in workspace.layers])
    return h


def loss_gradient(loss, dy, y_hat, y, first_row, divisor, quantiles=None):
    """dL/dy_hat (N, P*K) into dy and (loss, count) of `loss` over rows >= first_row of
    y_hat (N, P*K) against y (N, K) ((N,) classes for cross_entropy), the kernel's
    divisor as in kernels/head.py; quantiles: the levels of loss "quantile"."""
    if loss == "mse":
        return mse_gradient(dy, y_hat, y, first_row, divisor)
    if loss == "gaussian":
        return gaussian_gradient(dy, y_hat, y, first_row, divisor)
    if loss == "quantile":
        return pinball_gradient(dy, y_hat, y, first_row, divisor, np.asarray(quantiles, dtype=np.float64))
    return cross_entropy_gradient(dy, y_hat, y, first_row, divisor)


def backward_chunk(model, workspace, x, y, loss, grad_views, first_step=0, state_grad=None,
                   divisor=0, layers=None, quantiles=None):
    """Backpropagate the mean loss over the targets of steps >= first_step through the
    chunk last run forward; overwrites `grad_views` (name -> array, like model.views).

    state_grad: optional dL/d(final state) (h, or (h, c) for LSTM), each (L, B, H).
    divisor: divide the summed loss by this instead of the chunk's own target count (a
    segment of a longer sequence uses the whole sequence's count). The resets are those
    of the last forward_chunk: no gradient crosses them. layers: as in forward_chunk.
    quantiles: the levels of loss "quantile" (None for the others).
    Afterwards each layer's dh_state (and dc_state) holds dL/d(initial state) and its
    dh_norm_sq the squared norm of dL/dh_t per step. Returns (loss, count of targets)."""
    layers = SERIAL if layers is None else layers
    T, B = workspace.shape
    resets = workspace.resets
    y_hat, dy = workspace.y_hat.reshape(T * B, -1), workspace.dy.reshape(T * B, -1)
    targets = y.reshape(T * B) if loss == "cross_entropy" else y.reshape(T * B, -1)
    value, count = loss_gradient(loss, dy, y_hat, targets, first_step * B, divisor, quantiles)
    top = workspace.pairs[-1].output if model.bidirectional else workspace.layers[-1].h[1:]
    head_backward(grad_views["head.weight"], grad_views["head.bias"], dy, top.reshape(T * B, -1))
    if model.skip:
        skip_backward(grad_views["skip.weight"], dy, x.reshape(T * B, -1))
    dh_final, dc_final = _state_parts(model, state_grad)
    if model.bidirectional:
        backward_pairs(model, workspace, x, grad_views, dh_final, dc_final)
        return value, count
    # What each layer feeds: dL/dh_t = above_grad[t] layers.above_weight(model, k).
    above_grad = workspace.dy
    for k in range(model.num_layers - 1, -1, -1):
        buffers = workspace.layers[k]
        layer_input = _layer_input(workspace, k, x)
        buffers.dh_state[...] = 0 if dh_final is None else dh_final[k]
        if model.cell == "lstm":
            buffers.dc_state[...] = 0 if dc_final is None else dc_final[k]
        grads = tuple(grad_views[n] for n in model.layout.layer_names(k))
        layers.backward(model, k, buffers, grads, above_grad, layer_input, resets, workspace.masked)
        above_grad = buffers.gates
    return value, count


def _layer_input(workspace, k, x):
    """What layer k read in the last forward: x, or the output of layer k - 1 (after
    dropout, when the masks applied)."""
    if k == 0:
        return x
    below = workspace.layers[k - 1]
    return below.dropped if workspace.masked and below.drop.size else below.h[1:]


def initial_state_grad(model, workspace):
    """dL/d(initial state) after backward_chunk: h (L, B, H), for LSTM the pair (h, c)."""
    dh = np.stack([buffers.dh_state for buffers in workspace.layers])
    if model.cell == "lstm":
        return dh, np.stack([buffers.dc_state for buffers in workspace.layers])
    return dh


def loss_and_grad(model, x, y, loss="mse", state=None, resets=None, quantiles=None, masks=None):
    """Loss and exact gradients of full BPTT over the whole sequence x (T, B, I).

    y: (T, B, O) for "mse" (NaN = missing, masked), (T, B) integer classes for
    "cross_entropy" (-1 ignored), (T, B, K) for "gaussian" (O = 2K: means, then raw
    scales) and "quantile" (O = QK, one block of K per level of `quantiles`, increasing
    levels in (0, 1)); the loss is the mean over the counted targets (quantile: over
    targets and levels).
    Returns (loss, grads): grads is keyed like model.state_dict(), plus "h_0" (and
    "c_0" for LSTM), the gradient with respect to the initial state (L, B, H).
    resets: optional (T, B) booleans, True where stream b starts a new series at step t:
    the state entering it is zero and no gradient crosses it.
    masks: optional engine.masks.ChunkMasks of the model's nonzero rates, for (T, B): the
    gradient with those masks fixed (without: no dropout, and zoneout's expectation)."""
    loss, quantiles = check_loss(loss, quantiles, model)
    x = as_inputs(x, model)
    T, B, _ = x.shape
    y = as_targets(y, loss, model, T, B, quantiles)
    state = as_state(state, model, B)
    resets = as_resets(resets, T, B)
    check_masks(model, masks, T, B)
    workspace = Workspace(model, T, B)
    forward_chunk(model, workspace, x, state, resets, masks=masks)
    grad = np.zeros_like(model.params)
    grads = model.layout.views(grad)
    value, count = backward_chunk(model, workspace, x, y, loss, grads, quantiles=quantiles)
    if count == 0:
        raise ValueError("y has no target to learn from: every entry is missing (NaN or -1)")
    state_grad = initial_state_grad(model, workspace)
    if model.cell == "lstm":
        grads["h_0"], grads["c_0"] = state_grad
    else:
        grads["h_0"] = state_grad
    return float(value), grads


def _state_parts(model, state):
    """(h, c) of a state; c is None for RNN and GRU, both None for state None."""
    if state is None:
        return None, None
    if model.cell == "lstm":
        return state
    return state, None
