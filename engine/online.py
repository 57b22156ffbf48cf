"""Forward-mode gradients for the Trainer's gradient="rtrl" (exact real-time recurrent
learning) and "uoro" (its unbiased rank-one estimate): no truncation window.

Each chunk of k1 steps runs the engine's own forward kernels (engine.bptt.forward_chunk,
so the states are those of BPTT), the loss kernels give dL/dy_hat of the chunk's mean loss
and the head its direct gradient; kernels/rtrl.py then walks the chunk forward in time,
carrying each stream's influence d state / d theta and adding dL_t/dh_top times it per
step. The influence is carried across chunks (and partial_fit calls) like the state:
after an update it is the influence under the parameters of the previous steps, the
standard online approximation (exact when the parameters do not move).

Threads: the forward runs once over all streams; the forward-mode kernel, where the time
goes, runs on the engine's batch-shard threads (engine/shards.py), each shard a
contiguous slice of the streams with its own scratch and gradient, added to the first
shard's in shard order: bit-reproducible for a given plan (online_plan).
"""
import numpy as np

from engine.bptt import forward_chunk, loss_gradient, state_after
from engine.footprint import (format_bytes, influence_blocks, influence_column_bytes, require, rtrl_bytes, uoro_bytes,
                              workspace_bytes)
from engine.parameters import GATES
from engine.shards import _pool as shard_pool
from engine.thread_plan import COST_MODEL, available_cores, shard_rows
from engine.workspace import Workspace
from kernels.head import head_backward, skip_backward
from kernels.rtrl import CELL_CODES, rtrl_chunk, uoro_chunk

GRADIENTS = ("bptt", "rtrl", "uoro")
EPSILON = 1e-7  # UORO's guard in its scaling ratios
# The plan's single-thread kernel costs, measured by the thread's CPU time (LSTM, 32
# streams, float32, OpenBLAS; python -m bench.online, docs/training.md): RTRL's GEMMs,
# (S, H) x (H, P) per layer (2L - 1 of them: S = 2H state rows for LSTM, else H) per
# stream and step, run at 50-90 GFLOP/s (H = 16 to 32) with the rest of its kernel;
# UORO's kernel takes per stream and step about 0.8 us plus 0.35 ns per recurrent
# parameter (H = 8 to 64: 0.91, 1.16, 2.15, 7.0 us).
RTRL_FLOPS_PER_S = 7e10
UORO_S_PER_STREAM_STEP = 8e-7
UORO_S_PER_PARAMETER = 3.5e-10
CONTENTION = 1.2  # threads side by side run up to this much slower (engine/thread_plan.py)
# An extra shard's cost per chunk, by the wall clock: the thread pool's round trip, the
# wake-up of its thread and the wait for the slower shard. From UORO's two-shard runs on
# a quiet machine (2 cores: 1.04x faster at H = 16, 1.21x at H = 32, against the kernel
# times above), more than engine/thread_plan.py's handoff_s measures for BPTT's shards.
SHARD_S = 1.7e-4


def recurrent_size(model):
    """P: the parameters before the head (every layer's), the columns of the influence."""
    return model.layout.offsets["head.weight"]


def sizes(model):
    """The model's sizes as engine/footprint.py's estimates take them."""
    return model.cell, model.input_size, model.hidden_size, model.output_size, model.num_layers


def kernel_seconds(gradient, model, streams, steps):
    """Modelled single-thread seconds of the forward-mode kernel over a chunk."""
    P, H, L = recurrent_size(model), model.hidden_size, model.num_layers
    if gradient == "rtrl":
        state_rows = H * (2 if model.cell == "lstm" else 1)
        return steps * streams * (2 * L - 1) * 2 * state_rows * H * P / RTRL_FLOPS_PER_S
    return steps * streams * (UORO_S_PER_STREAM_STEP + P * UORO_S_PER_PARAMETER)


