"""JIT options in one place, so the gradient checks run with the flags that ship."""
import numba

# error_model="numpy": division by zero gives inf/nan instead of raising, which lets
# LLVM vectorise the element-wise loops. cache=True: a second start does not compile.
JIT_OPTIONS = dict(nogil=True, cache=True, error_model="numpy")


def jit(function):
    """Compile `function` with the project's JIT options."""
    return numba.njit(**JIT_OPTIONS)(function)


def inline_jit(function):
    """Compile a small scalar helper that is inlined into its callers."""
    return numba.njit(inline="always", **JIT_OPTIONS)(function)


def parallel_jit(function):
    """Compile a kernel whose numba.prange loops run on Numba's thread pool (the
    hidden-block plan, engine/split.py); the threading layer is chosen there."""
    return numba.njit(parallel=True, **JIT_OPTIONS)(function)
