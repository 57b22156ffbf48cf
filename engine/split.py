"""The hidden-block plan: n threads share every step of one chunk of all B streams.

Thread k owns hidden units k*Hb .. (k+1)*Hb - 1 (Hb = H / n) of each layer and computes
their part of the recurrent GEMM and of the element-wise pass, so each per-step GEMM
keeps all B rows instead of B / n (a batch shard's). The threads meet once per step in
forward and once in backward, inside one Numba kernel per layer (kernels/blocks.py
describes the block order of the gate columns). For large per-step work this is faster
than batch shards; engine/thread_plan.py chooses. Results are deterministic for a given n.

Numba's threading layer must be "omp" (2.2 us per parallel region here; "workqueue" 48 us,
python -m bench.threading_layers): `available()` says whether it loaded.
"""
from typing import NamedTuple

import numba
import numpy as np

from engine.bptt import SerialLayers
from engine.validation import check_int
from kernels.gru import gru_backward_split, gru_forward_split
from kernels.lstm import lstm_backward_split, lstm_forward_split
from kernels.rnn import rnn_backward_split, rnn_forward_split

THREADING_LAYER = "omp"
_LAYER_STATE = {}  # "loaded": bool, once checked


def available():
    """True when Numba's omp threading layer loads (and no other layer started first); the
    first parallel kernel then starts it."""
    if "loaded" not in _LAYER_STATE:
        try:
            from numba.np.ufunc import omppool  # noqa: F401
            numba.config.THREADING_LAYER = THREADING_LAYER
            _LAYER_STATE["loaded"] = True
        except (ImportError, OSError):
            _LAYER_STATE["loaded"] = False
    try:
        started = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        started = THREADING_LAYER
    return _LAYER_STATE["loaded"] and started == THREADING_LAYER


def max_split_threads():
    """The most threads a hidden-block plan can use in this process (1: none)."""
    return numba.config.NUMBA_NUM_THREADS if available() else 1


def check_split(model, split, shards=None):
    """`split` as an explicit Trainer choice: an int >= 1 this model and process can run,
    with at most one shard (ValueError otherwise). More blocks than Numba's threads run
    several per thread, with the same result."""
    split = check_int("split", split)
    if split == 1:
        return split
    if shards is not None and shards > 1:
        raise ValueError(f"split={split} shares the steps of one shard among threads; "
                         f"it cannot be combined with shards={shards}")
    if model.hidden_size % split:
        raise ValueError(f"split={split} cannot run here: {model.hidden_size} hidden units are not a multiple of it")
    if not available():
        raise ValueError(f"split={split} cannot run here: Numba's {THREADING_LAYER!r} threading layer does not load")
    return split


