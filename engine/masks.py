"""The training-only masks of dropout, recurrent dropout and zoneout (docs/training.md,
"Regularisation"), drawn per stream and update window from the trainer's generator.

The kernels read them as data in the time loop, as they read resets (kernels/masks.py);
a rate of 0 draws nothing, so a model without them trains bit for bit as before.
"""
from typing import NamedTuple, Optional

import numpy as np

RATES = ("dropout", "recurrent_dropout", "zoneout")


class ChunkMasks(NamedTuple):
    """The masks of one window of T steps and B streams, per layer (None: rate 0).

    drop: (L - 1, T, B, H) dropout on layer k's output as layer k + 1 reads it: 0, or
    1 / (1 - p) for a kept unit (a fresh draw per element and step, as torch.nn.LSTM's
    dropout). keep_prev: (L, B, H) recurrent dropout on h_{t-1} in W_hh h_{t-1}, the same
    at every step of the window, scaled alike. zone_h, zone_c: (L, T, B, H) zoneout's 1
    where a unit keeps its previous value (zone_c: the LSTM's cell state).
    A bidirectional model's have one entry per layer and direction in torch's order (l0,
    l0_reverse, l1, ...): 2 (L - 1), 2 L and 2 L; all in time order (t = 0..T-1, the
    reverse direction's too), drop's two directions of layer k together dropout's mask
    on its 2H output."""
    drop: Optional[np.ndarray] = None
    keep_prev: Optional[np.ndarray] = None
    zone_h: Optional[np.ndarray] = None
    zone_c: Optional[np.ndarray] = None

    def streams(self, part):
        """The masks of the streams in slice `part`."""
        return ChunkMasks(*(None if mask is None else mask[..., part, :] for mask in self))

    def steps(self, start, stop):
        """The masks of steps [start, stop) of the window (recurrent dropout's for all)."""
        return ChunkMasks(*(mask if mask is None or name == "keep_prev" else mask[:, start:stop]
                            for name, mask in zip(self._fields, self)))


def has_rates(model):
    """Whether any training-only mask applies to `model`."""
    return any(getattr(model, name) > 0 for name in RATES)


def draw_masks(model, T, B, rng):
    """The masks of one window of T steps of B streams from `rng` (numpy Generator), in a
    fixed order (dropout, recurrent dropout, zoneout of h, of c), in the model's dtype;
    None when every rate is 0 (nothing is drawn)."""
    if not has_rates(model):
        return None
    D, L, H, dtype = model.directions, model.num_layers, model.hidden_size, model.dtype
    drop = keep_prev = zone_h = zone_c = None
    if model.dropout > 0:
        drop = _kept((D * (L - 1), T, B, H), model.dropout, rng, dtype)
    if model.recurrent_dropout > 0:
        keep_prev = _kept((D * L, B, H), model.recurrent_dropout, rng, dtype)
    if model.zoneout > 0:
        zone_h = (rng.random((D * L, T, B, H)) < model.zoneout).astype(dtype)
        if model.cell == "lstm":
            zone_c = (rng.random((D * L, T, B, H)) < model.zoneout).astype(dtype)
    return ChunkMasks(drop, keep_prev, zone_h, zone_c)


def _kept(shape, rate, rng, dtype):
    """Inverted dropout: 1 / (1 - rate) with probability 1 - rate, else 0."""
    return np.where(rng.random(shape) >= rate, dtype.type(1 / (1 - rate)), dtype.type(0)).astype(dtype)


def check_masks(model, masks, T, B):
    """Masks given to engine.loss_and_grad: one array per nonzero rate of `model`, of the
    shapes in ChunkMasks, none for a rate 0 (ValueError otherwise). None passes."""
    if masks is None:
        return
    if not isinstance(masks, ChunkMasks):
        raise TypeError(f"masks must be an engine.masks.ChunkMasks; got {type(masks).__name__}")
    L, H = model.num_layers * model.directions, model.hidden_size  # layers and directions
    shapes = {"drop": (model.dropout, (L - model.directions, T, B, H)),
              "keep_prev": (model.recurrent_dropout, (L, B, H)),
              "zone_h": (model.zoneout, (L, T, B, H)),
              "zone_c": (model.zoneout if model.cell == "lstm" else 0.0, (L, T, B, H))}
    for name, (rate, shape) in shapes.items():
        mask = getattr(masks, name)
        if (mask is None) != (rate == 0):
            raise ValueError(f"masks.{name} must be {'None' if rate == 0 else f'an array {shape}'} for this model")
        if mask is not None and np.shape(mask) != shape:
            raise ValueError(f"masks.{name} must have shape {shape}; got {np.shape(mask)}")
