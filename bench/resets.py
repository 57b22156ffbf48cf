"""Series packed end to end in the streams (resets, docs/data.md): the engine's training step with
a reset every RESET_PERIOD steps per stream, to time against the same step without."""
import numpy as np

from bench.workloads import EngineWorkload

CONFIG = "small"
RESET_PERIOD = 37  # prime, so the resets fall on every offset of the chunk in turn
MAX_COST = 0.03    # the target: the mask costs at most 3% of the step


def reset_masks(T, B, period=RESET_PERIOD):
    """(T, B) masks of successive chunks of T steps: stream b starts a new series every
    `period` steps, the streams' phases spread evenly. Chunk k uses masks[k % len(masks)]
    (k T mod period repeats after `period` chunks)."""
    offsets = (np.arange(B) * period) // B
    steps = np.arange(T)[:, None] + offsets[None, :]
    return [(start + steps) % period == 0 for start in range(0, period * T, T)]


class ResetsWorkload(EngineWorkload):
    """EngineWorkload whose step passes the resets of reset_masks to Trainer.partial_fit."""

    def __init__(self, config, x, y, period=RESET_PERIOD):
        super().__init__(config, x, y)
        self.masks = reset_masks(*x.shape[:2], period)
        self.chunks = 0

    def step(self):
        resets = self.masks[self.chunks % len(self.masks)]
        self.chunks += 1
        return self.trainer.partial_fit(self.x, self.y, resets=resets)["loss"]