def online_plan(gradient, model, B, steps, shards=None, cores=None):
    """The thread plan of rtrl/uoro for chunks of `steps` steps of B streams, as
    engine/thread_plan.py's plans read ("shards" threads, "split" 1): `shards` when given
    (capped at B), else the count that minimises the modelled seconds per chunk: the
    kernel's time over the shards (CONTENTION past one) plus, per extra shard, its cost
    per chunk (SHARD_S) and the addition of its gradient. Ties go to fewer shards."""
    cores = available_cores() if cores is None else cores
    plan = {"split": 1, "cores": cores, "batch": B, "steps": steps}
    if shards is not None:
        shards = min(shards, B)
        return {"shards": shards, **plan, "rows_per_shard": max(shard_rows(B, shards)), "chosen_by": "explicit"}
    serial = SHARD_S + recurrent_size(model) * COST_MODEL.combine_s_per_param
    times = {}
    for count in range(1, max(1, min(B, cores)) + 1):
        rows = max(shard_rows(B, count))
        times[count] = (kernel_seconds(gradient, model, rows, steps) * (CONTENTION if count > 1 else 1)
                        + (count - 1) * serial)
    shards = min(times, key=lambda count: (times[count], count))
    return {"shards": shards, **plan, "rows_per_shard": max(shard_rows(B, shards)), "chosen_by": "model",
            "modelled_step_s": times[shards] / steps, "modelled_speedup": times[1] / times[shards]}


def online_gradient(gradient, model, B, grad, steps, rng, shards=None):
    """The Rtrl or Uoro object of a Trainer for B streams, writing into grad (P_all,) (rng:
    the trainer's numpy Generator, UORO's random signs), on the threads of online_plan
    (`shards`: pinned). Its memory, with the forward caches of chunks of `steps` steps, is
    refused before allocating when the machine cannot hold it (MemoryEstimateError, with
    the figure; for rtrl the advice to use uoro and what it would need)."""
    itemsize = model.dtype.itemsize
    plan = online_plan(gradient, model, B, steps, shards)
    chunk = workspace_bytes(model.cell, model.hidden_size, model.output_size, model.num_layers, steps, B, itemsize,
                            skip=model.skip)
    uoro = uoro_bytes(*sizes(model), B, steps, itemsize, plan["shards"]) + chunk
    if gradient == "rtrl":
        state_units = model.num_layers * model.hidden_size * (2 if model.cell == "lstm" else 1)
        try:
            require(rtrl_bytes(*sizes(model), B, steps, itemsize, plan["shards"]) + chunk,
                    f"exact RTRL's influence matrices for {B} streams ({state_units} state units x "
                    f"{recurrent_size(model)} parameters each) and chunks of {steps} steps")
        except ValueError as error:
            raise type(error)(f"{error}; or use gradient 'uoro', an unbiased estimate of the same gradient in "
                              f"about {format_bytes(uoro)}") from None
        return Rtrl(model, B, grad, plan, steps)
    require(uoro, f"UORO for {B} streams and chunks of {steps} steps")
    return Uoro(model, B, grad, rng, plan)


