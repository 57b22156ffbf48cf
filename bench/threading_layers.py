"""Entry point `python -m bench.threading_layers`: what one parallel region costs under each
of Numba's threading layers (workqueue, omp, tbb) on this machine, against one barrier of
the hidden-block kernels (kernels/sync.py: threads of the engine's own, meeting once per
step inside a nogil kernel), for choosing how a kernel synchronises its threads per step.

Each layer runs in its own process (NUMBA_THREADING_LAYER is fixed at the first parallel
call). A jitted loop runs `REGIONS` parallel regions in a row, each a prange over the
threads touching one value per thread: almost no work, so the time per region is the
fork-join (wake, schedule, barrier). The same loop with the prange made serial gives the
loop's own cost, subtracted. Prints one JSON line per layer: {"layer", "threads",
"us_per_region"} (median of ROUNDS), or {"layer", "error"} when it cannot load; then
{"layer": "engine barrier", "threads", "us_per_region"}: the same loop in two Python
threads, each step ending in kernels.sync.wait."""
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


def _measure_barrier(threads=2):
    """Seconds per step of a jitted loop run by `threads` threads that meet at
    kernels.sync.wait after each step, less the same loop alone."""
    from concurrent.futures import ThreadPoolExecutor

    import numba
    import numpy as np

    from kernels.sync import SYNC_SIZE, wait

    @numba.njit(nogil=True)
    def steps(worker, workers, sync, values, count):
        for _ in range(count):
            values[worker] += 1.0
            wait(sync, workers)

    values, sync = np.zeros(threads), np.zeros(SYNC_SIZE, np.int64)
    pool = ThreadPoolExecutor(threads - 1)

    def together(count):
        sync[...] = 0
        futures = [pool.submit(steps, w, threads, sync, values, count) for w in range(1, threads)]
        steps(0, threads, sync, values, count)
        for future in futures:
            future.result()

    per_step = []
    for run in (together, lambda count: steps(0, 1, sync, values, count)):
        run(10)  # compile
        samples = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            run(REGIONS * 10)
            samples.append((time.perf_counter() - started) / (REGIONS * 10))
        per_step.append(statistics.median(samples))
    return {"layer": "engine barrier", "threads": threads, "us_per_region": (per_step[0] - per_step[1]) * 1e6}


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
    print(json.dumps(_measure_barrier()))


if __name__ == "__main__":
    main()
