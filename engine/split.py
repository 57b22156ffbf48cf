"""The hidden-block plan: W threads share every step of one chunk of all B streams.

The layer's hidden units are split into n blocks of Hb = H / n; thread w computes blocks
w, w + W, .. (one each when n = W, the plan's choice) of the recurrent GEMM and of the
element-wise pass, so each per-step GEMM keeps all B rows instead of B / n (a batch
shard's). Every thread runs the same nogil kernel call (kernels/blocks.py describes the
block order of the gate columns); they meet once per step in forward and in backward at a
spinning barrier inside it (kernels/sync.py, about 0.17 us here), the calling thread being
worker 0 and the others this plan's own pool threads. For large per-step work this is
faster than batch shards; engine/thread_plan.py chooses. Results are deterministic for a
given n, whatever W.
"""
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numba
import numpy as np

from engine.bptt import SerialLayers
from engine.validation import check_int
from kernels.gru import gru_backward_split, gru_forward_split
from kernels.lstm import lstm_backward_split, lstm_forward_split
from kernels.rnn import rnn_backward_split, rnn_forward_split
from kernels.sync import ABORT, SYNC_SIZE


def max_split_threads():
    """The most threads a hidden-block plan uses in this process: Numba's thread count
    (the cores, or NUMBA_NUM_THREADS)."""
    return numba.config.NUMBA_NUM_THREADS


def check_split(model, split, shards=None):
    """`split` as an explicit Trainer choice: an int >= 1 this model can run, with at most
    one shard (ValueError otherwise). More blocks than max_split_threads() run several per
    thread, with the same result."""
    split = check_int("split", split)
    if split == 1:
        return split
    if shards is not None and shards > 1:
        raise ValueError(f"split={split} shares the steps of one shard among threads; "
                         f"it cannot be combined with shards={shards}")
    if model.hidden_size % split:
        raise ValueError(f"split={split} cannot run here: {model.hidden_size} hidden units are not a multiple of it")
    return split