class OnlineChunks:
    """The forward caches of a chunk, and the loss's dL/dy_hat: shared by both methods.
    One workspace, of the longest chunk so far (shorter ones use its first steps; a longer
    one's memory is checked before it is made). grad: the trainer's flat gradient (P_all,),
    overwritten by each run."""

    def __init__(self, model, grad):
        self.model = model
        self.grad = grad
        self.grad_views = model.layout.views(grad)
        self.longest = None    # the workspace of the longest chunk
        self.workspace = None  # of the chunk last run (a view of the longest's first steps)

    def forward(self, x, y, loss, state, resets, quantiles=None):
        """Forward over x (T, B, I) from `state`, dL/dy_hat of the chunk's mean loss into
        workspace.dy and the head's gradient (and the linear path's, with Model(skip=True):
        both are immediate) into grad; returns (loss, count). quantiles: the levels of loss
        "quantile"."""
        T, B = x.shape[:2]
        model = self.model
        if self.longest is None or self.longest.shape[0] < T:
            self.longest = None
            require(workspace_bytes(model.cell, model.hidden_size, model.output_size, model.num_layers, T, B,
                                    model.dtype.itemsize, skip=model.skip), f"chunks of {T} steps x {B} streams")
            self.longest = Workspace(model, T, B)
        workspace = self.workspace = self.longest if self.longest.shape[0] == T else self.longest.first(T)
        forward_chunk(self.model, workspace, x, state, resets)
        y_hat, dy = workspace.y_hat.reshape(T * B, -1), workspace.dy.reshape(T * B, -1)
        targets = y.reshape(T * B) if loss == "cross_entropy" else y.reshape(T * B, -1)
        value, count = loss_gradient(loss, dy, y_hat, targets, 0, 0, quantiles)
        head_backward(self.grad_views["head.weight"], self.grad_views["head.bias"], dy,
                      workspace.layers[-1].h[1:].reshape(T * B, -1))
        if model.skip:
            skip_backward(self.grad_views["skip.weight"], dy, x.reshape(T * B, -1))
        return value, count

    def caches(self):
        """Per-layer tuples (h, c, gates, hidden_n) of the chunk last run (h stands in for
        the caches a cell does not have: the kernels' tuples need one array type)."""
        layers = self.workspace.layers
        hs = tuple(layer.h for layer in layers)
        cs = tuple(layer.c if layer.c is not None else layer.h for layer in layers)
        hidden_ns = tuple(layer.hidden_n if layer.hidden_n is not None else layer.h for layer in layers)
        return hs, cs, tuple(layer.gates for layer in layers), hidden_ns

    def state_after(self, step):
        return state_after(self.model, self.workspace, step)


def layer_arguments(model):
    """(weights_ih, weights_hh, offsets (L, 4)) of the kernels: views of the parameters,
    which the optimizer updates in place (made once)."""
    layers = [model.layer_parameters(k) for k in range(model.num_layers)]
    offsets = np.array([[model.layout.offsets[name] for name in model.layout.layer_names(k)]
                        for k in range(model.num_layers)], dtype=np.int64)
    return tuple(layer[0] for layer in layers), tuple(layer[1] for layer in layers), offsets


class _Carried:
    """What both methods share: the carried arrays (by checkpoint member name, each (B, ...)),
    zeroed, checked and restored alike; the chunk's forward; the state after a step.
    stored(name, array) / loaded(name, array): the member as a checkpoint holds it."""

    @property
    def batch(self):
        return self.chunks_batch

    def zero(self):
        """Forget the carried influence (a zero state has none)."""
        for array in self.arrays().values():
            array[...] = 0

    def non_finite_streams(self):
        """(B,) booleans: the streams whose influence holds a non-finite entry."""
        bad = np.zeros(self.batch, dtype=bool)
        for array in self.arrays().values():
            bad |= ~np.isfinite(array).reshape(array.shape[0], -1).all(axis=1)
        return bad

    def zero_streams(self, streams):
        """Zero the influence of the streams where `streams` (B,) is True (restarted)."""
        for array in self.arrays().values():
            array[streams] = 0

    def checkpoint_arrays(self):
        """The carried arrays as a checkpoint stores them (name -> array)."""
        return {name: self.stored(array) for name, array in self.arrays().items()}

    def restore(self, arrays):
        """Load the carried influence from checkpoint members (name -> array), shapes checked."""
        if set(arrays) != set(self.arrays()):
            raise ValueError(f"gradient {self.name!r} carries {', '.join(sorted(self.arrays()))}; "
                             f"the checkpoint holds {', '.join(sorted(arrays))}")
        for name, array in self.arrays().items():
            stored, expected = arrays[name], self.stored(array).shape
            if stored.shape != expected or not np.all(np.isfinite(stored)):
                raise ValueError(f"trainer/{name} has shape {stored.shape}, expected {expected} (finite)")
            self.load(array, stored)

    def stored(self, array):
        return array

    def load(self, array, stored):
        array[...] = stored

    def state_after(self, step):
        return self.chunks.state_after(step)

    def _shards(self, plan, grad):
        """The plan's shards of the B streams: self.bounds (shards + 1,) their first
        streams and the end; self.grads: the first shard's gradient is grad's recurrent
        part, the others' their own (P,)."""
        rows = shard_rows(self.chunks_batch, plan["shards"])
        self.plan = plan
        self.bounds = [0] + [int(end) for end in np.cumsum(rows)]
        self.grads = [grad[:recurrent_size(self.model)]] + [np.zeros(recurrent_size(self.model), grad.dtype)
                                                             for _ in rows[1:]]

    def _run_shards(self, kernel):
        """kernel(k, first, last) for each shard k of streams first .. last - 1, the first
        in this thread and the others on the shard threads; then the others' gradients
        added to the first's, in shard order."""
        spans = list(zip(self.bounds[:-1], self.bounds[1:]))
        futures = [shard_pool().submit(kernel, k, *span) for k, span in enumerate(spans) if k > 0]
        try:
            kernel(0, *spans[0])
        finally:
            for future in futures:
                future.result()
        for grad in self.grads[1:]:
            np.add(self.grads[0], grad, out=self.grads[0])


