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
MEASURED_ON = '2026-12-01 21:00 UTC, AMD EPYC, 2 cores, load average 6.90, python -m bench.gemm_rate'
MEASURED = dict(
    gemm_rows=[1, 2, 4, 8, 16, 32, 64, 128],
    gemm={  # "H,G": [forward, backward] seconds of one per-step GEMM at gemm_rows
        "32,1": [[9.69e-08, 1.04e-07, 2.89e-07, 4.4e-07, 7.05e-07, 1.3e-06, 2.87e-06, 4.9e-06],
                [1.95e-07, 1.95e-07, 3.11e-07, 3.54e-07, 7.6e-07, 1.21e-06, 1.3e-06, 5.27e-06]],
        "32,3": [[3.38e-07, 3.45e-07, 5.15e-07, 5.94e-07, 1.04e-06, 3.88e-06, 8.59e-06, 1.84e-05],
                [4.15e-07, 4.15e-07, 4.15e-07, 5.15e-07, 1.65e-06, 3.66e-06, 7.76e-06, 1.18e-05]],
        "32,4": [[1.9e-07, 4.12e-07, 6.14e-07, 1.2e-06, 2.66e-06, 5.19e-06, 7.15e-06, 1.01e-05],
                [4.69e-07, 4.69e-07, 4.69e-07, 6.96e-07, 1.3e-06, 3.52e-06, 1.02e-05, 1.48e-05]],
        "64,1": [[4.69e-07, 4.69e-07, 4.69e-07, 2.85e-06, 3.55e-06, 5.86e-06, 1.27e-05, 2.38e-05],
                [2.48e-07, 2.49e-07, 7.37e-07, 1.57e-06, 3.41e-06, 5.6e-06, 7.38e-06, 2.4e-05]],
        "64,3": [[1.34e-06, 1.63e-06, 2.9e-06, 4.56e-06, 6.26e-06, 1.29e-05, 1.88e-05, 4.81e-05],
                [1.82e-06, 1.82e-06, 2.06e-06, 3.73e-06, 6.99e-06, 7.06e-06, 2.26e-05, 5.28e-05]],
        "64,4": [[1.11e-06, 1.55e-06, 2.06e-06, 4.25e-06, 9.83e-06, 1.69e-05, 4.75e-05, 8.92e-05],
                [1.73e-06, 1.73e-06, 1.73e-06, 4.86e-06, 7.81e-06, 2.02e-05, 5.22e-05, 7.73e-05]],
        "128,1": [[1.25e-06, 1.3e-06, 1.87e-06, 3.94e-06, 5.04e-06, 2e-05, 5.69e-05, 7.02e-05],
                 [1.18e-06, 1.7e-06, 2.12e-06, 4.38e-06, 4.75e-06, 1.49e-05, 4.58e-05, 7.18e-05]],
        "128,3": [[3.25e-06, 5.42e-06, 1.05e-05, 1.36e-05, 4.41e-05, 0.000112, 0.000154, 0.000257],
                 [3.29e-06, 4.15e-06, 1.36e-05, 1.98e-05, 4.97e-05, 9.21e-05, 0.000163, 0.000247]],
        "128,4": [[4.82e-06, 6.83e-06, 1.03e-05, 1.96e-05, 8.46e-05, 0.000141, 0.000241, 0.000406],
                 [6.28e-06, 6.96e-06, 1e-05, 1.92e-05, 8.63e-05, 0.000142, 0.000212, 0.000387]],
        "256,1": [[4.94e-06, 5.35e-06, 9.79e-06, 1.53e-05, 8.28e-05, 0.000137, 0.000208, 0.000372],
                 [5.12e-06, 5.43e-06, 8.55e-06, 1.87e-05, 4.35e-05, 8.87e-05, 0.000219, 0.000265]],
        "256,3": [[1.64e-05, 3.59e-05, 3.59e-05, 0.000192, 0.00025, 0.00025, 0.000334, 0.000867],
                 [1.92e-05, 2.56e-05, 2.56e-05, 0.000205, 0.000248, 0.000381, 0.000515, 0.000775]],
        "256,4": [[2.67e-05, 5.27e-05, 0.000209, 0.000261, 0.000295, 0.000507, 0.000809, 0.00164],
                 [2.14e-05, 2.14e-05, 0.000101, 0.000186, 0.000342, 0.000523, 0.000892, 0.00163]],
        "512,1": [[2.79e-05, 2.79e-05, 0.000212, 0.000308, 0.000308, 0.000582, 0.00086, 0.00086],
                 [3.11e-05, 3.27e-05, 0.000258, 0.000328, 0.000349, 0.000517, 0.000865, 0.00122]],
        "512,3": [[0.000144, 0.000729, 0.000729, 0.000729, 0.00132, 0.00146, 0.00297, 0.00463],
                 [0.000106, 0.000325, 0.00042, 0.000741, 0.00147, 0.00219, 0.00304, 0.00555]],
        "512,4": [[0.000129, 0.00104, 0.0015, 0.00204, 0.00257, 0.00292, 0.00514, 0.00915],
                 [0.000128, 0.00109, 0.00205, 0.00256, 0.00313, 0.00313, 0.00437, 0.0117]],
    },
    chunk_flops_per_s={
        "32,1": 4.28e+10,
        "32,3": 2.38e+10,
        "32,4": 2.99e+10,
        "64,1": 2.79e+10,
        "64,3": 3.9e+10,
        "64,4": 3.45e+10,
        "128,1": 4.28e+10,
        "128,3": 3.34e+10,
        "128,4": 8.44e+10,
        "256,1": 1.62e+10,
        "256,3": 5.58e+10,
        "256,4": 4.45e+10,
        "512,1": 4.25e+10,
        "512,3": 3.79e+10,
        "512,4": 4.17e+10,
    },
    elementwise={  # cell: (fixed, per_unit) seconds per step
        "rnn": (0, 0),
        "gru": (0, 1.25e-08),
        "lstm": (0, 1.88e-08),
    },
    shard_overhead_s=5.91e-05,
    combine_s_per_param=1.14e-10,
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
    per_unit. shard_overhead_s: serial cost of one more shard per update and layer.
    combine_s_per_param: serial cost of adding one shard's gradient, per parameter.
    An H between the measured ones is interpolated log-log; above them, GEMM times
    scale with H ** 2; below them, and for rates, the nearest H's figures are used."""

    gemm_rows: list
    gemm: dict
    chunk_flops_per_s: dict
    elementwise: dict
    shard_overhead_s: float
    combine_s_per_param: float

    def shard_step_seconds(self, cell, input_size, hidden_size, rows, num_layers, steps,
                           elementwise=True):
        """Seconds per step of one shard of `rows` streams over chunks of `steps` steps."""
        G, H = GATES[cell], hidden_size
        forward, backward = (self._by_hidden(H, G, lambda key: self._gemm_at(key, kind, rows), 2)
                             for kind in (0, 1))
        chunk_rate = self._by_hidden(H, G, self.chunk_flops_per_s.__getitem__, 0)
        seconds = self.shard_overhead_s * num_layers / steps
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
        serial = (shards - 1) * (self.shard_overhead_s * num_layers + parameters * self.combine_s_per_param)
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
