"""The thread plan: how many batch shards (engine/shards.py) a chunk is split into, chosen
per shape and core count from a cost model measured on this machine.

Each shard runs the whole recurrence on its own M = B / shards streams, one thread
each, with single-threaded BLAS. More shards mean fewer rows per shard, and each step's
recurrent GEMM gets slower per row as M shrinks (at M = 1 it is a matrix-vector product
that reads all of W_hh for 2 FLOPs per weight); every extra shard also costs serial time
per update (a thread-pool round trip, its Python under the GIL, and one pass over the P
parameters to combine its gradient). The plan picks the shard count that minimises

    modelled seconds per step = shard_step(largest shard's M) + (shards - 1) * serial / T

where shard_step(M) sums, over the layers, the per-step GEMMs (forward (M, H) x (H, GH),
backward (M, GH) x (GH, H), and for a layer under another the gradient from above, again
(M, GH) x (GH, H)), each timed at M = 1, 2, 4, ..., 128 for that H and G; the
whole-chunk GEMMs (input projection, weight gradients) at their measured rate; and the
element-wise pass, fixed + M * H * per_unit per cell, fitted to whole passes. Shards run
in parallel, so the largest shard sets the time. Ties go to fewer shards.

The constants (MEASURED) are single-threaded timings from `python -m bench.gemm_rate
--module`, which prints this block. The model ignores what a 2-core machine cannot show:
memory and cache bandwidth shared by many cores, SMT siblings counted as cores, NUMA.
What it chooses for the standard configurations on 2, 16 and 64 cores: `python -m
bench.plans` (the table in README.md, Performance).
"""
import math
import os
from dataclasses import dataclass

import numpy as np

from engine.parameters import GATES

DEFAULT_STEPS = 50  # T assumed when the chunk length is not known

