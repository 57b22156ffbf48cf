"""The first-run notice: one line while Numba compiles the kernels for the first time.

Numba compiles a kernel only when its on-disk cache (kernels/__pycache__, or the folder
NUMBA_CACHE_DIR names) holds no entry for the signature called: Dispatcher.compile loads
from the cache first and fires the event "numba:compile" only on a miss, as it starts
compiling. A listener for that event is therefore exact where a timer would guess: it says
nothing when every kernel a run calls is cached, nor under NUMBA_DISABLE_JIT (nothing
compiles), and it speaks once, at the first kernel that compiles.
"""
import contextlib
import threading

from numba.core import event

# Measured with an empty NUMBA_CACHE_DIR on a 2-core Xeon: `bptt train --demo sine` 5.5 s
# cold in all, 1.5 s cached; other cells, dtypes and the hidden-block kernels add to it.
NOTICE = "Compiling the kernels for first use (about 5-10 s on 2 cores; cached afterwards)..."
COMPILE_EVENT = "numba:compile"


class _FirstCompile(event.Listener):
    """Calls echo(NOTICE) when the first function of kernels/ starts compiling."""

    def __init__(self, echo):
        self._echo = echo
        self._said = False
        self._lock = threading.Lock()  # trials and shards may compile from several threads

    def on_start(self, compile_event):
        function = getattr(compile_event.data["dispatcher"], "py_func", None)
        if getattr(function, "__module__", "").split(".")[0] != "kernels":
            return
        with self._lock:
            if self._said:
                return
            self._said = True
        self._echo(NOTICE)

    def on_end(self, compile_event):
        pass


@contextlib.contextmanager
def compile_notice(echo):
    """Within the block: echo(NOTICE) once if a kernel compiles (is not in Numba's cache)."""
    listener = _FirstCompile(echo)
    event.register(COMPILE_EVENT, listener)
    try:
        yield
    finally:
        event.unregister(COMPILE_EVENT, listener)
