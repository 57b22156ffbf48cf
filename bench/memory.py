"""Entry point `python -m bench.memory CONFIG IMPL [--steps T]`: peak resident memory of
training steps of one configuration and implementation, alone in this process.

Prints JSON: baseline_mb (resident after the imports), peak_mb (high-water mark after
the steps), first_step_s (the first step, including compilation or cache loading).
--steps T trains on a chunk of T steps in one update (full BPTT over T)."""
import argparse
import importlib
import json
import time

from bench.configs import get_config
from bench.workloads import PEERS, make_workload

STEPS = 3  # training steps after the first, so every buffer has been touched


def resident_mb():
    """(current, peak) resident set size of this process in MB, from /proc (Linux)."""
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return tuple(int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))


def measure(config, impl, T=None):
    if impl in PEERS:
        importlib.import_module(PEERS[impl])  # the peer's framework counts as baseline
    baseline_mb, _ = resident_mb()
    workload = make_workload(impl, config, T)
    started = time.perf_counter()
    workload.step()
    first_step_s = time.perf_counter() - started
    for _ in range(STEPS):
        workload.step()
    return {"baseline_mb": baseline_mb, "peak_mb": resident_mb()[1], "first_step_s": first_step_s}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("impl")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    print(json.dumps(measure(get_config(args.config), args.impl, args.steps)))


if __name__ == "__main__":
    main()
