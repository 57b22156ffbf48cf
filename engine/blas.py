"""Thread count of the BLAS that the kernels' np.dot calls (SciPy's bundled OpenBLAS).

The engine runs its own threads (one per batch shard, engine/shards.py), each calling
single-threaded BLAS. OpenBLAS's own threads spin while waiting: with two BLAS threads
on two cores, any other busy process turned a 6 ms LSTM step into 63 ms here. Importing
the engine therefore sets SciPy's OpenBLAS to one thread (engine/bptt.py); NumPy's own
OpenBLAS, which the engine does not use, is left alone.
"""
import ctypes
import glob
import os

_SETTERS = ("scipy_openblas_set_num_threads", "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads", "openblas_get_num_threads")


def _library():
    """SciPy's OpenBLAS, already loaded by Numba's np.dot support; None if not found."""
    import scipy

    pattern = os.path.join(os.path.dirname(scipy.__file__), os.pardir, "scipy.libs", "*openblas*")
    for path in sorted(glob.glob(pattern)):
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


_LIBRARY = _library()


def _function(names):
    for name in names:
        if _LIBRARY is not None and hasattr(_LIBRARY, name):
            return getattr(_LIBRARY, name)
    return None


_set_threads = _function(_SETTERS)
_get_threads = _function(_GETTERS)
_get_core = _function(("scipy_openblas_get_corename", "openblas_get_corename"))
if _get_core is not None:
    _get_core.restype = ctypes.c_char_p


def set_blas_threads(count):
    """Use `count` BLAS threads in the kernels' GEMMs (no-op for an unknown BLAS)."""
    if _set_threads is not None:
        _set_threads(int(count))


def blas_threads():
    """Threads of the kernels' BLAS, or None when it cannot be told."""
    return None if _get_threads is None else int(_get_threads())


def blas_core():
    """The CPU kernel set the kernels' OpenBLAS runs ("Haswell": AVX2, "SkylakeX": AVX-512,
    ...): its own pick for this CPU, or what OPENBLAS_CORETYPE forces; None when unknown."""
    return None if _get_core is None else _get_core().decode()