class Rtrl(_Carried):
    """Exact RTRL for B streams: the influence of h (and of c for LSTM), (B, L, N, H, W)
    in blocks of parameter columns (kernels/rtrl.py); checkpoints hold it as (B, L, H, P).
    steps: the chunks' length, which sizes each shard's state Jacobians (a longer chunk
    makes them anew)."""

    name = "rtrl"

    def __init__(self, model, B, grad, plan, steps):
        H, L = model.hidden_size, model.num_layers
        blocks, width = influence_blocks(recurrent_size(model),
                                         influence_column_bytes(model.cell, H, L, model.dtype.itemsize))
        self.model = model
        self.chunks = OnlineChunks(model, grad)
        self.layers = layer_arguments(model)
        self.chunks_batch = B
        self.influence_h = np.zeros((B, L, blocks, H, width), model.dtype)
        self.influence_c = np.zeros_like(self.influence_h) if model.cell == "lstm" else self.influence_h
        self._shards(plan, grad)
        self.state_rows = H * (2 if model.cell == "lstm" else 1)  # per layer: LSTM's c and h, else h
        rows = (self.state_rows, width)
        self.scratch = [(np.zeros(rows, model.dtype), np.zeros(rows, model.dtype), np.zeros(H, model.dtype))
                        for _ in self.grads]  # per shard: d_state, d_below, dh_top
        self._make_jacobians(steps)

    def _make_jacobians(self, steps):
        """Per shard, a stream's state Jacobians, their factors and diagonals over `steps` steps."""
        H, L, dtype = self.model.hidden_size, self.model.num_layers, self.model.dtype
        self.jacobians = [(np.zeros((steps, L, 2, self.state_rows, H), dtype),
                           np.zeros((steps, L, 4, self.model.gates * H), dtype), np.zeros((steps, L, 2, H), dtype))
                          for _ in self.grads]

    def arrays(self):
        """The carried influence, by checkpoint member name."""
        arrays = {"influence_h": self.influence_h}
        if self.model.cell == "lstm":
            arrays["influence_c"] = self.influence_c
        return arrays

    def stored(self, array):
        """(B, L, N, H, W) -> (B, L, H, P)."""
        B, L, blocks, H, width = array.shape
        return array.transpose(0, 1, 3, 2, 4).reshape(B, L, H, blocks * width)[..., :recurrent_size(self.model)]

    def load(self, array, stored):
        B, L, blocks, H, width = array.shape
        padded = np.zeros((B, L, H, blocks * width), array.dtype)
        padded[..., :stored.shape[-1]] = stored
        array[...] = padded.reshape(B, L, H, blocks, width).transpose(0, 1, 3, 2, 4)

    def run(self, x, y, loss, state, resets=None, quantiles=None):
        """Gradient of the mean loss over the targets of chunk x (T, B, I), y into grad,
        carrying the influence; returns (loss, count). quantiles: the levels of loss "quantile"."""
        model = self.model
        value, count = self.chunks.forward(x, y, loss, state, resets, quantiles)
        hs, cs, gates, hidden_ns = self.chunks.caches()
        weights_ih, weights_hh, offsets = self.layers
        workspace = self.chunks.workspace
        if self.jacobians[0][0].shape[0] < len(x):
            self._make_jacobians(len(x))

        def kernel(k, first, last):
            d_state, d_below, dh_top = self.scratch[k]
            rtrl_chunk(self.grads[k], self.influence_h[first:last], self.influence_c[first:last], *self.jacobians[k],
                       d_state, d_below, dh_top, hs, cs, gates, hidden_ns, x, workspace.resets, workspace.dy,
                       weights_ih, weights_hh, model.views["head.weight"], offsets, CELL_CODES[model.cell], model.relu,
                       first)

        self._run_shards(kernel)
        return value, count


