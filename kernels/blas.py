"""The BLAS library behind kernels/gemm.py, chosen once per process and bound by name.

The kernels call the external C functions bptt_sgemm, bptt_dgemm, bptt_sgemv,
bptt_dgemv, bptt_sdot and bptt_ddot (Fortran BLAS calling convention: every argument by
pointer). `load()` points these names at one library's functions with
llvmlite.binding.add_symbol before any kernel is compiled or loaded from Numba's on-disk
cache, so no address is embedded in the compiled code: a cached kernel runs with
whichever library the process chose.

Backends:
- "openblas": SciPy's bundled OpenBLAS, through scipy.linalg.cython_blas, exactly the
  functions Numba's np.dot calls (the same results, bit for bit). Always there.
- "mkl": Intel MKL's libmkl_rt from the optional `mkl` wheel (extra `mkl`, x86-64),
  set to its LP64 interface and its sequential threading layer (one thread per call,
  like the OpenBLAS the engine sets to one thread: the engine runs its own threads).

BPTT_BLAS=openblas|mkl forces one; otherwise MKL where it is installed and the CPU is an
Intel one, else OpenBLAS (docs/performance.md, "BLAS backend", has the measurements
behind this rule).
"""
import ctypes
import glob
import os
import platform
import re

from llvmlite import binding

ENVIRONMENT = "BPTT_BLAS"
BACKENDS = ("openblas", "mkl")
ROUTINES = ("sgemm", "dgemm", "sgemv", "dgemv", "sdot", "ddot")  # bound as bptt_<routine>

_MKL_INTERFACE_LP64 = 0       # MKL_Set_Interface_Layer: 32-bit integers, as SciPy's BLAS
_MKL_THREADING_SEQUENTIAL = 1  # MKL_Set_Threading_Layer: no OpenMP threads at all


class BlasUnavailable(ImportError):
    """BPTT_BLAS names a backend that cannot be used here (or no backend at all)."""


class Backend:
    """One loaded BLAS: its name, library path, version, routine addresses and, for
    OpenBLAS, the CPU kernel set it runs ("Haswell": AVX2, "SkylakeX": AVX-512, ...)."""

    def __init__(self, name, library, version, addresses, threads, core=None):
        self.name, self.library, self.version, self.core = name, library, version, core
        self.addresses = addresses  # routine -> address of its Fortran-convention function
        self._threads = threads     # (set(count), get()) of the library, or None

    def describe(self):
        """JSON-able {"name", "library", "version"}."""
        return {"name": self.name, "library": self.library, "version": self.version}

    def set_threads(self, count):
        if self._threads is not None:
            self._threads[0](int(count))

    def threads(self):
        return None if self._threads is None else int(self._threads[1]())


def _function(library, names, restype=ctypes.c_int):
    """The first of `names` that `library` exports, or None."""
    for name in names:
        if hasattr(library, name):
            function = getattr(library, name)
            function.restype = restype
            return function
    return None


def scipy_openblas_path():
    """SciPy's bundled OpenBLAS shared library, or None when it is not found."""
    import scipy

    pattern = os.path.join(os.path.dirname(scipy.__file__), os.pardir, "scipy.libs", "*openblas*")
    paths = sorted(glob.glob(pattern))
    return os.path.realpath(paths[0]) if paths else None


def _scipy_openblas():
    """SciPy's OpenBLAS loaded (already loaded by SciPy: no second copy), or None."""
    path = scipy_openblas_path()
    return ctypes.CDLL(path) if path else None


def _openblas_threads(library):
    """(set(count), get()) of an OpenBLAS library, or None."""
    setter = _function(library, ("scipy_openblas_set_num_threads", "openblas_set_num_threads"), None)
    getter = _function(library, ("scipy_openblas_get_num_threads", "openblas_get_num_threads"))
    return None if setter is None or getter is None else (setter, getter)