# BEGIN MEASURED (python -m bench.gemm_rate --module)
MEASURED_ON = '2026-12-01 21:29 UTC, AMD EPYC, 2 cores, load average 0.84, python -m bench.gemm_rate'
MEASURED = dict(
    gemm_rows=[1, 2, 4, 8, 16, 32, 64, 128],
    gemm={  # "H,G": [forward, backward] seconds of one per-step GEMM at gemm_rows
        "32,1": [[8.52e-08, 9.03e-08, 1.33e-07, 2.01e-07, 3.52e-07, 6.86e-07, 1.25e-06, 2.53e-06],
                [8.27e-08, 9.21e-08, 1.49e-07, 2.19e-07, 3.47e-07, 6.94e-07, 1.25e-06, 2.63e-06]],
        "32,3": [[1.61e-07, 1.73e-07, 3.12e-07, 5.25e-07, 1.01e-06, 1.82e-06, 3.61e-06, 7.32e-06],
                [1.9e-07, 1.9e-07, 3.3e-07, 5.24e-07, 9.38e-07, 1.79e-06, 3.58e-06, 7e-06]],
        "32,4": [[1.45e-07, 1.88e-07, 3.39e-07, 6.29e-07, 1.21e-06, 2.38e-06, 5.33e-06, 9.85e-06],
                [1.9e-07, 2e-07, 3.59e-07, 6.28e-07, 1.22e-06, 2.36e-06, 4.75e-06, 9.4e-06]],
        "64,1": [[1.75e-07, 1.89e-07, 3.53e-07, 6.71e-07, 1.2e-06, 2.38e-06, 4.65e-06, 9.27e-06],
                [1.84e-07, 2.05e-07, 3.49e-07, 6.56e-07, 1.21e-06, 2.34e-06, 4.75e-06, 9.61e-06]],
        "64,3": [[6.02e-07, 6.02e-07, 1.12e-06, 1.84e-06, 3.52e-06, 7.07e-06, 1.43e-05, 3.61e-05],
                [7.05e-07, 7.05e-07, 9.32e-07, 1.78e-06, 3.5e-06, 6.99e-06, 1.4e-05, 3.58e-05]],
        "64,4": [[6.7e-07, 8.61e-07, 1.22e-06, 2.37e-06, 5.14e-06, 9.87e-06, 2.58e-05, 4.8e-05],
                [6.62e-07, 6.62e-07, 1.22e-06, 2.33e-06, 4.64e-06, 9.43e-06, 2.52e-05, 4.59e-05]],
        "128,1": [[6.5e-07, 8.67e-07, 1.29e-06, 2.55e-06, 4.84e-06, 1.03e-05, 2.58e-05, 4.79e-05],
                 [7.15e-07, 8.58e-07, 1.3e-06, 2.38e-06, 5.08e-06, 9.63e-06, 2.58e-05, 4.88e-05]],
        "128,3": [[2.1e-06, 2.1e-06, 3.6e-06, 7.31e-06, 1.4e-05, 5.12e-05, 7.6e-05, 0.000139],
                 [2.02e-06, 2.02e-06, 3.47e-06, 6.96e-06, 1.41e-05, 4.56e-05, 7.56e-05, 0.000146]],
        "128,4": [[2.6e-06, 3.44e-06, 4.69e-06, 9.33e-06, 4.63e-05, 6.84e-05, 0.000107, 0.000197],
                 [2.4e-06, 3.57e-06, 4.58e-06, 9.84e-06, 4.34e-05, 6.2e-05, 0.000109, 0.000193]],
        "256,1": [[3.22e-06, 4.13e-06, 5.18e-06, 1.01e-05, 4.23e-05, 6.14e-05, 0.000106, 0.000197],
                 [3.15e-06, 4.13e-06, 5.1e-06, 1e-05, 4.28e-05, 6.57e-05, 0.00011, 0.000185]],
        "256,3": [[8.81e-06, 9.1e-06, 1.55e-05, 8.95e-05, 0.000118, 0.000194, 0.000318, 0.000569],
                 [8.33e-06, 8.76e-06, 1.53e-05, 9.21e-05, 0.000125, 0.000198, 0.000322, 0.000572]],
        "256,4": [[1.48e-05, 1.79e-05, 0.000137, 0.000162, 0.000203, 0.000274, 0.000439, 0.000842],
                 [1.4e-05, 1.6e-05, 0.000119, 0.000146, 0.000189, 0.00026, 0.000429, 0.000714]],
        "512,1": [[1.08e-05, 1.28e-05, 0.000105, 0.00012, 0.00017, 0.00024, 0.000397, 0.000719],
                 [1.12e-05, 1.69e-05, 0.000112, 0.000121, 0.000164, 0.000249, 0.000406, 0.000724]],
        "512,3": [[3.91e-05, 0.000326, 0.000326, 0.00041, 0.000487, 0.000812, 0.00119, 0.00219],
                 [4.1e-05, 0.000354, 0.000354, 0.000393, 0.000554, 0.000754, 0.00119, 0.00265]],
        "512,4": [[5.23e-05, 0.000373, 0.00043, 0.000476, 0.000658, 0.000982, 0.00182, 0.00305],
                 [4.98e-05, 0.000419, 0.000419, 0.000499, 0.000649, 0.00101, 0.00175, 0.00363]],
    },
    chunk_flops_per_s={
        "32,1": 1.1e+11,
        "32,3": 8.02e+10,
        "32,4": 8.5e+10,
        "64,1": 8.24e+10,
        "64,3": 9.01e+10,
        "64,4": 9e+10,
        "128,1": 9.09e+10,
        "128,3": 9.72e+10,
        "128,4": 9.78e+10,
        "256,1": 9.78e+10,
        "256,3": 8.7e+10,
        "256,4": 8.48e+10,
        "512,1": 8.43e+10,
        "512,3": 8.48e+10,
        "512,4": 9.52e+10,
    },
    elementwise={  # cell: (fixed, per_unit) seconds per step
        "rnn": (5.93e-08, 2.07e-09),
        "gru": (2.32e-08, 8.43e-09),
        "lstm": (2.36e-07, 9.21e-09),
    },
    pass_python_s=1.19e-05,
    handoff_s=8.41e-05,
    combine_s_per_param=3.25e-10,
)
# END MEASURED


