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
MEASURED_ON = '2026-12-01 22:10 UTC, AMD EPYC, 2 cores, load average 0.70, python -m bench.gemm_rate'
MEASURED = dict(
    gemm_rows=[1, 2, 4, 8, 16, 32, 64, 128],
    gemm={  # "H,G": [forward, backward] seconds of one per-step GEMM at gemm_rows
        "32,1": [[8.39e-08, 1.22e-07, 1.54e-07, 2.09e-07, 3.6e-07, 6.63e-07, 1.37e-06, 2.61e-06],
                [1.23e-07, 1.23e-07, 1.36e-07, 2.04e-07, 3.57e-07, 6.84e-07, 1.36e-06, 2.59e-06]],
        "32,3": [[1.32e-07, 1.54e-07, 3.23e-07, 5.75e-07, 1.11e-06, 2.04e-06, 4.08e-06, 7.76e-06],
                [1.6e-07, 1.78e-07, 3.06e-07, 5.46e-07, 1e-06, 1.98e-06, 3.76e-06, 7.39e-06]],
        "32,4": [[1.5e-07, 2.09e-07, 3.67e-07, 6.69e-07, 1.4e-06, 2.53e-06, 5.41e-06, 1.06e-05],
                [2.06e-07, 2.33e-07, 3.77e-07, 6.77e-07, 1.32e-06, 2.38e-06, 4.85e-06, 9.56e-06]],
        "64,1": [[2.61e-07, 2.61e-07, 3.79e-07, 7.23e-07, 1.3e-06, 2.67e-06, 5.04e-06, 1.04e-05],
                [2.68e-07, 2.68e-07, 3.95e-07, 7.23e-07, 1.39e-06, 2.66e-06, 5.31e-06, 1.02e-05]],
        "64,3": [[7.57e-07, 7.57e-07, 1.06e-06, 1.99e-06, 3.99e-06, 7.83e-06, 1.56e-05, 3.74e-05],
                [8.14e-07, 8.14e-07, 9.53e-07, 1.91e-06, 3.72e-06, 7.45e-06, 1.49e-05, 3.68e-05]],
        "64,4": [[8.22e-07, 1.08e-06, 1.44e-06, 2.74e-06, 5.31e-06, 1.08e-05, 2.74e-05, 5.24e-05],
                [1.03e-06, 1.03e-06, 1.28e-06, 2.46e-06, 4.84e-06, 9.44e-06, 2.81e-05, 5.27e-05]],
        "128,1": [[9.7e-07, 1.04e-06, 1.31e-06, 2.53e-06, 5.06e-06, 9.43e-06, 2.71e-05, 4.86e-05],
                 [9.57e-07, 1.11e-06, 1.29e-06, 2.61e-06, 5.12e-06, 1.05e-05, 2.67e-05, 4.94e-05]],
        "128,3": [[2.25e-06, 3e-06, 3.92e-06, 7.72e-06, 1.52e-05, 4.77e-05, 7.81e-05, 0.000144],
                 [2.35e-06, 3.17e-06, 4.05e-06, 8.12e-06, 1.47e-05, 4.73e-05, 7.71e-05, 0.000142]],
        "128,4": [[2.77e-06, 4.4e-06, 5.51e-06, 1.08e-05, 5.49e-05, 9.1e-05, 0.000154, 0.000274],
                 [3.37e-06, 4.07e-06, 5.34e-06, 1.02e-05, 6.16e-05, 9.18e-05, 0.000147, 0.000269]],
        "256,1": [[4.31e-06, 4.9e-06, 6.98e-06, 1.38e-05, 5.96e-05, 8.98e-05, 0.000146, 0.000268],
                 [4.45e-06, 4.75e-06, 7.15e-06, 1.38e-05, 5.96e-05, 9.24e-05, 0.000147, 0.000265]],
        "256,3": [[1.23e-05, 1.6e-05, 2.3e-05, 0.000145, 0.000145, 0.000204, 0.000313, 0.000599],
                 [1.3e-05, 1.52e-05, 2.22e-05, 0.000135, 0.00014, 0.000208, 0.000396, 0.00061]],
        "256,4": [[1.7e-05, 1.99e-05, 0.000126, 0.000149, 0.000193, 0.000274, 0.000472, 0.000885],
                 [1.42e-05, 1.76e-05, 0.00012, 0.000143, 0.000181, 0.000282, 0.000448, 0.000847]],
        "512,1": [[1.37e-05, 1.87e-05, 0.000123, 0.000146, 0.000185, 0.000261, 0.000474, 0.000837],
                 [1.36e-05, 1.87e-05, 0.000128, 0.000137, 0.00016, 0.000262, 0.000444, 0.000817]],
        "512,3": [[4.32e-05, 0.000359, 0.000361, 0.000397, 0.00059, 0.000991, 0.00147, 0.00272],
                 [4.62e-05, 0.000348, 0.000348, 0.000421, 0.000617, 0.00124, 0.00178, 0.00298]],
        "512,4": [[6.78e-05, 0.000531, 0.00054, 0.000643, 0.000813, 0.00128, 0.00229, 0.00369],
                 [6.37e-05, 0.000529, 0.000529, 0.000713, 0.00132, 0.00183, 0.00264, 0.00399]],
    },
    chunk_flops_per_s={
        "32,1": 1.07e+11,
        "32,3": 7.32e+10,
        "32,4": 6.71e+10,
        "64,1": 7.02e+10,
        "64,3": 8.19e+10,
        "64,4": 8.95e+10,
        "128,1": 8.91e+10,
        "128,3": 8.83e+10,
        "128,4": 8.79e+10,
        "256,1": 8.95e+10,
        "256,3": 8.27e+10,
        "256,4": 8.17e+10,
        "512,1": 8.17e+10,
        "512,3": 9.05e+10,
        "512,4": 9.23e+10,
    },
    elementwise={  # cell: (fixed, per_unit) seconds per step
        "rnn": (0, 2.95e-09),
        "gru": (0, 9.57e-09),
        "lstm": (0, 1.36e-08),
    },
    pass_python_s=2.01e-05,
    handoff_s=8.2e-05,
    combine_s_per_param=3.91e-10,
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
