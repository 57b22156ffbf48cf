"""Per-chunk activation buffers, allocated once per chunk shape (T, B) and reused."""
import copy

import numpy as np

_STATE_ROWS = ("h", "c")  # (T+1, B, H): row 0 the initial state
_STEP_ROWS = ("gates", "hidden_n", "dh_norm_sq", "drop", "dropped", "h_prev", "zone_h", "zone_c")  # (T, ...)


class LayerBuffers:
    """Buffers of one layer for a chunk of T steps and B streams.

    Stored for the backward pass (the minimum backward needs): h (T+1, B, H) hidden
    states, row 0 the initial state; c (T+1, B, H) LSTM cell states (None otherwise);
    gates (T, B, G*H) activated gates, overwritten by their gradients in backward;
    hidden_n (T, B, H) GRU's W_hn h + b_hn (None otherwise).
    Per-step scratch: recurrent (B, G*H); dh, dh_state, dc_state, direct (B, H); and
    dh_norm_sq (T,) the squared norm of dL/dh_t per step. weight_hh_t (H, G*H): a
    contiguous transpose of the layer's weight_hh for the forward GEMM.
    Masks (engine/masks.py, kernels/masks.py), 0-sized without their option: drop,
    dropped (T, B, H) dropout's mask on this layer's output and the output times it (what
    the layer above reads in training; dropped=False: not allocated, the caller multiplies
    elsewhere); keep_prev (B, H), h_prev (T, B, H) recurrent
    dropout's mask and the masked h_{t-1} of each step; zone_h, zone_c (T, B, H) zoneout's
    (the LSTM's c too), carry, carry_c, candidate (B, H) its backward scratch."""

    def __init__(self, cell, gates, T, B, H, dtype, dropout=False, recurrent_dropout=False, zoneout=False,
                 dropped=True):
        def empty(*shape):
            return np.zeros(shape, dtype=dtype)

        def optional(present, *shape):
            return empty(*shape) if present else empty(*(0,) * len(shape))

        self.h = empty(T + 1, B, H)
        self.c = empty(T + 1, B, H) if cell == "lstm" else None
        self.gates = empty(T, B, gates * H)
        self.hidden_n = empty(T, B, H) if cell == "gru" else None
        self.recurrent = empty(B, gates * H)
        self.weight_hh_t = empty(H, gates * H)  # contiguous transpose of weight_hh (forward)
        self.dh = empty(B, H)
        self.direct = empty(B, H) if cell == "gru" else None
        self.dh_state = empty(B, H)
        self.dc_state = empty(B, H) if cell == "lstm" else None
        self.dh_norm_sq = empty(T)
        self.drop, self.dropped = optional(dropout, T, B, H), optional(dropout and dropped, T, B, H)
        self.keep_prev, self.h_prev = optional(recurrent_dropout, B, H), optional(recurrent_dropout, T, B, H)
        lstm_zoneout = zoneout and cell == "lstm"
        self.zone_h, self.zone_c = optional(zoneout, T, B, H), optional(lstm_zoneout, T, B, H)
        self.carry, self.carry_c = optional(zoneout, B, H), optional(lstm_zoneout, B, H)
        self.candidate = optional(lstm_zoneout, B, H)
        self.none2, self.none3 = empty(0, 0), empty(0, 0, 0)  # a mask not applied

    def forward_masks(self, cell, masked):
        """The masks the cell's forward kernel takes after its weights (kernels/masks.py);
        masked: the trainer's masks are applied (else zoneout's expectation, if any)."""
        keep_prev, h_prev = (self.keep_prev, self.h_prev) if masked else (self.none2, self.none3)
        if cell == "lstm":
            return keep_prev, h_prev, self.zone_h, self.zone_c
        if cell == "gru":
            return keep_prev, h_prev, self.zone_h
        return keep_prev, h_prev

    def backward_masks(self, cell, masked):
        """The masks (and zoneout's scratch) the cell's backward kernel takes last."""
        drop = self.drop if masked else self.none3
        recurrent = self.forward_masks("rnn", masked)
        if cell == "lstm":
            return (drop,) + recurrent + (self.zone_h, self.zone_c, self.carry, self.carry_c, self.candidate)
        if cell == "gru":
            return (drop,) + recurrent + (self.zone_h, self.carry)
        return (drop,) + recurrent

    def arrays(self):
        return [a for a in vars(self).values() if a is not None]

    def first(self, steps):
        """Buffers for the first `steps` steps only: views sharing this memory."""
        part = copy.copy(self)
        for name in _STATE_ROWS + _STEP_ROWS:
            array = getattr(self, name)
            if array is not None:
                setattr(part, name, array[:steps + 1] if name in _STATE_ROWS else array[:steps])
        return part


