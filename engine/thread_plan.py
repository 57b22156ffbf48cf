"""The thread plan: how a chunk's work is spread over the cores, chosen per shape and core
count from a cost model measured on this machine. Two kinds of plan:

- batch shards (engine/shards.py): the B streams split into `shards` shards, each run
  whole (every step, every layer) by one thread;
- hidden blocks (engine/split.py): one shard of all B streams whose every step is shared
  by `split` threads, each owning H / split hidden units; they meet once per step.

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

Threads side by side slow each other (shared caches and memory bandwidth; on this
machine two shards of 32 streams ran 1.2-1.4x slower than one alone). So each plan's
single-thread model is corrected by a ratio measured with two threads, per cell and H,
against M (the engine's own passes): shards_ratio, two shards run side by side over
the model's two shards, multiplies the parallel part of any plan of >= 2 shards; a
hidden-block plan of n threads is shard_step(B) * split_ratio * 2 / n, split_ratio
being two threads sharing each step of M streams over one thread's model, barriers
included. Beyond two threads both ratios are assumed to stay as measured with two (not
measurable on 2 cores), and a hidden block keeps at least MIN_BLOCK units (narrower
GEMMs lose their rate); hidden-block times are further multiplied by SPLIT_CALIBRATION
(see there). Shards and hidden blocks are not combined.

The constants (MEASURED) are timings from `python -m bench.gemm_rate --module`, which
prints this block. The model ignores what a 2-core machine cannot show:
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
MIN_BLOCK = 32      # hidden units per thread, at least, in a hidden-block plan
# Hidden-block times are modelled this much longer than measured split_ratio says:
# against the shards, the uncorrected model overrated them by 1.15-1.6x on medium, deep
# and gru-medium (python -m bench.plans --measure), and their kernels cost 2-8 s each to
# compile on first use; so a split must promise more than that to be chosen.
SPLIT_CALIBRATION = 1.15

# BEGIN MEASURED (python -m bench.gemm_rate --module)
MEASURED_ON = '2026-12-01 23:41 UTC, AMD EPYC, 2 cores, load average 1.21, python -m bench.gemm_rate'
MEASURED = dict(
    gemm_rows=[1, 2, 4, 8, 16, 32, 64, 128],
    gemm={  # "H,G": [forward, backward] seconds of one per-step GEMM at gemm_rows
        "32,1": [[1.92e-07, 1.18e-06, 1.18e-06, 1.4e-06, 1.4e-06, 1.79e-06, 2.71e-06, 4.71e-06],
                [1.85e-07, 1.18e-06, 1.18e-06, 1.35e-06, 1.35e-06, 1.8e-06, 2.74e-06, 4.69e-06]],
        "32,3": [[2.2e-07, 2.43e-06, 2.43e-06, 3.71e-06, 4.74e-06, 6.74e-06, 1.06e-05, 1.81e-05],
                [2.62e-07, 2.88e-06, 2.88e-06, 3.64e-06, 4.64e-06, 6.62e-06, 9.88e-06, 1.73e-05]],
        "32,4": [[3.7e-07, 4.28e-06, 4.28e-06, 4.54e-06, 5.65e-06, 8.76e-06, 1.31e-05, 2.19e-05],
                [4.53e-07, 4.41e-06, 4.41e-06, 4.41e-06, 5.83e-06, 8.55e-06, 1.29e-05, 2.02e-05]],
        "64,1": [[3.69e-07, 4.05e-06, 4.05e-06, 4.22e-06, 5.61e-06, 7.52e-06, 1.14e-05, 2.04e-05],
                [3.46e-07, 4e-06, 4e-06, 4.61e-06, 5.07e-06, 7.53e-06, 1.13e-05, 2.06e-05]],
        "64,3": [[8.85e-07, 1.09e-05, 1.09e-05, 1.21e-05, 1.47e-05, 2.12e-05, 3.17e-05, 6.23e-05],
                [1.03e-06, 1.1e-05, 1.1e-05, 1.19e-05, 1.52e-05, 2.07e-05, 3.11e-05, 5.46e-05]],
        "64,4": [[1.19e-06, 1.48e-05, 1.48e-05, 1.69e-05, 2.06e-05, 2.87e-05, 4.34e-05, 7.7e-05],
                [1.39e-06, 1.57e-05, 1.57e-05, 1.7e-05, 2.04e-05, 2.97e-05, 4.26e-05, 7.58e-05]],
        "128,1": [[1.23e-06, 1.57e-05, 1.57e-05, 1.67e-05, 2.04e-05, 2.85e-05, 4.25e-05, 7.25e-05],
                 [1.3e-06, 1.63e-05, 1.63e-05, 1.68e-05, 2.01e-05, 2.72e-05, 4.2e-05, 7.41e-05]],
        "128,3": [[3.36e-06, 4.68e-05, 4.68e-05, 5.04e-05, 5.61e-05, 8.07e-05, 0.000121, 0.000218],
                 [3.8e-06, 3.98e-05, 4.27e-05, 4.27e-05, 5.9e-05, 8.45e-05, 0.000127, 0.000207]],
        "128,4": [[4.42e-06, 6.15e-05, 7.22e-05, 8.66e-05, 0.0001, 0.0001, 0.000175, 0.000304],
                 [4.79e-06, 7.1e-05, 7.3e-05, 8.73e-05, 8.73e-05, 9.96e-05, 0.000176, 0.00027]],
        "256,1": [[4.6e-06, 6.28e-05, 6.28e-05, 6.28e-05, 7.51e-05, 9.82e-05, 0.00016, 0.000264],
                 [4.86e-06, 6.08e-05, 6.08e-05, 6.08e-05, 7.66e-05, 0.000112, 0.000165, 0.000269]],
        "256,3": [[1.75e-05, 0.000171, 0.000171, 0.000183, 0.000209, 0.000332, 0.000481, 0.000871],
                 [1.74e-05, 0.000168, 0.000168, 0.000183, 0.00023, 0.000318, 0.000543, 0.000885]],
        "256,4": [[2.84e-05, 0.000276, 0.000276, 0.000294, 0.000311, 0.000512, 0.000719, 0.00124],
                 [2.56e-05, 0.000272, 0.000272, 0.000287, 0.000361, 0.000482, 0.000721, 0.00126]],
        "512,1": [[2.54e-05, 0.00026, 0.00026, 0.000288, 0.000318, 0.000464, 0.00056, 0.000968],
                 [2.2e-05, 0.000272, 0.000272, 0.000272, 0.000346, 0.000499, 0.000558, 0.000935]],
        "512,3": [[6.08e-05, 0.000612, 0.00064, 0.000825, 0.000924, 0.00137, 0.00166, 0.00289],
                 [6.37e-05, 0.000621, 0.000621, 0.000832, 0.000927, 0.00148, 0.00192, 0.00294]],
        "512,4": [[8.25e-05, 0.000967, 0.000967, 0.00113, 0.00127, 0.00185, 0.0027, 0.00391],
                 [8.22e-05, 0.000972, 0.000972, 0.00112, 0.00132, 0.00181, 0.00214, 0.00392]],
    },
    chunk_flops_per_s={
        "32,1": 4.19e+10,
        "32,3": 5.06e+10,
        "32,4": 5.32e+10,
        "64,1": 4.84e+10,
        "64,3": 6.8e+10,
        "64,4": 6.61e+10,
        "128,1": 6.16e+10,
        "128,3": 7.72e+10,
        "128,4": 7.8e+10,
        "256,1": 7.8e+10,
        "256,3": 7.86e+10,
        "256,4": 8.07e+10,
        "512,1": 8.21e+10,
        "512,3": 7.09e+10,
        "512,4": 7.15e+10,
    },
    elementwise={  # cell: (fixed, per_unit) seconds per step
        "rnn": (4.13e-07, 2.38e-09),
        "gru": (0, 1.14e-08),
        "lstm": (0, 3.62e-08),
    },
    pass_python_s=3.27e-05,
    handoff_s=4.42e-05,
    combine_s_per_param=7.33e-10,
    concurrent_rows=[1, 4, 16, 64],
    shards_ratio={  # "cell,H": two shards of M side by side / the model's two, at concurrent_rows
        "gru,32": [1.42, 1.37, 1.34, 1.25],
        "gru,64": [1.64, 1.22, 1.16, 1.36],
        "gru,128": [1.43, 1.11, 1.22, 1.37],
        "gru,256": [1.15, 1.09, 1.24, 1.45],
        "gru,512": [1.89, 1.21, 1.2, 1.3],
        "lstm,32": [1.81, 1.36, 1.17, 0.933],
        "lstm,64": [1.09, 0.935, 0.973, 1.11],
        "lstm,128": [1.08, 0.963, 1.1, 1.26],
        "lstm,256": [1.09, 0.962, 1.07, 1.13],
        "lstm,512": [2.02, 1.09, 1.13, 1.29],
        "rnn,32": [1.46, 1.29, 1.73, 1.82],
        "rnn,64": [0.926, 0.976, 1.18, 1.59],
        "rnn,128": [1.51, 1.44, 1.57, 1.64],
        "rnn,256": [1.63, 1.47, 1.64, 1.47],
        "rnn,512": [1.41, 0.974, 1.12, 1.36],
    },
    split_ratio={  # "cell,H": M streams split on two threads / the model's one thread, at concurrent_rows
        "gru,64": [3.44, 1.12, 0.824, 0.713],
        "gru,128": [1.86, 0.567, 0.562, 0.626],
        "gru,256": [0.856, 0.64, 0.555, 0.583],
        "gru,512": [1.21, 0.581, 0.502, 0.635],
        "lstm,64": [2.32, 0.704, 0.573, 0.595],
        "lstm,128": [1.37, 0.528, 0.506, 0.557],
        "lstm,256": [0.793, 0.515, 0.548, 0.523],
        "lstm,512": [1.27, 0.573, 0.552, 0.567],
        "rnn,64": [6.68, 1.93, 1.65, 1.37],
        "rnn,128": [3.52, 1.1, 1.24, 1.2],
        "rnn,256": [1.82, 0.828, 0.94, 1.07],
        "rnn,512": [1.35, 0.625, 0.692, 0.744],
    },
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
    per parameter. concurrent_rows, shards_ratio, split_ratio: what two threads on one
    chunk cost against the single-thread model, "cell,H" -> ratio at each of
    concurrent_rows: two shards of M streams each, measured, over the model's two shards
    (shared caches and memory); a hidden-block pass of M streams on two threads over the
    model's one thread.
    An H between the measured ones is interpolated log-log; above them, GEMM times
    scale with H ** 2; below them, and for rates, the nearest H's figures are used."""

    gemm_rows: list
    gemm: dict
    chunk_flops_per_s: dict
    elementwise: dict
    pass_python_s: float
    handoff_s: float
    combine_s_per_param: float
    concurrent_rows: list
    shards_ratio: dict
    split_ratio: dict

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
        if shards > 1:  # shards side by side share caches and memory: as measured for two
            parallel *= self._measured_ratio(self.shards_ratio, cell, hidden_size, rows)
        parameters = _parameter_count(cell, input_size, hidden_size, output_size, num_layers)
        serial = (shards - 1) * (self.handoff_s + self.pass_python_s * num_layers
                                 + parameters * self.combine_s_per_param)
        return parallel + serial / steps

    def split_step_seconds(self, cell, input_size, hidden_size, batch, num_layers, steps, threads):
        """Modelled seconds per step of one shard of `batch` streams whose hidden units are
        split among `threads` threads."""
        whole = self.shard_step_seconds(cell, input_size, hidden_size, batch, num_layers, steps)
        ratio = self._measured_ratio(self.split_ratio, cell, hidden_size, batch)
        return whole * ratio * 2 / threads * SPLIT_CALIBRATION

    def _measured_ratio(self, table, cell, hidden_size, rows):
        """table["cell,H"] at `rows` (linear between concurrent_rows), the nearest H's; 1
        (the single-thread model as it is) for a table without this cell."""
        measured = [int(key.split(",")[1]) for key in table if key.startswith(cell + ",")]
        if not measured:
            return 1.0
        nearest = min(measured, key=lambda H: abs(math.log(H / hidden_size)))
        return float(np.interp(rows, self.concurrent_rows, table[f"{cell},{nearest}"]))

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


