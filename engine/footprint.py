"""Memory estimates made before allocating, so that a size the machine cannot hold fails at
once with one clear error (the estimate and the memory available) instead of a MemoryError
traceback, or the kernel killing the process minutes later.

The estimates follow the engine's buffers: the flat parameters and their copies
(gradient, last good parameters, optimizer moments and their last good copies), the
per-chunk activation workspace of each shard (engine/workspace.py), the forward-mode
gradients' carried influence (engine/online.py), and forecast arrays.
"""
import math
import os

from engine.parameters import GATES

_MEMINFO = "/proc/meminfo"
# Python objects per layer beside the arrays' data (views, buffer headers; measured with
# 20,000 layers): they dominate for deep, narrow stacks.
MODEL_LAYER_OBJECTS = 2_560      # the model's parameter views and layout
TRAINING_LAYER_OBJECTS = 10_240  # gradient views, workspaces and optimizer bookkeeping


class MemoryEstimateError(ValueError):
    """The estimated memory exceeds what the machine has available (bad input: exit 2)."""


def available_bytes():
    """Memory the machine can give now: MemAvailable of /proc/meminfo, else the free physical
    pages (os.sysconf); None when neither is known."""
    try:
        with open(_MEMINFO) as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def require(nbytes, what):
    """Raise MemoryEstimateError when `nbytes` (an estimate) exceeds the available memory."""
    available = available_bytes()
    if available is not None and nbytes > available:
        raise MemoryEstimateError(f"{what} needs about {format_bytes(nbytes)} of memory, but this machine "
                                  f"has {format_bytes(available)} available; choose smaller sizes")


