"""One Ray worker's job: the passes of its shards over its slice of the streams.

A plain class; engine.distributed.group makes it a Ray actor with one CPU per shard.
Each shard is a one-shard ShardedChunk, exactly what Trainer(shards=S) runs for that
shard on one machine, over the same contiguous (T, B_k, .) data.
"""
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from engine.model import Model
from engine.shards import ShardedChunk


class Worker:
    """Holds its shards' data for one piece of training (load), runs their passes for
    each update (run) and keeps the states at the end of its last run, so the driver
    need not send them back."""

    def __init__(self, model_config, loss, memory, shards, quantiles=None):
        self.model = Model(**model_config)
        self.loss, self.memory, self.quantiles = loss, memory, quantiles
        self.pool = ThreadPoolExecutor(max_workers=shards, thread_name_prefix="bptt-worker-shard")
        self.data = []     # per shard (x (T, B_k, I), y (T, B_k, O) or (T, B_k), resets or None)
        self.chunks = {}   # (window steps, shard) -> one-shard ShardedChunk
        self.held = {}     # step -> [state per shard] of the last run
        self.grads = None  # (shards, P) each shard's gradient of its own mean loss

    def pid(self):
        """The actor's process id (for tests that kill it) once its imports are done."""
        return os.getpid()

    def load(self, data):
        """data: [(x, y, resets)] per shard, read-only views of the object store: copied
        once into writable arrays (the kernels are compiled for those)."""
        self.data = [tuple(None if part is None else np.array(part) for part in shard) for shard in data]
        self.chunks, self.held = {}, {}
        self.grads = np.zeros((len(data), self.model.num_parameters), self.model.dtype)

    def run(self, params, window, first_step, state, steps, diagnostics, masks=None):
        """Forward and backward of every shard over window (start, end) of its data.

        state: a step of the last run whose held states to start from, or the explicit
        per-shard states. steps: the window steps whose states to keep and return.
        masks: per shard the window's engine.masks.ChunkMasks of its streams, or None.
        Returns {"grads" (shards, P), "values", "counts", "states" {step: [per shard]},
        "dh_norm_sq" [(L, T)] or None, "seconds" of computation}."""
        started = time.perf_counter()
        self.model.params[...] = params
        states = self.held[state] if isinstance(state, int) else state
        results = list(self.pool.map(lambda k: self._shard(k, window, first_step, states[k],
                                                           None if masks is None else masks[k]),
                                     range(len(self.data))))
        chunks = [self._chunk(window, k) for k in range(len(self.data))]
        self.held = {step: [chunk.state_after(step) for chunk in chunks] for step in steps}
        return {"grads": self.grads, "values": [value for value, _ in results],
                "counts": [count for _, count in results], "states": self.held,
                # squared, unweighted: the driver weights them as ShardedChunk.dh_norms does
                "dh_norm_sq": [chunk.passes[0].dh_norm_sq() for chunk in chunks] if diagnostics else None,
                "seconds": time.perf_counter() - started}

    def _shard(self, k, window, first_step, state, masks):
        start, end = window
        x, y, resets = self.data[k]
        window_resets = {} if resets is None else {"resets": resets[start:end]}
        return self._chunk(window, k).forward_backward(x[start:end], y[start:end], self.loss, state,
                                                       first_step, quantiles=self.quantiles, masks=masks,
                                                       **window_resets)

    def _chunk(self, window, k):
        steps = window[1] - window[0]
        if (steps, k) not in self.chunks:
            streams = self.data[k][0].shape[1]
            self.chunks[steps, k] = ShardedChunk(self.model, steps, streams, 1, self.grads[k], self.memory)
        return self.chunks[steps, k]
