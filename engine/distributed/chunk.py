"""A ShardedChunk whose shards run in Ray workers.

`fetch` gathers the workers' replies for one update; everything else is ShardedChunk's
own code: forward_backward combines the shards' gradients with the same weights and
the same combine_scaled sequence as on one machine, state_after joins the shards'
states and dh_norms weights their diagnostics. So the distributed run is bit-identical
to Trainer(shards=S) by construction, not by a second implementation.
"""
import numpy as np

from engine.distributed.group import shard_slices
from engine.shards import ShardedChunk


class ReturnedPass:
    """One shard's pass as its worker returned it: what ShardedChunk reads from a pass
    after a run (the states at the kept steps, the squared dL/dh norms)."""

    def __init__(self, reply):
        self.reply = reply

    def state_after(self, step):
        state = self.reply["states"][step]
        return tuple(part.copy() for part in state) if isinstance(state, tuple) else state.copy()

    def dh_norm_sq(self):
        return self.reply["dh_norm_sq"]


class RemoteChunk(ShardedChunk):
    """Windows of T steps of B streams, whose S shards live in `group`'s workers.

    grad: (P,) the trainer's flat gradient, where the combination lands. kept_steps: the
    window steps whose states the trainer will ask for (state_after), returned by the
    workers with their gradients."""

    def __init__(self, group, model, T, B, shards, grad, kept_steps):
        # Not ShardedChunk.__init__: no buffers here, the workers hold them.
        self.group, self.model = group, model
        self.slices = shard_slices(B, shards)
        self.grads = [grad] + [np.zeros_like(grad) for _ in self.slices[1:]]
        self.passes = [None] * len(self.slices)  # ReturnedPass per shard after fetch
        self.inputs, self.targets = None, None
        self.weights = [1.0] * len(self.slices)
        self.kept_steps = sorted(set(kept_steps))

    def fetch(self, params, window, first_step, state, diagnostics, update, masks=None):
        """Run one update's window (start, end) from `state` on the workers; masks: the
        window's engine.masks.ChunkMasks of all B streams, or None."""
        replies = self.group.run(params, window, first_step, state, self.kept_steps, diagnostics, update, masks)
        self.passes = [ReturnedPass(reply) for reply in replies]

    def _shard(self, k, *window_data):
        """Shard k's (loss, count), its gradient copied in: the worker ran it on its own
        copy of the window's data (window_data, the driver's, is not needed)."""
        reply = self.passes[k].reply
        np.copyto(self.grads[k], reply["grad"])
        return reply["value"], reply["count"]

    @property
    def nbytes(self):
        return 0  # the activation buffers are the workers'