def block_order(G, H, n):
    """(G*H,) the standard gate row of each row in block order (kernels/blocks.py)."""
    return np.ascontiguousarray(np.arange(G * H).reshape(G, n, H // n).transpose(1, 0, 2).reshape(-1))


class BlockScratch(NamedTuple):
    """Per-layer scratch of the split kernels (n threads, B streams, Hb = H / n units each)."""
    recurrent: np.ndarray   # (n, B, G*Hb) forward: each block's recurrent GEMM
    dh: np.ndarray          # (n, B, Hb) dL/dh_t from above, then total, of each block
    state: np.ndarray       # (n, B, Hb) dL/dh_t through time of each block
    scratch: np.ndarray     # (n, B, Hb) a term of dh from above
    partials: np.ndarray    # (2, n, B, H) each thread's share of dL/dh_{t-1}, by step parity
    norms: np.ndarray       # (n,) squared norm of each block's dL/dh_t
    ih_parts: np.ndarray    # (n, G*Hb, I) each block's rows of dW_ih
    hh_parts: np.ndarray    # (n, G*Hb, H) of dW_hh
    bias_parts: np.ndarray  # (n, G*Hb, 1) of the bias gradient
    direct: np.ndarray      # (B, H) GRU's dL/dh_{t-1} through z * h (unused otherwise)


class LayerBlocks:
    """Layer k's weights in block order, refreshed before each forward (n threads)."""

    def __init__(self, model, k, n, B):
        G, H = model.gates, model.hidden_size
        I = model.input_size if k == 0 else H
        Hb = H // n
        top = k == model.num_layers - 1
        empty = lambda *shape: np.zeros(shape, model.dtype)  # noqa: E731
        self.weight_ih = empty(n, G * Hb, I)    # block k: the rows of its gates
        self.weight_hh = empty(n, G * Hb, H)
        self.weight_hh_t = empty(n, H, G * Hb)  # their transposes (forward)
        self.bias_ih, self.bias_hh = empty(n, G * Hb), empty(n, G * Hb)
        # What the layer feeds, in J blocks of K: the head (1, O) or the layer above (n, G*Hb);
        # block k holds the columns of its units.
        self.above_weight = empty(n, 1, model.output_size, Hb) if top else empty(n, n, G * Hb, Hb)
        self.scratch = BlockScratch(empty(n, B, G * Hb), empty(n, B, Hb), empty(n, B, Hb),
                                    empty(n, B, Hb), empty(2, n, B, H), empty(n),
                                    empty(n, G * Hb, I), empty(n, G * Hb, H), empty(n, G * Hb, 1),
                                    empty(B, H))

    @property
    def nbytes(self):
        arrays = [a for a in vars(self).values() if isinstance(a, np.ndarray)] + list(self.scratch)
        return sum(a.nbytes for a in arrays)


class SplitLayers(SerialLayers):
    """forward_chunk's and backward_chunk's layer calls for the hidden-block plan."""

    def __init__(self, model, n, B):
        self.n = check_split(model, n)
        self.threads = min(n, numba.config.NUMBA_NUM_THREADS)  # a block per thread, at most
        self.order = block_order(model.gates, model.hidden_size, n)
        self.blocks = [LayerBlocks(model, k, n, B) for k in range(model.num_layers)]

    @property
    def nbytes(self):
        return sum(blocks.nbytes for blocks in self.blocks) + self.order.nbytes

    def _refresh(self, model, k):
        """Copy layer k's weights (and the weight above it) into block order."""
        blocks, order, n = self.blocks[k], self.order, self.n
        weight_ih, weight_hh, bias_ih, bias_hh = model.layer_parameters(k)
        np.take(weight_ih, order, axis=0, out=blocks.weight_ih.reshape(len(order), -1))
        np.take(weight_hh, order, axis=0, out=blocks.weight_hh.reshape(len(order), -1))
        np.copyto(blocks.weight_hh_t, blocks.weight_hh.transpose(0, 2, 1))
        np.take(bias_ih, order, out=blocks.bias_ih.reshape(-1))
        np.take(bias_hh, order, out=blocks.bias_hh.reshape(-1))
        above = SerialLayers.above_weight(self, model, k)  # (K, H), rows in parameter order
        if k < model.num_layers - 1:
            above = above[order]  # the layer above's gate rows, in its block order
        J, K = blocks.above_weight.shape[1:3]
        H = above.shape[1]
        np.copyto(blocks.above_weight, above.reshape(J, K, n, H // n).transpose(2, 0, 1, 3))

    def _blocked(self, array):
        """A (T, B, G*H) gate buffer as the split kernels hold it: (n, T, B, G*Hb)."""
        T, B, width = array.shape
        return array.reshape(self.n, T, B, width // self.n)

    def forward(self, model, k, buffers, layer_input, resets):
        numba.set_num_threads(self.threads)  # for this thread's parallel regions
        self._refresh(model, k)
        blocks = self.blocks[k]
        gates, recurrent = self._blocked(buffers.gates), blocks.scratch.recurrent
        weights = blocks.weight_ih, blocks.weight_hh_t, blocks.bias_ih, blocks.bias_hh
        if model.cell == "lstm":
            lstm_forward_split(buffers.h, buffers.c, gates, recurrent, layer_input, resets, *weights)
        elif model.cell == "gru":
            gru_forward_split(buffers.h, gates, buffers.hidden_n, recurrent, layer_input, resets, *weights)
        else:
            rnn_forward_split(buffers.h, gates, recurrent, layer_input, resets, *weights, model.relu)

    def backward(self, model, k, buffers, grads, above_grad, layer_input, resets):
        numba.set_num_threads(self.threads)
        blocks = self.blocks[k]
        dweight_ih, dweight_hh, dbias_ih, dbias_hh = grads
        outputs = dweight_ih, dweight_hh, dbias_ih.reshape(-1, 1), dbias_hh.reshape(-1, 1)
        T, B, K = above_grad.shape
        above_grad = above_grad.reshape(1, T, B, K) if k == model.num_layers - 1 else self._blocked(above_grad)
        above = blocks.scratch, above_grad, blocks.above_weight
        gates = self._blocked(buffers.gates)
        if model.cell == "lstm":
            lstm_backward_split(*outputs, buffers.dh_state, buffers.dc_state, buffers.dh_norm_sq, *above,
                                buffers.h, buffers.c, gates, layer_input, resets, blocks.weight_hh,
                                self.order)
        elif model.cell == "gru":
            gru_backward_split(*outputs, buffers.dh_state, buffers.dh_norm_sq, *above, buffers.h, gates,
                               buffers.hidden_n, layer_input, resets, blocks.weight_hh, self.order)
        else:
            rnn_backward_split(*outputs, buffers.dh_state, buffers.dh_norm_sq, *above, buffers.h, gates,
                               layer_input, resets, blocks.weight_hh, self.order, model.relu)