def split_counts(hidden_size, cores):
    """Thread counts a hidden-block plan may use: 2..cores dividing H, MIN_BLOCK units each."""
    return [n for n in range(2, cores + 1) if hidden_size % n == 0 and hidden_size // n >= MIN_BLOCK]


def choose_plan(cell, input_size, hidden_size, batch, num_layers=1, cores=None,
                steps=DEFAULT_STEPS, output_size=1, model=None, max_split=None):
    """The plan for chunks of `steps` steps of `batch` streams: a JSON-able dict with
    "shards" (1 <= shards <= min(batch, cores)), "split" (threads sharing each step by
    hidden blocks; 1 = none, and then shards may be > 1), "rows_per_shard" (the largest
    shard), "cores", "modelled_step_s" and "modelled_speedup" (against one thread).
    max_split: the most threads a hidden-block plan may use (default: cores)."""
    model = model or COST_MODEL
    cores = available_cores() if cores is None else cores
    max_split = cores if max_split is None else min(max_split, cores)
    times = {(shards, 1): model.step_seconds(cell, input_size, hidden_size, batch, num_layers, steps,
                                             shards, output_size)
             for shards in range(1, max(1, min(batch, cores)) + 1)}
    times.update({(1, n): model.split_step_seconds(cell, input_size, hidden_size, batch, num_layers, steps, n)
                  for n in split_counts(hidden_size, max_split)})
    best = min(times, key=lambda plan: (times[plan], plan[0] * plan[1], plan[1]))  # ties: fewer threads
    shards, split = best
    return {"shards": shards, "split": split, "rows_per_shard": max(shard_rows(batch, shards)),
            "cores": cores, "batch": batch, "steps": steps, "chosen_by": "model",
            "modelled_step_s": times[best], "modelled_speedup": times[1, 1] / times[best],
            "measured_on": MEASURED_ON}


def plan_for(model, steps, batch, shards=None, cores=None, split=None):
    """The plan of a Trainer's chunk: `shards` or `split` when given (an explicit choice;
    shards are capped at the batch), else the modelled best for `model` (an engine.Model)
    on this machine, with hidden blocks only where engine/split.py can run them."""
    from engine.split import max_split_threads

    if shards is not None or split is not None:
        shards = 1 if shards is None else min(shards, batch)
        return {"shards": shards, "split": 1 if split is None else split,
                "rows_per_shard": max(shard_rows(batch, shards)),
                "cores": available_cores() if cores is None else cores, "batch": batch,
                "steps": steps, "chosen_by": "explicit"}
    return choose_plan(model.cell, model.input_size, model.hidden_size, batch, model.num_layers,
                       cores, steps, model.output_size, max_split=max_split_threads())
