"""Numba-jitted kernels: pure functions over arrays, no Python objects.

Letter legend used in every shape comment of this package:
    T time steps of a chunk, B batch (parallel streams), I input features of a layer,
    H hidden units, G gates per cell (RNN 1, GRU 3, LSTM 4), O outputs, L layers.

Contract (after llm.c): outputs come first in the argument list, then caches, then
inputs, weights and dimensions. Forward kernels overwrite their outputs; backward
kernels overwrite their gradient outputs (each parameter belongs to exactly one
kernel call, so nothing needs accumulating). Buffers are preallocated by the engine;
nothing is allocated inside a time loop.
"""
