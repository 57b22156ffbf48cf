"""Entry point `python -m bench.threading_layers`: what one parallel region costs under each
of Numba's threading layers (workqueue, omp, tbb) on this machine, for choosing the layer
of a kernel that synchronises its threads once per step.

Each layer runs in its own process (NUMBA_THREADING_LAYER is fixed at the first parallel
call). A jitted loop runs `REGIONS` parallel regions in a row, each a prange over the
threads touching one value per thread: almost no work, so the time per region is the
fork-join (wake, schedule, barrier). The same loop with the prange made serial gives the
loop's own cost, subtracted. Prints one JSON line per layer: {"layer", "threads",
"us_per_region"} (median of ROUNDS), or {"layer", "error"} when it cannot load."""
import json
import os
import statistics
import subprocess
import sys
import time

LAYERS = ("workqueue", "omp", "tbb")
REGIONS = 2_000
ROUNDS = 7


def _measure():
    """In this process, with the layer of NUMBA_THREADING_LAYER: seconds per region."""
    import numba
    import numpy as np

    @numba.njit(parallel=True)
    def regions(values, count):
        for _ in range(count):
            for thread in numba.prange(values.shape[0]):
                values[thread] += 1.0

    @numba.njit
    def serial(values, count):
        for _ in range(count):
            for thread in range(values.shape[0]):
                values[thread] += 1.0

    threads = numba.get_num_threads()
    values = np.zeros(threads)
    per_region = []
    for function in (regions, serial):
        function(values, 10)  # compile and start the pool
        samples = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            function(values, REGIONS)
            samples.append((time.perf_counter() - started) / REGIONS)
        per_region.append(statistics.median(samples))
    return {"layer": numba.threading_layer(), "threads": threads,
            "us_per_region": (per_region[0] - per_region[1]) * 1e6}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(_measure()))
        return
    for layer in LAYERS:
        result = subprocess.run([sys.executable, "-m", "bench.threading_layers", "--child"],
                                capture_output=True, text=True,
                                env={**os.environ, "NUMBA_THREADING_LAYER": layer})
        if result.returncode == 0:
            print(result.stdout.strip().splitlines()[-1])
        else:
            reason = (result.stderr.strip().splitlines() or ["failed"])[-1]
            print(json.dumps({"layer": layer, "error": f"cannot load: {reason}"}))


if __name__ == "__main__":
    main()
