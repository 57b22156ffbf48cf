"""A barrier for the worker threads of one hidden-block kernel call (engine/split.py).

Each of W workers runs the same nogil kernel on its own hidden blocks and calls
`wait(sync, W)` at the end of every step; the last to arrive lets the others through.
sync: (SYNC_SIZE,) int64, zero before a call; its counters sit on separate cache lines.
A waiter spins (with the x86 `pause` hint) and after SPINS_BEFORE_YIELD spins gives its
core away on every round (sched_yield), so a preempted peer can run. `wait` returns False,
and the kernel returns early, once sync[ABORT] is set: the Python side sets it when a
worker fails, so no thread spins forever.

Measured here (2 cores, python -m bench.threading_layers): 0.16-0.17 us per barrier, against
0.9-1.0 us per parallel region of Numba's omp threading layer and 100-127 us of its
workqueue layer.
"""
import platform

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from kernels.config import JIT_OPTIONS

COUNT, GENERATION, ABORT = 0, 8, 16  # int64 slots, 64 bytes apart
SYNC_SIZE = 24
SPINS_BEFORE_YIELD = 4096
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _item_pointer(context, builder, signature, args):
    array_type = signature.args[0]
    array = context.make_array(array_type)(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, array_type, array, [args[1]])


@intrinsic
def atomic_add(typingctx, array, index, value):
    """array[index] += value atomically (sequentially consistent); returns the old value."""
    def codegen(context, builder, signature, args):
        return builder.atomic_rmw("add", _item_pointer(context, builder, signature, args), args[2], "seq_cst")
    return types.int64(array, types.intp, types.int64), codegen


@intrinsic
def atomic_load(typingctx, array, index):
    """array[index], read with acquire ordering (the spin loop cannot hoist it)."""
    def codegen(context, builder, signature, args):
        return builder.load_atomic(_item_pointer(context, builder, signature, args), "acquire", 8)
    return types.int64(array, types.intp), codegen


def _void_call(name, returns=ir.VoidType()):
    @intrinsic
    def call(typingctx):
        def codegen(context, builder, signature, args):
            function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(returns, []), name)
            builder.call(function, [])
            return context.get_dummy_value()
        return types.void(), codegen
    return call


spin_hint = _void_call("llvm.x86.sse2.pause") if _X86 else numba.njit(inline="always")(lambda: None)
yield_core = _void_call("sched_yield", ir.IntType(32))


@numba.njit(**JIT_OPTIONS)
def wait(sync, workers):
    """Block until all `workers` have called wait for this step; False once aborted."""
    if workers == 1:
        return True
    generation = atomic_load(sync, GENERATION)  # read before arriving
    if atomic_add(sync, COUNT, 1) == workers - 1:  # the last to arrive
        atomic_add(sync, COUNT, -workers)
        atomic_add(sync, GENERATION, 1)
        return True
    spins = 0
    while atomic_load(sync, GENERATION) == generation:
        if atomic_load(sync, ABORT) != 0:
            return False
        spins += 1
        if spins < SPINS_BEFORE_YIELD:
            spin_hint()
        else:
            yield_core()
    return True
