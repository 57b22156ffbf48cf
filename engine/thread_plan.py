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
machine two shards of 4-64 streams ran up to 1.3x slower than one alone, and up to 2.2x
at one stream each). So each plan's
single-thread model is corrected by a ratio measured with two threads, per cell and H,
against M (the engine's own passes): shards_ratio, two shards run side by side over
the model's two shards, multiplies the parallel part of any plan of >= 2 shards; a
hidden-block plan of n threads is shard_step(B) * split_ratio * 2 / n, split_ratio
being two threads sharing each step of M streams over one thread's model, barriers
included. Beyond two threads both ratios are assumed to stay as measured with two (not
measurable on 2 cores), and a hidden block keeps at least MIN_BLOCK units (narrower
GEMMs lose their rate); hidden-block times are further multiplied by SPLIT_CALIBRATION,
and hidden blocks are left out where one thread's step is shorter than MIN_SPLIT_STEP_S
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
# Hidden-block times are modelled this much longer than the measured split_ratio says, so
# that a near tie goes to shards (whose kernels compile 5-10 s faster on first use): a split
# must be modelled 2% faster. On 2026-12-02 (quiet) the Trainer's step measured, against
# the model, 0.86-1.06 times the modelled split/shards ratio (geometric mean 0.98), and the
# two plans 2-13% apart on the standard configurations (python -m bench.plans --measure).
SPLIT_CALIBRATION = 1.02
# Hidden blocks are considered only where one thread's modelled step of the whole batch
# takes at least this long: below it a split saves microseconds per step (the quick
# start's 8-stream, 64-unit demo: 2.3 of 25 us), less over a short run than its kernels
# cost to compile on first use (about 9 s for an LSTM in float32).
MIN_SPLIT_STEP_S = 1e-4

# BEGIN MEASURED (python -m bench.gemm_rate --module)
MEASURED_ON = '2026-12-02 14:43 UTC, AMD EPYC, 2 cores, load average 1.16, python -m bench.gemm_rate'
MEASURED = dict(
    gemm_rows=[1, 2, 4, 8, 16, 32, 64, 128],
    gemm={  # "H,G": [forward, backward] seconds of one per-step GEMM at gemm_rows
        "32,1": [[9.55e-08, 5.16e-07, 5.17e-07, 6.17e-07, 7.72e-07, 1.11e-06, 1.77e-06, 3.16e-06],
                [9.61e-08, 5.45e-07, 5.45e-07, 6.12e-07, 7.72e-07, 1.11e-06, 1.81e-06, 3.16e-06]],
        "32,3": [[1.71e-07, 1.3e-06, 1.3e-06, 1.57e-06, 2e-06, 2.99e-06, 4.75e-06, 8.71e-06],
                [1.84e-07, 1.45e-06, 1.45e-06, 1.58e-06, 2.05e-06, 2.99e-06, 4.91e-06, 8.84e-06]],
        "32,4": [[1.59e-07, 1.66e-06, 1.7e-06, 2.03e-06, 2.6e-06, 3.89e-06, 6.31e-06, 1.16e-05],
                [1.82e-07, 1.91e-06, 1.91e-06, 2.08e-06, 2.67e-06, 3.98e-06, 6.49e-06, 1.17e-05]],
        "64,1": [[1.67e-07, 1.76e-06, 1.76e-06, 2.01e-06, 2.69e-06, 4.04e-06, 6.26e-06, 1.13e-05],
                [1.87e-07, 1.77e-06, 1.77e-06, 2.09e-06, 2.76e-06, 3.88e-06, 6.33e-06, 1.15e-05]],
        "64,3": [[3.86e-07, 4.86e-06, 4.86e-06, 5.88e-06, 7.46e-06, 1.11e-05, 1.79e-05, 3.2e-05],
                [4.47e-07, 5.35e-06, 5.35e-06, 5.91e-06, 7.45e-06, 1.12e-05, 1.82e-05, 3.23e-05]],
        "64,4": [[5.67e-07, 6.39e-06, 6.39e-06, 7.57e-06, 9.82e-06, 1.47e-05, 2.37e-05, 4.31e-05],
                [6.2e-07, 6.94e-06, 6.94e-06, 7.8e-06, 9.94e-06, 1.49e-05, 2.4e-05, 4.32e-05]],
        "128,1": [[6.05e-07, 6.83e-06, 6.83e-06, 7.61e-06, 9.76e-06, 1.46e-05, 2.36e-05, 4.26e-05],
                 [6.22e-07, 6.87e-06, 6.87e-06, 7.61e-06, 9.8e-06, 1.45e-05, 2.37e-05, 4.3e-05]],
        "128,3": [[1.92e-06, 2.05e-05, 2.05e-05, 2.27e-05, 2.89e-05, 4.3e-05, 6.92e-05, 0.000124],
                 [1.76e-06, 2.09e-05, 2.09e-05, 2.32e-05, 2.89e-05, 4.32e-05, 7e-05, 0.000126]],
        "128,4": [[2.3e-06, 2.69e-05, 2.69e-05, 3.05e-05, 3.93e-05, 5.77e-05, 9.32e-05, 0.000169],
                 [2.32e-06, 2.85e-05, 2.85e-05, 3.1e-05, 3.98e-05, 5.85e-05, 0.000102, 0.00017]],
        "256,1": [[2.31e-06, 2.77e-05, 2.77e-05, 3e-05, 3.9e-05, 5.8e-05, 9.36e-05, 0.000174],
                 [2.32e-06, 2.74e-05, 2.74e-05, 3.02e-05, 3.9e-05, 5.8e-05, 9.36e-05, 0.000175]],
        "256,3": [[7e-06, 8.58e-05, 8.58e-05, 9.46e-05, 0.000119, 0.000176, 0.000282, 0.000508],
                 [6.91e-06, 9.01e-05, 9.01e-05, 9.48e-05, 0.000119, 0.000177, 0.000283, 0.000508]],
        "256,4": [[1.01e-05, 0.000114, 0.000114, 0.000123, 0.00016, 0.000236, 0.000375, 0.000668],
                 [1.01e-05, 0.000113, 0.000113, 0.000124, 0.000162, 0.000242, 0.000375, 0.000683]],
        "512,1": [[1.01e-05, 0.000113, 0.000113, 0.000123, 0.000156, 0.00023, 0.000379, 0.00069],
                 [1.01e-05, 0.000114, 0.000114, 0.000121, 0.000157, 0.000229, 0.000378, 0.000671]],
        "512,3": [[4.08e-05, 0.000338, 0.000338, 0.000356, 0.000463, 0.000687, 0.00112, 0.00198],
                 [3.8e-05, 0.000343, 0.000343, 0.000362, 0.00047, 0.000691, 0.00111, 0.00202]],
        "512,4": [[4.85e-05, 0.000452, 0.000452, 0.000486, 0.000631, 0.000926, 0.0015, 0.00266],
                 [4.14e-05, 0.00045, 0.00045, 0.000489, 0.000626, 0.000933, 0.00151, 0.00268]],
    },
    chunk_flops_per_s={
        "32,1": 6.74e+10,
        "32,3": 8.93e+10,
        "32,4": 8.77e+10,
        "64,1": 8.74e+10,
        "64,3": 1.02e+11,
        "64,4": 1.04e+11,
        "128,1": 9.91e+10,
        "128,3": 1.09e+11,
        "128,4": 1.1e+11,
        "256,1": 1.1e+11,
        "256,3": 1.14e+11,
        "256,4": 1.14e+11,
        "512,1": 1.12e+11,
        "512,3": 1.11e+11,
        "512,4": 1.1e+11,
    },
    elementwise={  # cell: (fixed, per_unit) seconds per step
        "rnn": (2.03e-07, 1.41e-09),
        "gru": (2.57e-07, 5.15e-09),
        "lstm": (3.8e-07, 7.96e-09),
    },
    pass_python_s=1.06e-05,
    handoff_s=5.89e-05,
    combine_s_per_param=2.2e-10,
    concurrent_rows=[1, 4, 16, 64],
    shards_ratio={  # "cell,H": two shards of M side by side / the model's two, at concurrent_rows
        "gru,32": [1.08, 1.04, 1.3, 1.2],
        "gru,64": [1.25, 0.983, 1.01, 1.1],
        "gru,128": [1.19, 1.05, 1.05, 1.05],
        "gru,256": [1.29, 0.943, 1.18, 1.09],
        "gru,512": [1.71, 1.05, 1.16, 1.1],
        "lstm,32": [0.995, 1.05, 1.08, 1.07],
        "lstm,64": [1.1, 1.05, 1.18, 1.04],
        "lstm,128": [1.2, 0.965, 1, 1.12],
        "lstm,256": [1.55, 0.99, 1.06, 1.09],
        "lstm,512": [2.17, 1.07, 1.19, 1.07],
        "rnn,32": [1.13, 1.3, 1.37, 1.13],
        "rnn,64": [1.15, 1.02, 1.02, 1.07],
        "rnn,128": [1.05, 0.998, 1.08, 1.08],
        "rnn,256": [1.22, 0.977, 1.05, 1.07],
        "rnn,512": [1.47, 1.04, 1.09, 1.06],
    },
    split_ratio={  # "cell,H": M streams split on two threads / the model's one thread, at concurrent_rows
        "gru,64": [2.58, 0.904, 0.887, 0.802],
        "gru,128": [2.59, 0.865, 0.906, 0.892],
        "gru,256": [1.97, 0.672, 0.677, 0.676],
        "gru,512": [1.29, 0.611, 0.635, 0.578],
        "lstm,64": [2.64, 0.845, 0.792, 0.679],
        "lstm,128": [1.21, 0.568, 0.68, 0.633],
        "lstm,256": [0.939, 0.548, 0.602, 0.607],
        "lstm,512": [1.29, 0.572, 0.602, 0.572],
        "rnn,64": [4.19, 1.41, 1.17, 0.968],
        "rnn,128": [2.15, 0.758, 0.755, 0.691],
        "rnn,256": [1.33, 0.577, 0.602, 0.608],
        "rnn,512": [1.06, 0.531, 0.579, 0.589],
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
    if times[1, 1] >= MIN_SPLIT_STEP_S:
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