def _openblas():
    from numba.core.extending import get_cython_function_address

    addresses = {name: get_cython_function_address("scipy.linalg.cython_blas", name) for name in ROUTINES}
    library = _scipy_openblas()
    threads, version, core = None, None, None
    if library is not None:
        threads = _openblas_threads(library)
        config = _function(library, ("scipy_openblas_get_config", "openblas_get_config"), ctypes.c_char_p)
        version = config().decode().split(" ")[1] if config is not None else None  # "OpenBLAS 0.3.28 ..."
        corename = _function(library, ("scipy_openblas_get_corename", "openblas_get_corename"), ctypes.c_char_p)
        core = corename().decode() if corename is not None else None
    return Backend("openblas", scipy_openblas_path(), version, addresses, threads, core)


def mkl_path():
    """libmkl_rt of the installed `mkl` wheel, or None when the wheel is not installed."""
    from importlib import metadata

    try:
        files = metadata.distribution("mkl").files or []
    except metadata.PackageNotFoundError:
        return None
    found = [file for file in files if os.path.basename(str(file)).startswith("libmkl_rt.so")]
    return os.path.realpath(found[0].locate()) if found else None


def _mkl():
    path = mkl_path()
    if path is None or platform.machine() not in ("x86_64", "AMD64"):
        raise BlasUnavailable(f"{ENVIRONMENT}=mkl: Intel MKL is not installed here "
                              "(pip install 'bptt[mkl]', x86-64 only)")
    library = ctypes.CDLL(path)
    # Both layers must be set before any other MKL call.
    library.MKL_Set_Interface_Layer(_MKL_INTERFACE_LP64)
    library.MKL_Set_Threading_Layer(_MKL_THREADING_SEQUENTIAL)
    buffer = ctypes.create_string_buffer(256)
    library.MKL_Get_Version_String(buffer, len(buffer))
    found = re.search(r"Version (\S+)", buffer.value.decode())  # "... Library Version 2026.2-Product Build ..."
    version = found.group(1).split("-")[0] if found else buffer.value.decode().strip()
    addresses = {name: ctypes.cast(getattr(library, name + "_"), ctypes.c_void_p).value for name in ROUTINES}
    set_mkl, get_mkl = _function(library, ("MKL_Set_Num_Threads",), None), _function(library, ("MKL_Get_Max_Threads",))
    scipy_openblas = _scipy_openblas()
    openblas = None if scipy_openblas is None else _openblas_threads(scipy_openblas)

    def set_threads(count):
        # SciPy's OpenBLAS, still behind any np.dot in jitted code, follows: left at its
        # default, its spinning threads slowed two batch shards of a small LSTM 6x here.
        set_mkl(count)
        if openblas is not None:
            openblas[0](count)

    return Backend("mkl", path, version, addresses, (set_threads, get_mkl))


def is_intel_cpu():
    """Whether this is an Intel x86-64 CPU (/proc/cpuinfo's vendor_id)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return any(line.startswith("vendor_id") and "GenuineIntel" in line for line in cpuinfo)
    except OSError:
        return False


def chosen_name():
    """The backend this process uses: BPTT_BLAS when set, else MKL where it is installed on
    an Intel x86-64 CPU, else OpenBLAS. Raises BlasUnavailable for an unknown name."""
    forced = os.environ.get(ENVIRONMENT, "").strip().lower()
    if forced:
        if forced not in BACKENDS:
            raise BlasUnavailable(f"{ENVIRONMENT}={os.environ[ENVIRONMENT]!r}: expected one of "
                                  f"{', '.join(BACKENDS)}")
        return forced
    intel = is_intel_cpu()
    return "mkl" if intel and mkl_path() is not None else "openblas"


_LOADED = None


def load():
    """The process's backend, loaded and bound to the bptt_* names on the first call."""
    global _LOADED
    if _LOADED is None:
        backend = {"openblas": _openblas, "mkl": _mkl}[chosen_name()]()
        for name, address in backend.addresses.items():
            binding.add_symbol("bptt_" + name, address)
        _LOADED = backend
    return _LOADED