def available_cores():
    """Cores this process may run on (its CPU affinity, else the CPU count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class CostModel:
    """Single-threaded costs of one shard, in seconds (see the module docstring).

    gemm_rows: the M at which the GEMMs were timed. gemm: "H,G" -> [forward, backward],
    each the seconds of one per-step GEMM at each of gemm_rows (linear in between, and
    proportional to M beyond the last). chunk_flops_per_s: "H,G" -> rate of the
    whole-chunk GEMMs. elementwise: cell -> (fixed, per_unit), per step fixed + M * H *
    per_unit. pass_python_s: the Python of one shard's pass per update and layer (it
    holds the GIL: serial across shards). handoff_s: a thread-pool round trip per extra
    shard and update. combine_s_per_param: serial cost of adding one shard's gradient,
    per parameter.
    An H between the measured ones is interpolated log-log; above them, GEMM times
    scale with H ** 2; below them, and for rates, the nearest H's figures are used."""

    gemm_rows: list
    gemm: dict
    chunk_flops_per_s: dict
    elementwise: dict
    pass_python_s: float
    handoff_s: float
    combine_s_per_param: float

    def shard_step_seconds(self, cell, input_size, hidden_size, rows, num_layers, steps,
                           elementwise=True):
        """Seconds per step of one shard of `rows` streams over chunks of `steps` steps."""
        G, H = GATES[cell], hidden_size
        forward, backward = (self._by_hidden(H, G, lambda key: self._gemm_at(key, kind, rows), 2)
                             for kind in (0, 1))
        chunk_rate = self._by_hidden(H, G, self.chunk_flops_per_s.__getitem__, 0)
        seconds = self.pass_python_s * num_layers / steps
        for k in range(num_layers):
            layer_input = input_size if k == 0 else H
            backward_gemms = 2 if k < num_layers - 1 else 1  # a lower layer's gradient from above
            seconds += forward + backward_gemms * backward
            seconds += 2 * G * H * (2 * layer_input + H) * rows / chunk_rate  # input projection, weight gradients
            if elementwise:
                fixed, per_unit = self.elementwise[cell]
                seconds += fixed + rows * H * per_unit
        return seconds

    def step_seconds(self, cell, input_size, hidden_size, batch, num_layers, steps, shards,
                     output_size=1):
        """Modelled seconds per step of a chunk of `batch` streams split into `shards`."""
        rows = max(shard_rows(batch, shards))
        parallel = self.shard_step_seconds(cell, input_size, hidden_size, rows, num_layers, steps)
        parameters = _parameter_count(cell, input_size, hidden_size, output_size, num_layers)
        serial = (shards - 1) * (self.handoff_s + self.pass_python_s * num_layers
                                 + parameters * self.combine_s_per_param)
        return parallel + serial / steps

    def _gemm_at(self, key, kind, rows):
        """Seconds of one per-step GEMM (kind 0 forward, 1 backward) of `rows` rows."""
        seconds = self.gemm[key][kind]
        if rows > self.gemm_rows[-1]:
            return seconds[-1] * rows / self.gemm_rows[-1]
        return float(np.interp(rows, self.gemm_rows, seconds))

    def _by_hidden(self, H, G, value_at, scale):
        """value_at("H,G") at this H: log-log between the measured H of this G; above
        them, the largest one's times (H / H_largest) ** scale; below them, the smallest
        one's (at small H a call's fixed cost dominates)."""
        measured = sorted(int(key.split(",")[0]) for key in self.chunk_flops_per_s
                          if int(key.split(",")[1]) == G)
        if H <= measured[0]:
            return value_at(f"{measured[0]},{G}")
        if H >= measured[-1]:
            return value_at(f"{measured[-1]},{G}") * (H / measured[-1]) ** scale
        values = [value_at(f"{h},{G}") for h in measured]
        return math.exp(np.interp(math.log(H), np.log(measured), np.log(values)))


def shard_rows(batch, shards):
    """Streams per shard, as engine.shards.ShardedChunk splits them."""
    bounds = np.linspace(0, batch, shards + 1).round().astype(int)
    return [int(stop - start) for start, stop in zip(bounds[:-1], bounds[1:])]


def _parameter_count(cell, input_size, hidden_size, output_size, num_layers):
    G, H = GATES[cell], hidden_size
    layers = sum(G * H * ((input_size if k == 0 else H) + H + 2) for k in range(num_layers))
    return layers + output_size * (H + 1)


COST_MODEL = CostModel(**MEASURED)


def choose_plan(cell, input_size, hidden_size, batch, num_layers=1, cores=None,
                steps=DEFAULT_STEPS, output_size=1, model=None):
    """The plan for chunks of `steps` steps of `batch` streams: a JSON-able dict with
    "shards" (1 <= shards <= min(batch, cores)), "rows_per_shard" (the largest shard),
    "cores", "modelled_step_s" and "modelled_speedup" (against one shard)."""
    model = model or COST_MODEL
    cores = available_cores() if cores is None else cores
    times = {shards: model.step_seconds(cell, input_size, hidden_size, batch, num_layers, steps,
                                        shards, output_size)
             for shards in range(1, max(1, min(batch, cores)) + 1)}
    best = min(times, key=lambda shards: (times[shards], shards))
    return {"shards": best, "rows_per_shard": max(shard_rows(batch, best)), "cores": cores,
            "batch": batch, "steps": steps, "chosen_by": "model",
            "modelled_step_s": times[best], "modelled_speedup": times[1] / times[best],
            "measured_on": MEASURED_ON}


def plan_for(model, steps, batch, shards=None, cores=None):
    """The plan of a Trainer's chunk: `shards` when given (an explicit choice, capped at
    the batch), else the modelled best for `model` (an engine.Model) on this machine."""
    if shards is not None:
        shards = min(shards, batch)
        return {"shards": shards, "rows_per_shard": max(shard_rows(batch, shards)),
                "cores": available_cores() if cores is None else cores, "batch": batch,
                "steps": steps, "chosen_by": "explicit"}
    return choose_plan(model.cell, model.input_size, model.hidden_size, batch, model.num_layers,
                       cores, steps, model.output_size)