def block_order(G, H, n):
    """(G*H,) the standard gate row of each row in block order (kernels/blocks.py)."""
    return np.ascontiguousarray(np.arange(G * H).reshape(G, n, H // n).transpose(1, 0, 2).reshape(-1))


class BlockScratch(NamedTuple):
    """Per-layer scratch of the backward split kernels (n blocks of Hb = H / n units, B
    streams)."""
    dh: np.ndarray          # (n, B, Hb) dL/dh_t from above, then total, of each block
    state: np.ndarray       # (n, B, Hb) dL/dh_t through time of each block
    scratch: np.ndarray     # (n, B, Hb) a term of dh from above
    partials: np.ndarray    # (2, n, B, H) each block's share of dL/dh_{t-1}, by step parity
    norms: np.ndarray       # (2, n) squared norm of each block's dL/dh_t, by step parity
    ih_parts: np.ndarray    # (n, G*Hb, I) each block's rows of dW_ih
    hh_parts: np.ndarray    # (n, G*Hb, H) of dW_hh
    bias_parts: np.ndarray  # (n, G*Hb, 1) of the bias gradient
    direct: np.ndarray      # (B, H) GRU's dL/dh_{t-1} through z * h (unused otherwise)


class LayerBlocks:
    """Layer k's weights in block order, refreshed before each forward (n blocks), and its
    backward scratch."""

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
        self.scratch = BlockScratch(empty(n, B, Hb), empty(n, B, Hb), empty(n, B, Hb), empty(2, n, B, H),
                                    empty(2, n), empty(n, G * Hb, I), empty(n, G * Hb, H), empty(n, G * Hb, 1),
                                    empty(B, H))

    @property
    def nbytes(self):
        arrays = [a for a in vars(self).values() if isinstance(a, np.ndarray)] + list(self.scratch)
        return sum(a.nbytes for a in arrays)


class SplitLayers(SerialLayers):
    """forward_chunk's and backward_chunk's layer calls for the hidden-block plan."""

    def __init__(self, model, n, B):
        self.n = check_split(model, n)
        self.workers = min(n, max_split_threads())  # a block per thread, at most
        self.order = block_order(model.gates, model.hidden_size, n)
        self.blocks = [LayerBlocks(model, k, n, B) for k in range(model.num_layers)]
        self.sync = np.zeros(SYNC_SIZE, np.int64)
        self._pool = ThreadPoolExecutor(self.workers - 1, thread_name_prefix="bptt-block") if self.workers > 1 else None

    @property
    def nbytes(self):
        return sum(blocks.nbytes for blocks in self.blocks) + self.order.nbytes

    def run(self, kernel, *args):
        """kernel(worker, workers, sync, *args) on every worker, 0 on this thread; the first
        error of any worker is raised once all have returned."""
        self.sync[...] = 0
        futures = [self._pool.submit(_work, kernel, w, self.workers, self.sync, args)
                   for w in range(1, self.workers)]
        try:
            _work(kernel, 0, self.workers, self.sync, args)
        finally:  # the pool's calls end too (the abort flag releases them): wait for them
            errors = [future.exception() for future in futures]
        for error in errors:
            if error is not None:
                raise error

    def _blocked(self, array):
        """A (.., G*H) buffer as the split kernels hold it in n blocks: (n, .., G*Hb)."""
        return array.reshape((self.n,) + array.shape[:-1] + (array.shape[-1] // self.n,))

    def forward(self, model, k, buffers, layer_input, resets, masked=False):
        self._refresh(model, k)
        blocks = self.blocks[k]
        gates, recurrent = self._blocked(buffers.gates), self._blocked(buffers.recurrent)
        weights = blocks.weight_ih, blocks.weight_hh_t, blocks.bias_ih, blocks.bias_hh
        masks = buffers.forward_masks(model.cell, masked)
        if model.cell == "lstm":
            self.run(lstm_forward_split, buffers.h, buffers.c, gates, recurrent, layer_input, resets, *weights,
                     *masks)
        elif model.cell == "gru":
            self.run(gru_forward_split, buffers.h, gates, buffers.hidden_n, recurrent, layer_input, resets,
                     *weights, *masks)
        else:
            self.run(rnn_forward_split, buffers.h, gates, recurrent, layer_input, resets, *weights, model.relu,
                     *masks)

    def backward(self, model, k, buffers, grads, above_grad, layer_input, resets, masked=False):
        blocks = self.blocks[k]
        dweight_ih, dweight_hh, dbias_ih, dbias_hh = grads
        outputs = dweight_ih, dweight_hh, dbias_ih.reshape(-1, 1), dbias_hh.reshape(-1, 1)
        above_grad = above_grad[None] if k == model.num_layers - 1 else self._blocked(above_grad)
        above = blocks.scratch, above_grad, blocks.above_weight
        gates = self._blocked(buffers.gates)
        masks = buffers.backward_masks(model.cell, masked)
        if model.cell == "lstm":
            self.run(lstm_backward_split, *outputs, buffers.dh_state, buffers.dc_state, buffers.dh_norm_sq,
                     *above, buffers.h, buffers.c, gates, layer_input, resets, blocks.weight_hh, self.order, *masks)
        elif model.cell == "gru":
            self.run(gru_backward_split, *outputs, buffers.dh_state, buffers.dh_norm_sq, *above, buffers.h,
                     gates, buffers.hidden_n, layer_input, resets, blocks.weight_hh, self.order, *masks)
        else:
            self.run(rnn_backward_split, *outputs, buffers.dh_state, buffers.dh_norm_sq, *above, buffers.h,
                     gates, layer_input, resets, blocks.weight_hh, self.order, model.relu, *masks)

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


def _work(kernel, worker, workers, sync, args):
    """One worker's kernel call; a failure sets sync's abort flag, so the other workers
    leave their barrier instead of waiting for this one."""
    try:
        kernel(worker, workers, sync, *args)
    except BaseException:
        sync[ABORT] = 1
        raise
