"""Entry point `python -m bench.compile_profile`: where bench.compile's cold start goes,
per kernel specialisation (function and argument types), from Numba's compile events.

Run it with NUMBA_CACHE_DIR set to an empty directory (it refuses a cache that already
holds kernels: a cached load is not a compile). Prints a table of the specialisations,
slowest first, with the seconds spent compiling each exclusive of the jitted functions
it calls (those get their own row), grouped totals per function and per dtype, and the
whole start (imports included). --json: the rows as JSON instead."""
import argparse
import json
import os
import sys
import time
from collections import defaultdict


def _dtype_of(args):
    """float32 / float64 / mixed / other, from the specialisation's argument types."""
    names = {str(getattr(arg, "dtype", "")) for arg in args}
    floats = names & {"float32", "float64"}
    return floats.pop() if len(floats) == 1 else ("mixed" if floats else "other")


def profile():
    from numba.core import event

    started = time.perf_counter()
    with event.install_recorder("numba:compile") as recorder:
        from bench.compile import start_all

        start_all()
    total = time.perf_counter() - started
    rows, stack = [], []
    for timestamp, ev in recorder.buffer:  # start and end events, nested
        if ev.is_start:
            stack.append([timestamp, ev.data, 0.0])
            continue
        begin, data, children = stack.pop()
        elapsed = timestamp - begin
        if stack:
            stack[-1][2] += elapsed
        dispatcher = data["dispatcher"]
        rows.append({"function": f"{dispatcher.py_func.__module__}.{dispatcher.py_func.__name__}",
                     "dtype": _dtype_of(data["args"]), "args": str(data["args"]),
                     "seconds": elapsed - children})
    return total, sorted(rows, key=lambda row: -row["seconds"])


def _totals(rows, key):
    sums = defaultdict(lambda: [0.0, 0])
    for row in rows:
        sums[row[key]][0] += row["seconds"]
        sums[row[key]][1] += 1
    return sorted(sums.items(), key=lambda item: -item[1][0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cache = os.environ.get("NUMBA_CACHE_DIR")
    if not cache or any(files for _, _, files in os.walk(cache)):
        sys.exit("Error: set NUMBA_CACHE_DIR to an empty directory (a cold compile is measured)")
    total, rows = profile()
    if args.json:
        print(json.dumps({"total_s": total, "rows": rows}))
        return
    compiled = sum(row["seconds"] for row in rows)
    print(f"whole start {total:.2f} s, of which compiling {compiled:.2f} s in {len(rows)} specialisations")
    for key in ("function", "dtype"):
        print(f"\nper {key}: seconds, specialisations")
        for name, (seconds, count) in _totals(rows, key):
            print(f"  {seconds:6.2f}  {count:3d}  {name}")
    print("\nspecialisations, slowest first: seconds, function, argument types")
    for row in rows:
        print(f"  {row['seconds']:6.2f}  {row['function']}  {row['args']}")


if __name__ == "__main__":
    main()
