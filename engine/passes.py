"""Forward + backward of one chunk for one batch shard: storing every step's activations,
or memory-bounded by recomputation.

Both are built around the flat gradient grad (P,) they write, and offer
run(x, y, loss, state, first_step, resets=None, quantiles=None, masks=None) -> (loss, count),
the gradient of the mean loss over the targets of steps >= first_step (resets: optional
(T, B) booleans, see engine.bptt.forward_chunk; quantiles: the levels of loss "quantile";
masks: the window's training-only masks, engine/masks.py);
state_after(step) after a run; dh_norm_sq() (L, T); nbytes.
`layers` chooses how each layer's kernels run: engine.bptt.SERIAL (the default) or the
hidden-block plan's engine.split.SplitLayers.
"""
import math

import numpy as np

from engine.bptt import SERIAL, backward_chunk, forward_chunk, initial_state_grad, state_after
from engine.losses import counted
from engine.workspace import Workspace


class StoredPass:
    """Keeps every step's activations: the fastest, memory linear in T."""

    def __init__(self, model, T, B, grad, layers=SERIAL):
        self.model = model
        self.layers = layers
        self.workspace = Workspace(model, T, B)
        self.grad_views = model.layout.views(grad)

    @property
    def nbytes(self):
        return self.workspace.nbytes + self.layers.nbytes

    def run(self, x, y, loss, state, first_step, resets=None, quantiles=None, masks=None):
        forward_chunk(self.model, self.workspace, x, state, resets, self.layers, masks)
        return backward_chunk(self.model, self.workspace, x, y, loss, self.grad_views, first_step,
                              layers=self.layers, quantiles=quantiles)

    def state_after(self, step):
        return state_after(self.model, self.workspace, step)

    def dh_norm_sq(self):
        return np.stack([layer.dh_norm_sq for layer in self.workspace.layers])


class RecomputePass:
    """Memory-bounded BPTT: keeps only the state at the start of each segment of
    `segment` steps, and during the backward sweep recomputes each segment's activations
    from its stored state (Chen et al. 2016; Gruslys et al. 2016). Memory: one segment's
    activations plus T / segment states; time: one more forward pass. The gradient is the
    same as StoredPass's up to the order of floating-point sums."""

    def __init__(self, model, T, B, grad, segment, layers=SERIAL):
        self.model = model
        self.layers = layers
        self.grad = grad
        self.segments = [(start, min(start + segment, T)) for start in range(0, T, segment)]
        self.workspace = Workspace(model, segment, B)
        self.starts = [None] * len(self.segments)  # state at each segment's start
        self.segment_grad = np.zeros_like(model.params)  # (P,) one segment's contribution
        self.segment_views = model.layout.views(self.segment_grad)
        self.norm_sq = np.zeros((model.num_layers, T), dtype=model.dtype)
        self.x = None
        self.resets = None  # (T, B) of the last run, or None
        self.masks = None  # engine.masks.ChunkMasks of the last run, or None

    @property
    def nbytes(self):
        state_bytes = sum(part.nbytes for start in self.starts if start is not None
                          for part in (start if isinstance(start, tuple) else (start,)))
        return (self.workspace.nbytes + self.layers.nbytes + state_bytes + self.segment_grad.nbytes
                + self.norm_sq.nbytes)

    def run(self, x, y, loss, state, first_step, resets=None, quantiles=None, masks=None):
        grad = self.grad
        self.x, self.resets, self.masks = x, resets, masks
        for index, (start, stop) in enumerate(self.segments):  # forward sweep: segment starts
            self.starts[index] = state
            workspace = self._forward(index)
            state = state_after(self.model, workspace, stop - start)
        count = int(np.count_nonzero(counted(loss, y[first_step:])))
        grad[...] = 0
        total, state_grad = 0.0, None
        for index in range(len(self.segments) - 1, -1, -1):  # backward sweep, recomputing
            start, stop = self.segments[index]
            workspace = self._forward(index)
            value, _ = backward_chunk(self.model, workspace, x[start:stop], y[start:stop], loss,
                                      self.segment_views, min(max(first_step - start, 0), stop - start),
                                      state_grad, divisor=count, layers=self.layers, quantiles=quantiles)
            grad += self.segment_grad
            total += value
            state_grad = initial_state_grad(self.model, workspace)
            for k, layer in enumerate(workspace.layers):
                self.norm_sq[k, start:stop] = layer.dh_norm_sq
        return total, count

    def state_after(self, step):
        """Recomputed from the start of the segment holding `step`."""
        index = min(np.searchsorted([start for start, _ in self.segments], step, side="right") - 1,
                    len(self.segments) - 1)
        start, _ = self.segments[index]
        if step == start:
            return self.starts[index]
        return state_after(self.model, self._forward(index), step - start)

    def dh_norm_sq(self):
        return self.norm_sq

    def _forward(self, index):
        """Run segment `index` forward from its stored start state; its workspace."""
        start, stop = self.segments[index]
        workspace = self.workspace if stop - start == self.workspace.shape[0] else self.workspace.first(stop - start)
        resets = None if self.resets is None else self.resets[start:stop]
        masks = None if self.masks is None else self.masks.steps(start, stop)
        forward_chunk(self.model, workspace, self.x[start:stop], self.starts[index], resets, self.layers, masks)
        return workspace


def segment_length(model, T, B, memory):
    """Steps per recomputation segment for the Trainer's `memory` option: "sqrt" gives
    about sqrt(T); an int is a byte budget for the activations of one shard."""
    if memory == "sqrt":
        return max(1, math.ceil(math.sqrt(T)))
    per_step = Workspace(model, 1, B).nbytes  # close to linear in steps
    state_bytes = model.num_layers * B * model.hidden_size * model.dtype.itemsize * (2 if model.cell == "lstm" else 1)
    fixed = 2 * model.params.nbytes
    costs = {segment: segment * per_step + math.ceil(T / segment) * state_bytes + fixed
             for segment in range(1, T + 1)}
    fitting = [segment for segment, cost in costs.items() if cost <= memory]
    if not fitting:
        raise ValueError(f"memory={memory} bytes is too small for {T} steps of {B} streams; "
                         f"the least this model needs is about {min(costs.values())} bytes")
    return max(fitting)