class Uoro(_Carried):
    """UORO for B streams (Tallec & Ollivier 2018): per stream a state-sized vector s~
    (B, L, H, 1) for h (and c) and a parameter-sized theta~ (B, P) whose outer product is
    an unbiased estimate of RTRL's influence, updated per step with random signs drawn
    from `rng` (the trainer's Generator: runs are bit-reproducible)."""

    name = "uoro"

    def __init__(self, model, B, grad, rng, plan):
        P = recurrent_size(model)
        H, L, G = model.hidden_size, model.num_layers, model.gates
        self.model = model
        self.rng = rng
        self.chunks = OnlineChunks(model, grad)
        self.layers = layer_arguments(model)
        self.chunks_batch = B
        self.influence_h = np.zeros((B, L, H, 1), model.dtype)  # s~ (h part)
        self.influence_c = np.zeros((B, L, H, 1), model.dtype) if model.cell == "lstm" else self.influence_h
        self.influence_theta = np.zeros((B, P), model.dtype)  # theta~
        self.theta_sq = np.zeros(B)
        self.signs_shape = (L, 2 if model.cell == "lstm" else 1, H)
        self._shards(plan, grad)
        self.scratch = []  # per shard of S streams: signs, J s~'s (S, H) tangents and their
        for first, last in zip(self.bounds[:-1], self.bounds[1:]):  # GEMMs' products, nu^T d state / d a
            rows = np.zeros((last - first, H), model.dtype)
            d_x = np.zeros((last - first, G * H), model.dtype)
            da_x = np.zeros((L, G * H), model.dtype)
            self.scratch.append((np.zeros(self.signs_shape, model.dtype), rows, d_x, np.zeros_like(d_x), da_x,
                                 np.zeros_like(da_x), np.zeros((2, H), model.dtype), np.zeros(H, model.dtype)))

    def arrays(self):
        arrays = {"influence_h": self.influence_h, "influence_theta": self.influence_theta}
        if self.model.cell == "lstm":
            arrays["influence_c"] = self.influence_c
        return arrays

    def run(self, x, y, loss, state, resets=None, quantiles=None):
        """As Rtrl.run, with UORO's estimate of the gradient."""
        model = self.model
        T, B = x.shape[:2]
        value, count = self.chunks.forward(x, y, loss, state, resets, quantiles)
        hs, cs, gates, hidden_ns = self.chunks.caches()
        weights_ih, weights_hh, offsets = self.layers
        per_step = -(-np.prod(self.signs_shape) // 8)  # one random bit per sign
        bits = np.frombuffer(self.rng.bytes(T * B * per_step), np.uint8).reshape(T, B, per_step)
        workspace = self.chunks.workspace

        def kernel(k, first, last):
            signs, rows, d_x, d_h, da_x, da_h, carries, dh_top = self.scratch[k]
            uoro_chunk(self.grads[k], self.influence_h[first:last], self.influence_c[first:last],
                       self.influence_theta[first:last], self.theta_sq[first:last], bits, signs, rows, d_x, d_h, da_x,
                       da_h, carries, dh_top, hs, cs, gates, hidden_ns, x, workspace.resets, workspace.dy, weights_ih,
                       weights_hh, model.views["head.weight"], offsets, CELL_CODES[model.cell], model.relu, EPSILON,
                       first)

        self._run_shards(kernel)
        return value, count