def format_bytes(nbytes):
    """1536 -> '1.5 KiB'; huge values stay readable ('3.2e+04 TiB')."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024:
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1024
    return f"{nbytes:.3g} TiB"


def parameter_count(cell, input_size, hidden_size, output_size, num_layers, bidirectional=False, skip=False):
    """Entries of the flat parameter buffer (PyTorch's layout and order; bidirectional: two
    directions per layer, the layers above the first and the head reading 2H; skip: the
    linear path's (O, I) weight after the head)."""
    gates_hidden = GATES[cell] * hidden_size
    directions = 2 if bidirectional else 1
    first = gates_hidden * (input_size + hidden_size) + 2 * gates_hidden
    deeper = gates_hidden * (directions * hidden_size + hidden_size) + 2 * gates_hidden
    return (directions * (first + (num_layers - 1) * deeper) + output_size * directions * hidden_size
            + output_size + (output_size * input_size if skip else 0))


def parameter_bytes(cell, input_size, hidden_size, output_size, num_layers, itemsize, bidirectional=False,
                    skip=False):
    """The flat parameter buffer."""
    return parameter_count(cell, input_size, hidden_size, output_size, num_layers, bidirectional, skip) * itemsize


def model_bytes(cell, input_size, hidden_size, output_size, num_layers, itemsize, bidirectional=False, skip=False):
    """A Model: its parameter buffer and the Python objects of its layers."""
    directions = 2 if bidirectional else 1
    return (parameter_bytes(cell, input_size, hidden_size, output_size, num_layers, itemsize, bidirectional, skip)
            + directions * num_layers * MODEL_LAYER_OBJECTS)


def trainer_bytes(parameter_nbytes, optimizer_buffers):
    """A Trainer's copies of the parameter buffer: gradient, last good parameters, and each
    optimizer moment with its last good copy."""
    return parameter_nbytes * (2 + 2 * optimizer_buffers)


# RTRL: the bytes a block of influence columns keeps in cache while the kernel works on it
# (kernels/rtrl.py); the fastest at H = 16 and 32 on the bench machine (docs/training.md).
INFLUENCE_BLOCK_BYTES = 72 * 1024


def recurrent_parameter_count(cell, input_size, hidden_size, output_size, num_layers):
    """P: the parameters before the head (every layer's), the columns of an influence."""
    return parameter_count(cell, input_size, hidden_size, output_size, num_layers) - output_size * (hidden_size + 1)


def influence_column_bytes(cell, hidden_size, num_layers, itemsize):
    """Bytes per influence column of RTRL's working set: the column of every layer's
    influence (H rows, and H more for LSTM's c) and of the GEMMs' two outputs (S rows)."""
    state_rows = hidden_size * (2 if cell == "lstm" else 1)
    return itemsize * (num_layers + 2) * state_rows


def influence_blocks(parameters, column_bytes):
    """(N, W): RTRL's `parameters` influence columns in N blocks of W (a multiple of 16,
    N W >= P, as few blocks as keep the working set, W column_bytes, within
    INFLUENCE_BLOCK_BYTES, or blocks of up to 64 columns where that is less): a stream's
    block and its GEMMs' outputs stay in cache while the element-wise pass reads them
    (kernels/rtrl.py); wider blocks make fewer calls of everything per column."""
    widest = max(64, INFLUENCE_BLOCK_BYTES // column_bytes // 16 * 16)
    blocks = -(-parameters // widest)
    width = -(-(-(-parameters // blocks)) // 16) * 16  # ceil(P / blocks), rounded up to 16
    return -(-parameters // width), width


def rtrl_bytes(cell, input_size, hidden_size, output_size, num_layers, streams, steps, itemsize, shards=1):
    """Exact RTRL's buffers (engine/online.py): the influence (B, L, N, H, W) of h (and c
    for LSTM) in blocks of its P columns; per shard of the streams the scratch (2, S, W)
    (S state rows per layer: 2H for LSTM, else H) and an H row, a stream's state
    Jacobians over a chunk of `steps` steps ((steps, L, 2, S, H), with their factors
    (steps, L, 4, G*H) and diagonals (steps, L, 2, H)), and past the first a gradient
    (P,) of its own."""
    gate_rows = GATES[cell] * hidden_size
    parameters = recurrent_parameter_count(cell, input_size, hidden_size, output_size, num_layers)
    blocks, width = influence_blocks(parameters, influence_column_bytes(cell, hidden_size, num_layers, itemsize))
    state_rows = hidden_size * (2 if cell == "lstm" else 1)
    state = num_layers * state_rows
    jacobians = steps * num_layers * (2 * state_rows * hidden_size + 4 * gate_rows + 2 * hidden_size)
    scratch = 2 * state_rows * width + hidden_size + jacobians
    return (streams * state * blocks * width + shards * scratch + (shards - 1) * parameters) * itemsize


def uoro_bytes(cell, input_size, hidden_size, output_size, num_layers, streams, steps, itemsize, shards=1):
    """UORO's buffers (engine/online.py): per stream the state-sized vector (L, S), the
    parameter-sized one (P,) and its squared norm (float64), a chunk of `steps` steps'
    random bits (one per state entry), and the scratch: the tangent's GEMMs over the
    streams ((B, H) in, 2 (B, G*H) out) and, per shard of the streams, the signs (L, S),
    2 (L, G*H) and 3 H rows, and past the first a gradient (P,) of its own."""
    gate_rows = GATES[cell] * hidden_size
    parameters = recurrent_parameter_count(cell, input_size, hidden_size, output_size, num_layers)
    state = num_layers * hidden_size * (2 if cell == "lstm" else 1)
    per_shard = state + 2 * num_layers * gate_rows + 3 * hidden_size
    scratch = streams * (hidden_size + 2 * gate_rows) + shards * per_shard + (shards - 1) * parameters
    return ((streams * (state + parameters) + scratch) * itemsize
            + steps * streams * -(-state // 8) + streams * 8)


def forecast_bytes(steps, series, outputs):
    """Forecasts of `series` series `steps` steps ahead, `outputs` values each, with their
    labels: the float64 forecasts and their copies into the output's columns (3 x 8 bytes
    a value), the time stamps or step numbers and the series ids (5 x 8 bytes a row)."""
    return steps * series * (24 * outputs + 40)


def workspace_bytes(cell, hidden_size, output_size, num_layers, T, B, itemsize, masks=(False, False, False),
                    bidirectional=False, input_size=None, skip=False):
    """Bytes of Workspace(model, T, B) (engine/workspace.py), computed without allocating.
    masks: whether the model has dropout, recurrent dropout, zoneout (their buffers).
    bidirectional: two directions' buffers per layer and the pairs' own (input_size needed).
    skip: the linear path's (T, B, O) output beside the head's."""
    H, G = hidden_size, GATES[cell]
    dropout, recurrent_dropout, zoneout = masks
    states = (2 if cell == "lstm" else 1) * (T + 1) * B * H       # h, c
    steps = T * B * G * H + (T * B * H if cell == "gru" else 0)    # gates, hidden_n
    scratch = B * G * H + H * G * H + B * H * (2 + (cell == "gru") + (cell == "lstm"))
    per_layer = states + steps + scratch + T                       # + dh_norm_sq
    per_layer += recurrent_dropout * (T + 1) * B * H                # h_prev, keep_prev
    per_layer += zoneout * (T + 1) * B * H * (1 + (cell == "lstm")) + zoneout * (cell == "lstm") * B * H
    # Dropout below the top layer: one-directional, drop and dropped; bidirectional, each
    # direction's drop (the pair's output is multiplied in place).
    below = dropout * (num_layers - 1) * 2 * T * B * H
    head = (3 if skip else 2) * T * B * output_size                # y_hat, dy (and the linear path's)
    if not bidirectional:
        return (num_layers * per_layer + below + head) * itemsize + T * B  # + resets
    pairs = 0  # engine/bidirectional.py's PairBuffers: output, reversed input, above and its weight
    for k in range(num_layers):
        layer_input = input_size if k == 0 else 2 * H
        above = output_size if k == num_layers - 1 else 2 * G * H
        pairs += T * B * (2 * H + layer_input + above) + above * H
    return (2 * num_layers * per_layer + below + pairs + head) * itemsize + 2 * T * B  # two resets


def split_bytes(cell, input_size, hidden_size, output_size, num_layers, B, n, itemsize):
    """engine.split.SplitLayers' buffers for B streams in n hidden blocks: per layer the
    weights in block order (W_ih, W_hh and its transpose, biases, the weight above), the
    backward's per-step scratch and the blocks' gradient parts; and the block order (int64).
    Forward's per-step scratch is the workspace's own, viewed in blocks."""
    G, H = GATES[cell], hidden_size
    GH = G * H
    total = GH * 8
    for k in range(num_layers):
        layer_input = input_size if k == 0 else H
        above = output_size * H if k == num_layers - 1 else GH * H
        total += itemsize * (2 * GH * layer_input + 3 * GH * H + 3 * GH + above
                             + 4 * B * H + 2 * n * B * H + 2 * n)
    return total


def chunk_bytes(cell, input_size, hidden_size, output_size, num_layers, T, B, shards, itemsize,
                parameter_nbytes, memory=None, split=1, masks=(False, False, False), bidirectional=False,
                skip=False):
    """Buffers of the Trainer's chunks of T steps and B streams in `shards` shards: each
    shard's workspace (with memory "sqrt" or a byte budget, about one segment's), the extra
    shards' gradients and their input and target copies; with `split` hidden blocks, their
    buffers (split_bytes). masks, skip: as in workspace_bytes."""
    sizes = (cell, hidden_size, output_size, num_layers)
    total = (shards - 1) * parameter_nbytes
    if split > 1:
        total += split_bytes(cell, input_size, hidden_size, output_size, num_layers, B, split, itemsize)
    for shard in range(shards):
        streams = B // shards + (shard < B % shards)
        if bidirectional:  # whole sequences, stored (no recomputation)
            total += workspace_bytes(*sizes, T, streams, itemsize, masks, True, input_size, skip=skip)
        elif memory is None:
            total += workspace_bytes(*sizes, T, streams, itemsize, masks, skip=skip)
        elif memory == "sqrt":
            segment = max(1, math.ceil(math.sqrt(T)))
            total += workspace_bytes(*sizes, segment, streams, itemsize, masks, skip=skip)
        else:
            total += min(memory, workspace_bytes(*sizes, T, streams, itemsize, masks, skip=skip))
        if shards > 1:
            total += T * streams * (input_size + output_size) * max(itemsize, 8)
    return total


def training_bytes(cell, input_size, hidden_size, output_size, num_layers, itemsize, window, streams,
                   shards, optimizer_buffers, memory=None, skip=False):
    """A training run's buffers: the model's parameters, the Trainer's copies of them and
    the chunk buffers of its longest window (`window` steps x `streams` streams); skip: a
    model with the linear path (Model(skip=True))."""
    sizes = (cell, input_size, hidden_size, output_size, num_layers)
    parameters = parameter_bytes(*sizes, itemsize, skip=skip)
    return (model_bytes(*sizes, itemsize, skip=skip) + trainer_bytes(parameters, optimizer_buffers)
            + chunk_bytes(*sizes, window, streams, shards, itemsize, parameters, memory, skip=skip)
            + num_layers * TRAINING_LAYER_OBJECTS)
