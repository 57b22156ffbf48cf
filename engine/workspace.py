"""Per-chunk activation buffers, allocated once per chunk shape (T, B) and reused."""
import copy
from typing import NamedTuple

import numpy as np

_STATE_ROWS = ("h", "c")  # (T+1, B, H): row 0 the initial state
_STEP_ROWS = ("gates", "hidden_n", "dh_norm_sq")  # (T, ...)


class BlockScratch(NamedTuple):
    """Per-layer scratch of the backward kernels, for n blocks of Hb = H / n units
    (kernels/blocks.py) and B streams. With one block only dh, norms and direct are used."""
    dh: np.ndarray          # (n, B, Hb) dL/dh_t from above, then total, of each block
    state: np.ndarray       # (n, B, Hb) dL/dh_t through time of each block
    scratch: np.ndarray     # (n, B, Hb) a term of dh from above
    partials: np.ndarray    # (2, n, B, H) each block's share of dL/dh_{t-1}, by step parity
    norms: np.ndarray       # (2, n) squared norm of each block's dL/dh_t, by step parity
    ih_parts: np.ndarray    # (n, G*Hb, I) each block's rows of dW_ih
    hh_parts: np.ndarray    # (n, G*Hb, H) of dW_hh
    bias_parts: np.ndarray  # (n, G*Hb, 1) of the bias gradient
    direct: np.ndarray      # (B, H) GRU's dL/dh_{t-1} through z * h (unused otherwise)


def one_block_scratch(dh, direct):
    """BlockScratch of a layer run whole, over its buffers dh and direct (B, H) (direct
    None but for the GRU); the arrays a single block never reads are empty."""
    unused = np.zeros((1, 0, 0), dh.dtype)
    one = dh.reshape((1,) + dh.shape)
    return BlockScratch(one, one, one, np.zeros((2, 1, 0, 0), dh.dtype), np.zeros((2, 1), dh.dtype),
                        unused, unused, unused, dh if direct is None else direct)


class LayerBuffers:
    """Buffers of one layer for a chunk of T steps and B streams.

    Stored for the backward pass (the minimum, DESIGN.md section 9): h (T+1, B, H) hidden
    states, row 0 the initial state; c (T+1, B, H) LSTM cell states (None otherwise);
    gates (T, B, G*H) activated gates, overwritten by their gradients in backward;
    hidden_n (T, B, H) GRU's W_hn h + b_hn (None otherwise).
    Per-step scratch: recurrent (B, G*H); dh, dh_state, dc_state, direct (B, H); and
    dh_norm_sq (T,) the squared norm of dL/dh_t per step. weight_hh_t (H, G*H): a
    contiguous transpose of the layer's weight_hh for the forward GEMM. scratch: the
    backward kernels' BlockScratch for the layer run whole (views of dh and direct)."""

    def __init__(self, cell, gates, T, B, H, dtype):
        def empty(*shape):
            return np.zeros(shape, dtype=dtype)

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
        self.scratch = one_block_scratch(self.dh, self.direct)

    def arrays(self):
        return [a for a in vars(self).values() if isinstance(a, np.ndarray)]

    def first(self, steps):
        """Buffers for the first `steps` steps only: views sharing this memory."""
        part = copy.copy(self)
        for name in _STATE_ROWS + _STEP_ROWS:
            array = getattr(self, name)
            if array is not None:
                setattr(part, name, array[:steps + 1] if name in _STATE_ROWS else array[:steps])
        return part


class Workspace:
    """All buffers for one chunk shape: one LayerBuffers per layer, plus the head's.

    y_hat: (T, B, O) head output. dy: (T, B, O) dL/dy_hat. resets: (T, B) booleans of the
    chunk last run forward, True where a stream starts a new series (DESIGN.md 11)."""

    def __init__(self, model, T, B):
        self.shape = (T, B)
        self.layers = [LayerBuffers(model.cell, model.gates, T, B, model.hidden_size, model.dtype)
                       for _ in range(model.num_layers)]
        self.y_hat = np.zeros((T, B, model.output_size), dtype=model.dtype)
        self.dy = np.zeros_like(self.y_hat)
        self.resets = np.zeros((T, B), dtype=np.bool_)

    def first(self, steps):
        """A workspace for chunks of `steps` <= T steps, as views of this one's memory."""
        part = copy.copy(self)
        part.shape = (steps, self.shape[1])
        part.layers = [layer.first(steps) for layer in self.layers]
        part.y_hat, part.dy, part.resets = self.y_hat[:steps], self.dy[:steps], self.resets[:steps]
        return part

    @property
    def nbytes(self):
        """Bytes held by every buffer of this workspace."""
        arrays = [a for layer in self.layers for a in layer.arrays()] + [self.y_hat, self.dy, self.resets]
        return sum(a.nbytes for a in arrays)

    @property
    def activation_nbytes(self):
        """Bytes of the buffers that grow with T (the activations kept for backward, the head's
        outputs and their gradient), leaving out the per-step scratch and weight copy."""
        arrays = [getattr(layer, name) for layer in self.layers for name in _STATE_ROWS + _STEP_ROWS]
        return sum(a.nbytes for a in arrays + [self.y_hat, self.dy] if a is not None)
