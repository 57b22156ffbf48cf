"""Numba-jitted kernels: pure functions over arrays, no Python objects.

Letter legend used in every shape comment of this package:
    T time steps of a chunk, B batch (parallel streams), I input features of a layer,
    H hidden units, G gates per cell (RNN 1, GRU 3, LSTM 4), O outputs, L layers.

Contract (after llm.c): outputs come first in the argument list, then caches, then
inputs, weights and dimensions. Forward kernels overwrite their outputs; backward
kernels overwrite their gradient outputs (each parameter belongs to exactly one
kernel call, so nothing needs accumulating). Buffers are preallocated by the engine;
nothing is allocated inside a time loop. Matrix products go through kernels/gemm.py's gemm(a, b, out)
(np.dot's convention) on the process's BLAS (kernels/blas.py).

Developers: Numba's on-disk cache (cache=True) is keyed on each kernel's own file, so it
does not notice a change to a helper inlined from another file (kernels/activations.py,
kernels/common.py). After editing one, delete kernels/__pycache__ or run with
NUMBA_CACHE_DIR pointing to an empty directory.
"""