class PairBuffers:
    """What a bidirectional layer needs beside its two directions' LayerBuffers (T steps,
    B streams, input I_k, K columns from above; engine/bidirectional.py):
    output (T, B, 2H) [h_forward(t), h_reverse(t)], what layer k + 1 and the head read;
    reversed_input (T, B, I_k) the layer's input in reversed time, the reverse
    direction's x; above (T, B, K) dL/d(what reads the output) in one direction's time
    order and above_weight (K, H) its weight on that direction's half of the output
    (refilled for each direction in backward)."""

    def __init__(self, T, B, H, layer_input, above, dtype):
        self.output = np.zeros((T, B, 2 * H), dtype=dtype)
        self.reversed_input = np.zeros((T, B, layer_input), dtype=dtype)
        self.above = np.zeros((T, B, above), dtype=dtype)
        self.above_weight = np.zeros((above, H), dtype=dtype)

    def arrays(self):
        return list(vars(self).values())


class Workspace:
    """All buffers for one chunk shape: one LayerBuffers per layer, plus the head's.

    y_hat: (T, B, O) head output. dy: (T, B, O) dL/dy_hat. linear: (T, B, O) the linear
    path's share of y_hat, for a model with it (Model(skip=True); else None). resets: (T, B) booleans of the
    chunk last run forward, True where a stream starts a new series (a zero state, no gradient across).
    A bidirectional model's: one LayerBuffers per layer and direction in torch's order
    (l0, l0_reverse, l1, ...), a PairBuffers per layer (`pairs`, else None) and
    reversed_resets (T, B), the resets as the reverse direction meets them (its mask
    buffers hold its masks in its own, reversed, time order).
    training: hold the buffers of dropout's and recurrent dropout's masks (inference needs
    only zoneout's). masked: whether the chunk last run forward applied the trainer's masks."""

    def __init__(self, model, T, B, training=True):
        self.shape = (T, B)
        L, D = model.num_layers, model.directions
        # One-directional layers multiply their output by dropout's mask into `dropped`;
        # a bidirectional layer multiplies its pair's output in place (no `dropped`).
        self.layers = [LayerBuffers(model.cell, model.gates, T, B, model.hidden_size, model.dtype,
                                    dropout=training and model.dropout > 0 and i // D < L - 1,
                                    dropped=not model.bidirectional,
                                    recurrent_dropout=training and model.recurrent_dropout > 0,
                                    zoneout=model.zoneout > 0)
                       for i in range(L * D)]
        self.masked = False
        self.y_hat = np.zeros((T, B, model.output_size), dtype=model.dtype)
        self.dy = np.zeros_like(self.y_hat)
        self.linear = np.zeros_like(self.y_hat) if model.skip else None
        self.resets = np.zeros((T, B), dtype=np.bool_)
        self.pairs, self.reversed_resets = None, None
        if model.bidirectional:
            H, top = model.hidden_size, model.num_layers - 1
            self.pairs = [PairBuffers(T, B, H, model.input_size if k == 0 else 2 * H,
                                      model.output_size if k == top else 2 * model.gates * H, model.dtype)
                          for k in range(model.num_layers)]
            self.reversed_resets = np.zeros((T, B), dtype=np.bool_)

    def first(self, steps):
        """A workspace for chunks of `steps` <= T steps, as views of this one's memory."""
        part = copy.copy(self)
        part.shape = (steps, self.shape[1])
        part.layers = [layer.first(steps) for layer in self.layers]
        part.y_hat, part.dy, part.resets = self.y_hat[:steps], self.dy[:steps], self.resets[:steps]
        part.linear = None if self.linear is None else self.linear[:steps]
        return part

    @property
    def nbytes(self):
        """Bytes held by every buffer of this workspace."""
        arrays = [a for layer in self.layers for a in layer.arrays()] + self._head_arrays() + [self.resets]
        return sum(a.nbytes for a in arrays + self._pair_arrays())

    def _head_arrays(self):
        """y_hat, dy and, with the linear path, its output."""
        return [self.y_hat, self.dy] + ([] if self.linear is None else [self.linear])

    def _pair_arrays(self):
        """A bidirectional workspace's PairBuffers arrays and reversed resets ([] otherwise)."""
        if self.pairs is None:
            return []
        return [a for pair in self.pairs for a in pair.arrays()] + [self.reversed_resets]

    @property
    def activation_nbytes(self):
        """Bytes of the buffers that grow with T (the activations kept for backward, the head's
        outputs and their gradient), leaving out the per-step scratch and weight copy."""
        arrays = [getattr(layer, name) for layer in self.layers for name in _STATE_ROWS + _STEP_ROWS]
        pairs = [getattr(pair, name) for pair in self.pairs or () for name in ("output", "reversed_input", "above")]
        return sum(a.nbytes for a in arrays + pairs + self._head_arrays() if a is not None)
