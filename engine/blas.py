"""The BLAS behind the kernels' GEMMs (kernels/gemm.py): which one, and its thread count.

The backend, SciPy's OpenBLAS or Intel MKL, is chosen once per process by kernels/blas.py
(BPTT_BLAS=openblas|mkl forces one; by default MKL where the `mkl` extra is installed on
an Intel CPU). The engine runs its own threads (one per batch shard, engine/shards.py, or
per hidden block, engine/split.py), each calling single-threaded BLAS. OpenBLAS's own
threads spin while waiting: with two BLAS threads on two cores, any other busy process
turned a 6 ms LSTM step into 63 ms here. Importing the engine therefore sets the kernels'
BLAS to one thread (engine/bptt.py; MKL runs its sequential layer, one thread always);
NumPy's own OpenBLAS, which the engine does not use, is left alone.
"""
from kernels.gemm import BACKEND


def backend():
    """The kernels' BLAS: {"name": "openblas" | "mkl", "library": its path, "version"}."""
    return BACKEND.describe()


def set_blas_threads(count):
    """Use `count` BLAS threads in the kernels' GEMMs (no-op where it cannot be set)."""
    BACKEND.set_threads(count)


def blas_threads():
    """Threads of the kernels' BLAS, or None when it cannot be told."""
    return BACKEND.threads()


def blas_core():
    """The CPU kernel set the kernels' OpenBLAS runs ("Haswell": AVX2, "SkylakeX": AVX-512,
    ...): its own pick for this CPU, or what OPENBLAS_CORETYPE forces; None for MKL or
    when unknown."""
    return BACKEND.core
