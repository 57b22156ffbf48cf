"""Forward and backward over a chunk with the batch split into shards, one thread each.

Each shard runs the whole recurrence (every layer, forward and backward) on its own
contiguous slice of the B streams, with single-threaded BLAS and no per-step barrier;
the kernels release the GIL. The gradient is the count-weighted sum of the shards'
gradients of their mean losses, which is the gradient of the mean loss over all counted
targets. Results are deterministic for a given shard count.
"""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from engine.bptt import SERIAL
from engine.passes import RecomputePass, StoredPass, segment_length
from engine.split import SplitLayers
from kernels.common import combine_scaled

_POOL = None


def _pool():
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max((os.cpu_count() or 1) - 1, 1),
                                   thread_name_prefix="bptt-shard")
    return _POOL


class ShardedChunk:
    """Buffers for chunks of T steps and B streams split into `shards` shards.

    grad: (P,) the flat gradient the combined result is written to (shard 0 writes there
    directly). Shard k's inputs are copied into its own contiguous (T, B_k, .) buffers.
    memory: None stores every step's activations; "sqrt" or a byte budget per shard
    recomputes them by segments (engine/passes.py). split: with one shard, the number of
    threads that share each step by blocks of hidden units (engine/split.py)."""

    def __init__(self, model, T, B, shards, grad, memory=None, split=1):
        if split > 1 and shards > 1:
            raise ValueError(f"split={split} runs one shard; got shards={shards}")
        bounds = np.linspace(0, B, shards + 1).round().astype(int)
        self.model = model
        self.slices = [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:])]
        self.grads = [grad] + [np.zeros_like(grad) for _ in self.slices[1:]]
        self.passes = [_make_pass(model, T, s.stop - s.start, g, memory, split)
                       for s, g in zip(self.slices, self.grads)]
        self.inputs = [np.empty((T, s.stop - s.start, model.input_size), model.dtype)
                       for s in self.slices] if shards > 1 else None
        self.targets = None  # allocated on first use, when the target dtype is known
        self.weights = [1.0] * shards  # each shard's share of the counted targets, last run

    @property
    def nbytes(self):
        """Bytes of every shard's activation buffers (and recomputation states)."""
        return sum(shard_pass.nbytes for shard_pass in self.passes)

    def forward_backward(self, x, y, loss, state, first_step, resets=None, quantiles=None, masks=None):
        """Forward from `state` over x (T, B, I), then backward of the mean loss over the
        targets of steps >= first_step into grad. resets: optional (T, B) booleans, True
        where a stream starts a new series. quantiles: the levels of loss "quantile".
        masks: the window's training-only masks of all B streams (engine/masks.py), or None.
        Returns (loss, count)."""
        if len(self.slices) == 1:
            return self._shard(0, x, y, loss, state, first_step, resets, quantiles, masks)
        if self.targets is None:
            self.targets = [np.empty((len(y), s.stop - s.start) + y.shape[2:], y.dtype) for s in self.slices]
        futures = [_pool().submit(self._shard, k, x, y, loss, state, first_step, resets, quantiles, masks)
                   for k in range(1, len(self.slices))]
        results = ([self._shard(0, x, y, loss, state, first_step, resets, quantiles, masks)]
                   + [f.result() for f in futures])
        count = sum(c for _, c in results)
        if count == 0:
            return 0.0, 0
        self.weights = weights = [c / count for _, c in results]
        for k in range(1, len(self.slices)):
            combine_scaled(self.grads[0], weights[0] if k == 1 else 1.0, self.grads[k], weights[k])
        return sum(value * weight for (value, _), weight in zip(results, weights)), count

    def _shard(self, k, x, y, loss, state, first_step, resets, quantiles, masks):
        part = self.slices[k]
        resets = None if resets is None else resets[:, part]  # copied into the pass's workspace
        masks = None if masks is None else masks.streams(part)  # likewise
        if self.inputs is not None:
            np.copyto(self.inputs[k], x[:, part])
            np.copyto(self.targets[k], y[:, part])
            x, y = self.inputs[k], self.targets[k]
        return self.passes[k].run(x, y, loss, _slice_state(state, part), first_step, resets, quantiles, masks)

    def state_after(self, step):
        """The state after `step` steps of the chunk last run, all streams (L, B, H)."""
        states = [shard_pass.state_after(step) for shard_pass in self.passes]
        if len(states) == 1:
            return states[0]
        if isinstance(states[0], tuple):
            return tuple(np.concatenate(parts, axis=1) for parts in zip(*states))
        return np.concatenate(states, axis=1)

    def dh_norms(self):
        """(L, T) norm of dL/dh_t over all streams, per layer, of the last backward. Each
        shard's dL/dh is of its own mean loss: scaled by its share, as its gradient is."""
        return np.sqrt(sum(weight ** 2 * shard_pass.dh_norm_sq()
                           for weight, shard_pass in zip(self.weights, self.passes)))


def chunk_for(model, T, B, plan, grad, memory=None):
    """The ShardedChunk of a thread plan (engine/thread_plan.py)."""
    return ShardedChunk(model, T, B, plan["shards"], grad, memory, plan["split"])


def _make_pass(model, T, B, grad, memory, split):
    layers = SplitLayers(model, split, B) if split > 1 else SERIAL
    segment = T if memory is None else segment_length(model, T, B, memory)
    if segment >= T:
        return StoredPass(model, T, B, grad, layers)
    return RecomputePass(model, T, B, grad, segment, layers)


def _slice_state(state, part):
    if isinstance(state, tuple):
        return tuple(s[:, part] for s in state)
    return state[:, part]
