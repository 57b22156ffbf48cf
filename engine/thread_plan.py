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
machine two shards of 4-64 streams ran up to 1.2x slower than one alone, and up to 1.7x
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

The constants are timings from `python -m bench.gemm_rate --module`, which prints them
for the BLAS the kernels call (engine/blas.py) on the CPU at hand: MEASURED for SciPy's
OpenBLAS (fitted on an AMD EPYC), BACKEND_MEASURED for MKL and for OpenBLAS on an Intel
CPU (both fitted on an Intel Xeon); the process's backend and CPU vendor pick the model
(model_key). Each is fitted whole, the two-thread ratios included: scaling OpenBLAS's
fit by MKL's single-call GEMM times left the rest of the model on OpenBLAS's scale and
got deep's two shards 40% wrong on MKL (modelled 0.267 ms a step, measured 0.191; fitted
on MKL, 0.174). The model ignores what a 2-core machine cannot show:
memory and cache bandwidth shared by many cores, SMT siblings counted as cores, NUMA.
What it chooses for the standard configurations on 2, 16 and 64 cores: `python -m
bench.plans` (the table in README.md, Performance). Where the model sees a near tie, or
the machine is busy, the Trainer times the candidates instead (engine/plan_probe.py).
"""
import math
import os
from dataclasses import dataclass

import numpy as np

from engine.blas import backend
from kernels.blas import is_intel_cpu
from engine.parameters import GATES

DEFAULT_STEPS = 50  # T assumed when the chunk length is not known
MIN_BLOCK = 32      # hidden units per thread, at least, in a hidden-block plan
# Hidden-block times are modelled this much longer than the measured split_ratio says, so
# that a near tie goes to shards: a split must be modelled 2% faster. Shards compile about
# 3 s faster on first use (an LSTM in float32) and suffer less on a busy machine (a split's threads meet every step,
# so one preempted thread stalls both: rnn-medium's split measured 0.200-0.271 ms per step
# in four runs where two shards measured 0.195-0.226). On 2026-12-02 (quiet) the Trainer's
# step measured 0.97-1.10 times the modelled split/shards ratio on the standard
# configurations (python -m bench.plans --measure and back-to-back rounds).
SPLIT_CALIBRATION = 1.02
# Hidden blocks are considered only where one thread's modelled step of the whole batch
# takes at least this long: below it a split saves microseconds per step (the quick
# start's 8-stream, 64-unit demo: 2.3 of 25 us), less over a short run than its kernels
# cost to compile on first use (about 3 s for an LSTM in float32: 9.1 s for the first
# update with split=2 from an empty cache, 6.2 s with one shard).
MIN_SPLIT_STEP_S = 1e-4

# BEGIN MEASURED (python -m bench.gemm_rate --module)
MEASURED_ON = '2026-12-02 15:36 UTC, AMD EPYC, 2 cores, load average 1.68, python -m bench.gemm_rate'
MEASURED = dict(
    gemm_rows=[1, 2, 4, 8, 16, 32, 64, 128],
    gemm={  # "H,G": [forward, backward] seconds of one per-step GEMM at gemm_rows
        "32,1": [[9.17e-08, 5.01e-07, 5.01e-07, 5.97e-07, 7.39e-07, 1.09e-06, 1.73e-06, 3.01e-06],
                [9.38e-08, 4.98e-07, 4.98e-07, 5.81e-07, 7.56e-07, 1.09e-06, 1.75e-06, 3.08e-06]],
        "32,3": [[1.4e-07, 1.26e-06, 1.28e-06, 1.54e-06, 1.99e-06, 2.96e-06, 4.8e-06, 8.42e-06],
                [1.54e-07, 1.39e-06, 1.39e-06, 1.59e-06, 2.03e-06, 3.05e-06, 4.81e-06, 8.71e-06]],
        "32,4": [[1.54e-07, 1.62e-06, 1.65e-06, 2.03e-06, 2.6e-06, 3.76e-06, 6.16e-06, 1.1e-05],
                [1.81e-07, 1.85e-06, 1.85e-06, 2.05e-06, 2.63e-06, 3.91e-06, 6.4e-06, 1.12e-05]],
        "64,1": [[1.61e-07, 1.68e-06, 1.68e-06, 2.02e-06, 2.54e-06, 3.76e-06, 6.31e-06, 1.11e-05],
                [1.67e-07, 1.69e-06, 1.69e-06, 2.01e-06, 2.53e-06, 3.83e-06, 6.26e-06, 1.1e-05]],
        "64,3": [[4.7e-07, 4.72e-06, 4.72e-06, 5.72e-06, 7.17e-06, 1.09e-05, 1.76e-05, 3.12e-05],
                [5.19e-07, 5.21e-06, 5.21e-06, 5.7e-06, 7.41e-06, 1.1e-05, 1.77e-05, 3.14e-05]],
        "64,4": [[6.7e-07, 6.3e-06, 6.3e-06, 7.52e-06, 9.78e-06, 1.45e-05, 2.32e-05, 4.19e-05],
                [7.33e-07, 7.02e-06, 7.02e-06, 7.68e-06, 9.96e-06, 1.45e-05, 2.37e-05, 4.24e-05]],
        "128,1": [[6.9e-07, 6.7e-06, 6.7e-06, 7.63e-06, 9.49e-06, 1.43e-05, 2.37e-05, 4.23e-05],
                 [6.94e-07, 6.65e-06, 6.65e-06, 7.47e-06, 9.54e-06, 1.44e-05, 2.35e-05, 4.19e-05]],
        "128,3": [[1.86e-06, 2.02e-05, 2.02e-05, 2.2e-05, 2.89e-05, 4.25e-05, 6.74e-05, 0.000123],
                 [1.98e-06, 2.08e-05, 2.08e-05, 2.28e-05, 2.91e-05, 4.21e-05, 6.97e-05, 0.000124]],
        "128,4": [[2.42e-06, 2.61e-05, 2.61e-05, 2.91e-05, 3.79e-05, 5.57e-05, 9.2e-05, 0.000163],
                 [2.6e-06, 2.76e-05, 2.76e-05, 2.94e-05, 3.78e-05, 5.7e-05, 9.16e-05, 0.000165]],
        "256,1": [[2.65e-06, 2.77e-05, 2.77e-05, 3.03e-05, 3.83e-05, 5.78e-05, 9.37e-05, 0.000168],
                 [2.6e-06, 2.74e-05, 2.74e-05, 3.02e-05, 3.85e-05, 5.71e-05, 9.35e-05, 0.000165]],
        "256,3": [[7.75e-06, 8.36e-05, 8.36e-05, 9.06e-05, 0.000115, 0.000169, 0.00028, 0.000493],
                 [8.19e-06, 8.29e-05, 8.29e-05, 9.11e-05, 0.000115, 0.00017, 0.000278, 0.000495]],
        "256,4": [[1.09e-05, 0.000111, 0.000111, 0.000119, 0.000155, 0.000226, 0.000376, 0.000666],
                 [1.17e-05, 0.000113, 0.000113, 0.000121, 0.000155, 0.000229, 0.000377, 0.000668]],
        "512,1": [[1.09e-05, 0.000112, 0.000112, 0.00012, 0.000158, 0.00023, 0.000373, 0.000672],
                 [1.08e-05, 0.000112, 0.000112, 0.000123, 0.000157, 0.000231, 0.000376, 0.000659]],
        "512,3": [[3.57e-05, 0.000353, 0.000353, 0.000381, 0.000473, 0.00069, 0.00112, 0.00202],
                 [3.7e-05, 0.000353, 0.000353, 0.000366, 0.000476, 0.000686, 0.00114, 0.00203]],
        "512,4": [[5.65e-05, 0.000517, 0.000517, 0.000517, 0.000631, 0.000944, 0.00149, 0.00266],
                 [5.59e-05, 0.000468, 0.000468, 0.000484, 0.000634, 0.000922, 0.00151, 0.00282]],
    },
    chunk_flops_per_s={
        "32,1": 6.34e+10,
        "32,3": 8.9e+10,
        "32,4": 9.15e+10,
        "64,1": 8.64e+10,
        "64,3": 9.94e+10,
        "64,4": 1.02e+11,
        "128,1": 9.96e+10,
        "128,3": 1.08e+11,
        "128,4": 1.05e+11,
        "256,1": 1.06e+11,
        "256,3": 1.07e+11,
        "256,4": 1.08e+11,
        "512,1": 1.1e+11,
        "512,3": 1.03e+11,
        "512,4": 1.04e+11,
    },
    elementwise={  # cell: (fixed, per_unit) seconds per step
        "rnn": (2.05e-07, 1.46e-09),
        "gru": (3.81e-07, 5.41e-09),
        "lstm": (3.19e-07, 7.57e-09),
    },
    pass_python_s=1.05e-05,
    handoff_s=6.44e-05,
    combine_s_per_param=2.3e-10,
    concurrent_rows=[1, 4, 16, 64],
    shards_ratio={  # "cell,H": two shards of M side by side / the model's two, at concurrent_rows
        "gru,32": [1.09, 1.05, 1.17, 1.07],
        "gru,64": [1.18, 1, 0.982, 1],
        "gru,128": [1.1, 1.02, 1.09, 1.08],
        "gru,256": [1.11, 0.995, 1.12, 1.06],
        "gru,512": [1.65, 0.93, 1.04, 1.03],
        "lstm,32": [0.978, 1.11, 1.05, 1.17],
        "lstm,64": [0.935, 0.986, 0.988, 1.08],
        "lstm,128": [1.07, 1.06, 1.04, 1.13],
        "lstm,256": [1.23, 0.982, 1.05, 1.04],
        "lstm,512": [1.38, 0.937, 1.05, 1.04],
        "rnn,32": [1.19, 1.18, 1.08, 1.02],
        "rnn,64": [1, 1.05, 1.04, 1.05],
        "rnn,128": [1.04, 1, 1.12, 1.03],
        "rnn,256": [1.08, 1.01, 1.09, 1.07],
        "rnn,512": [1.38, 1, 1.08, 1.09],
    },
    split_ratio={  # "cell,H": M streams split on two threads / the model's one thread, at concurrent_rows
        "gru,64": [4.23, 0.853, 0.785, 0.733],
        "gru,128": [1.41, 0.626, 0.69, 0.631],
        "gru,256": [0.906, 0.575, 0.579, 0.583],
        "gru,512": [1.07, 0.507, 0.557, 0.54],
        "lstm,64": [1.76, 0.773, 0.696, 0.667],
        "lstm,128": [1.22, 0.636, 0.598, 0.62],
        "lstm,256": [0.821, 0.524, 0.582, 0.574],
        "lstm,512": [1.19, 0.531, 0.563, 0.553],
        "rnn,64": [3.89, 1.37, 1.14, 0.931],
        "rnn,128": [1.95, 0.754, 0.763, 0.672],
        "rnn,256": [1.29, 0.607, 0.62, 0.593],
        "rnn,512": [0.996, 0.529, 0.583, 0.58],
    },
)
# END MEASURED


# BEGIN BACKEND MEASURED (BPTT_BLAS=NAME python -m bench.gemm_rate --module, on a quiet machine;
# keyed by model_key: the backend, and for OpenBLAS on an Intel CPU "openblas-intel")
BACKEND_MEASURED = {
    'mkl': dict(
        measured_on='2026-12-06 04:16 UTC, Intel(R) Xeon(R) Processor, 2 cores, load average 1.49, mkl 2026.2, python -m bench.gemm_rate',
        gemm_rows=[1, 2, 4, 8, 16, 32, 64, 128],
        gemm={  # "H,G": [forward, backward] seconds of one per-step GEMM at gemm_rows
            "32,1": [[6.09e-08, 1.33e-07, 1.33e-07, 1.6e-07, 2.67e-07, 5.07e-07, 9.07e-07, 1.73e-06],
                    [5.5e-08, 9.46e-08, 1.15e-07, 1.67e-07, 2.69e-07, 5.07e-07, 9.07e-07, 1.75e-06]],
            "32,3": [[1.21e-07, 1.78e-07, 2.53e-07, 3.67e-07, 6.85e-07, 1.26e-06, 2.64e-06, 4.85e-06],
                    [1.43e-07, 1.82e-07, 2.45e-07, 3.73e-07, 6.79e-07, 1.34e-06, 2.59e-06, 5.06e-06]],
            "32,4": [[1.49e-07, 2.21e-07, 3.02e-07, 4.59e-07, 8.99e-07, 1.75e-06, 3.48e-06, 6.33e-06],
                    [1.78e-07, 2.15e-07, 2.94e-07, 4.59e-07, 8.87e-07, 1.57e-06, 3.45e-06, 6.7e-06]],
            "64,1": [[1.58e-07, 2.35e-07, 3.14e-07, 4.87e-07, 8.8e-07, 1.77e-06, 3.16e-06, 6.73e-06],
                    [1.6e-07, 2.35e-07, 3.15e-07, 4.85e-07, 8.94e-07, 1.7e-06, 3.07e-06, 6.56e-06]],
            "64,3": [[2.92e-07, 4.94e-07, 7.37e-07, 1.3e-06, 2.27e-06, 4.48e-06, 8.42e-06, 1.73e-05],
                    [3.76e-07, 6.01e-07, 7.92e-07, 1.23e-06, 2.3e-06, 4.59e-06, 1.01e-05, 1.79e-05]],
            "64,4": [[6.8e-07, 9.27e-07, 1.18e-06, 1.74e-06, 3.47e-06, 6.73e-06, 1.31e-05, 2.71e-05],
                    [7.39e-07, 9.45e-07, 1.23e-06, 1.78e-06, 3.45e-06, 6.71e-06, 1.39e-05, 2.65e-05]],
            "128,1": [[8.91e-07, 8.96e-07, 1.16e-06, 1.72e-06, 3.44e-06, 6.53e-06, 1.28e-05, 2.69e-05],
                     [9.11e-07, 9.11e-07, 1.16e-06, 1.73e-06, 3.37e-06, 6.53e-06, 1.26e-05, 2.6e-05]],
            "128,3": [[1.88e-06, 2.56e-06, 3.28e-06, 4.76e-06, 9.45e-06, 1.9e-05, 3.8e-05, 7.41e-05],
                     [2.68e-06, 2.68e-06, 3.28e-06, 4.66e-06, 9.43e-06, 1.88e-05, 3.75e-05, 7.32e-05]],
            "128,4": [[2.56e-06, 3.38e-06, 4.31e-06, 6.47e-06, 1.26e-05, 2.51e-05, 5.09e-05, 0.000102],
                     [3.57e-06, 3.57e-06, 4.45e-06, 6.51e-06, 1.33e-05, 2.6e-05, 5.02e-05, 9.76e-05]],
            "256,1": [[2.56e-06, 3.64e-06, 4.53e-06, 6.61e-06, 1.32e-05, 2.59e-05, 5.11e-05, 0.000105],
                     [2.75e-06, 3.64e-06, 4.54e-06, 6.59e-06, 1.31e-05, 2.5e-05, 5.18e-05, 0.000101]],
            "256,3": [[7.49e-06, 1.01e-05, 1.3e-05, 1.91e-05, 3.84e-05, 8.04e-05, 0.000158, 0.000309],
                     [7.88e-06, 1.05e-05, 1.33e-05, 1.99e-05, 3.86e-05, 7.86e-05, 0.000153, 0.000313]],
            "256,4": [[1.02e-05, 1.51e-05, 1.96e-05, 2.66e-05, 5.3e-05, 0.000106, 0.000208, 0.000432],
                     [1.05e-05, 1.42e-05, 1.84e-05, 2.63e-05, 5.18e-05, 0.000104, 0.000211, 0.000426]],
            "512,1": [[1.04e-05, 1.46e-05, 1.79e-05, 2.66e-05, 5.27e-05, 0.000109, 0.000223, 0.000438],
                     [1.04e-05, 1.46e-05, 1.83e-05, 2.64e-05, 5.24e-05, 0.000109, 0.000213, 0.00042]],
            "512,3": [[0.000105, 0.000127, 0.000139, 0.000139, 0.000206, 0.000358, 0.000692, 0.00141],
                     [9.87e-05, 0.000113, 0.000113, 0.000119, 0.000199, 0.000344, 0.000641, 0.00124]],
            "512,4": [[0.000141, 0.000169, 0.000171, 0.000178, 0.000299, 0.000482, 0.00093, 0.00184],
                     [0.000143, 0.000156, 0.000157, 0.000171, 0.00028, 0.000471, 0.000878, 0.00176]],
        },
        chunk_flops_per_s={
            "32,1": 1.56e+11,
            "32,3": 1.59e+11,
            "32,4": 1.55e+11,
            "64,1": 1.42e+11,
            "64,3": 1.43e+11,
            "64,4": 1.43e+11,
            "128,1": 1.57e+11,
            "128,3": 1.56e+11,
            "128,4": 1.49e+11,
            "256,1": 1.6e+11,
            "256,3": 1.57e+11,
            "256,4": 1.61e+11,
            "512,1": 1.68e+11,
            "512,3": 1.62e+11,
            "512,4": 1.72e+11,
        },
        elementwise={  # cell: (fixed, per_unit) seconds per step
            "rnn": (5.12e-08, 2.01e-09),
            "gru": (1.5e-07, 7.39e-09),
            "lstm": (1.59e-07, 1.06e-08),
        },
        pass_python_s=1.56e-05,
        handoff_s=8.05e-05,
        combine_s_per_param=3.95e-10,
        concurrent_rows=[1, 4, 16, 64],
        shards_ratio={  # "cell,H": two shards of M side by side / the model's two, at concurrent_rows
            "gru,32": [1.57, 1.18, 1.12, 1.12],
            "gru,64": [1.49, 1.18, 1.12, 1.12],
            "gru,128": [1.38, 1.18, 1.04, 1.01],
            "gru,256": [1.22, 1.16, 1.02, 1.07],
            "gru,512": [1.18, 1.13, 1.17, 1.11],
            "lstm,32": [1.56, 1.3, 1.14, 1.15],
            "lstm,64": [1.41, 1.14, 1.05, 0.997],
            "lstm,128": [1.4, 1.15, 1.03, 0.974],
            "lstm,256": [1.19, 1.06, 1.02, 1.11],
            "lstm,512": [1.26, 1.24, 1.27, 1.19],
            "rnn,32": [1.68, 1.59, 1.33, 1.3],
            "rnn,64": [1.78, 1.51, 1.15, 1.16],
            "rnn,128": [1.38, 1.2, 1.16, 1.1],
            "rnn,256": [1.13, 1.17, 1.09, 1.09],
            "rnn,512": [1.4, 1.2, 1.07, 1.02],
        },
        split_ratio={  # "cell,H": M streams split on two threads / the model's one thread, at concurrent_rows
            "gru,64": [4.45, 2.38, 1.35, 0.977],
            "gru,128": [1.99, 1.43, 0.926, 0.749],
            "gru,256": [1.5, 0.92, 0.722, 0.608],
            "gru,512": [0.493, 0.483, 0.584, 0.574],
            "lstm,64": [3.03, 1.92, 1.15, 0.863],
            "lstm,128": [1.85, 1.22, 0.793, 0.653],
            "lstm,256": [1.58, 0.85, 0.647, 0.561],
            "lstm,512": [0.608, 0.664, 0.632, 0.607],
            "rnn,64": [8.59, 4.77, 2.28, 1.43],
            "rnn,128": [3.13, 2.5, 1.29, 0.949],
            "rnn,256": [2.06, 1.23, 0.846, 0.725],
            "rnn,512": [1.56, 0.913, 0.67, 0.585],
        },
    ),
    'openblas-intel': dict(
        measured_on='2026-12-06 04:45 UTC, Intel(R) Xeon(R) Processor, 2 cores, load average 1.56, openblas 0.3.30, python -m bench.gemm_rate',
        gemm_rows=[1, 2, 4, 8, 16, 32, 64, 128],
        gemm={  # "H,G": [forward, backward] seconds of one per-step GEMM at gemm_rows
            "32,1": [[5.22e-08, 5.49e-08, 9.35e-08, 1.42e-07, 2.36e-07, 4.48e-07, 8.81e-07, 1.72e-06],
                    [5.2e-08, 5.59e-08, 9.32e-08, 1.4e-07, 2.55e-07, 4.45e-07, 9.22e-07, 1.79e-06]],
            "32,3": [[1.09e-07, 1.25e-07, 2.06e-07, 3.51e-07, 7.07e-07, 1.39e-06, 2.73e-06, 5.68e-06],
                    [1.37e-07, 1.37e-07, 2.53e-07, 3.78e-07, 7.55e-07, 1.21e-06, 2.77e-06, 5.31e-06]],
            "32,4": [[1.31e-07, 1.64e-07, 2.4e-07, 4.66e-07, 8.69e-07, 1.78e-06, 3.74e-06, 6.45e-06],
                    [1.99e-07, 1.99e-07, 3.4e-07, 4.74e-07, 9.39e-07, 1.57e-06, 3.47e-06, 6.95e-06]],
            "64,1": [[1.69e-07, 1.69e-07, 2.25e-07, 4.38e-07, 8.58e-07, 1.71e-06, 2.99e-06, 6.82e-06],
                    [1.68e-07, 1.68e-07, 2.26e-07, 4.37e-07, 8.58e-07, 1.71e-06, 2.97e-06, 6.62e-06]],
            "64,3": [[4.14e-07, 4.15e-07, 6.5e-07, 1.24e-06, 2.36e-06, 4.49e-06, 9.07e-06, 2.68e-05],
                    [4.61e-07, 4.61e-07, 6.09e-07, 1.22e-06, 2.36e-06, 4.69e-06, 1.13e-05, 2.73e-05]],
            "64,4": [[7.67e-07, 9.46e-07, 1.14e-06, 2.23e-06, 4.4e-06, 8.86e-06, 1.91e-05, 3.4e-05],
                    [8.22e-07, 8.5e-07, 1.04e-06, 2.05e-06, 3.99e-06, 7.97e-06, 1.97e-05, 3.52e-05]],
            "128,1": [[7.76e-07, 9.01e-07, 1.08e-06, 2.17e-06, 4.31e-06, 8.56e-06, 1.86e-05, 3.39e-05],
                     [7.76e-07, 9.13e-07, 1.08e-06, 2.17e-06, 4.34e-06, 8.44e-06, 1.91e-05, 3.44e-05]],
            "128,3": [[2.25e-06, 2.82e-06, 3.37e-06, 6.72e-06, 1.34e-05, 3.81e-05, 5.72e-05, 0.000101],
                     [2.37e-06, 2.74e-06, 3.1e-06, 6.46e-06, 1.31e-05, 3.86e-05, 5.86e-05, 0.000103]],
            "128,4": [[2.97e-06, 3.91e-06, 4.86e-06, 9.74e-06, 3.14e-05, 4.63e-05, 6.87e-05, 0.000126],
                     [3.19e-06, 3.68e-06, 4.39e-06, 8.73e-06, 3.19e-05, 4.85e-05, 7.37e-05, 0.000131]],
            "256,1": [[3.14e-06, 3.76e-06, 4.34e-06, 8.49e-06, 2.98e-05, 4.59e-05, 7e-05, 0.000121],
                     [3.01e-06, 3.76e-06, 4.33e-06, 8.43e-06, 3.02e-05, 4.59e-05, 6.88e-05, 0.000121]],
            "256,3": [[8.14e-06, 1.17e-05, 1.43e-05, 7.58e-05, 9.62e-05, 0.000137, 0.00021, 0.000369],
                     [8.4e-06, 1.08e-05, 1.31e-05, 6.92e-05, 9.42e-05, 0.000139, 0.000213, 0.000373]],
            "256,4": [[1.14e-05, 1.89e-05, 9.75e-05, 0.000111, 0.000137, 0.000201, 0.000313, 0.000538],
                     [1.12e-05, 1.46e-05, 7.54e-05, 9.96e-05, 0.000131, 0.000202, 0.000318, 0.000532]],
            "512,1": [[1.21e-05, 1.59e-05, 7.98e-05, 9.14e-05, 0.000121, 0.000174, 0.000268, 0.000488],
                     [1.22e-05, 1.58e-05, 8.02e-05, 9.15e-05, 0.000119, 0.000171, 0.000266, 0.000485]],
            "512,3": [[9.51e-05, 0.000364, 0.000378, 0.000431, 0.000509, 0.000676, 0.000953, 0.00153],
                     [9.74e-05, 0.000381, 0.000381, 0.000433, 0.00055, 0.000705, 0.000969, 0.00154]],
            "512,4": [[0.000144, 0.000529, 0.000537, 0.000633, 0.000709, 0.000879, 0.00127, 0.00207],
                     [0.000145, 0.000501, 0.000525, 0.000622, 0.000681, 0.000904, 0.00129, 0.00214]],
        },
        chunk_flops_per_s={
            "32,1": 1.43e+11,
            "32,3": 7.8e+10,
            "32,4": 8.02e+10,
            "64,1": 9.28e+10,
            "64,3": 1.09e+11,
            "64,4": 1.08e+11,
            "128,1": 1.17e+11,
            "128,3": 1.23e+11,
            "128,4": 1.2e+11,
            "256,1": 1.3e+11,
            "256,3": 1.36e+11,
            "256,4": 1.34e+11,
            "512,1": 1.49e+11,
            "512,3": 1.52e+11,
            "512,4": 1.45e+11,
        },
        elementwise={  # cell: (fixed, per_unit) seconds per step
            "rnn": (1.12e-08, 1.95e-09),
            "gru": (1.34e-07, 8.03e-09),
            "lstm": (9.98e-09, 1.12e-08),
        },
        pass_python_s=1.67e-05,
        handoff_s=8.48e-05,
        combine_s_per_param=3.88e-10,
        concurrent_rows=[1, 4, 16, 64],
        shards_ratio={  # "cell,H": two shards of M side by side / the model's two, at concurrent_rows
            "gru,32": [1.72, 1.2, 1.13, 1.2],
            "gru,64": [1.33, 1.22, 1.12, 1.07],
            "gru,128": [1.26, 1.1, 1.05, 1.02],
            "gru,256": [1.49, 1.17, 1.18, 1.22],
            "gru,512": [1.28, 1.18, 1.17, 1.2],
            "lstm,32": [1.56, 1.25, 1.14, 1.18],
            "lstm,64": [1.38, 1.19, 1.1, 1.02],
            "lstm,128": [1.21, 1.02, 1.06, 1.01],
            "lstm,256": [1.34, 1.22, 1.13, 1.1],
            "lstm,512": [1.23, 1.17, 1.18, 1.22],
            "rnn,32": [1.59, 1.64, 1.34, 1.34],
            "rnn,64": [1.58, 1.29, 1.1, 1.23],
            "rnn,128": [1.32, 1.26, 1.14, 1.12],
            "rnn,256": [1.26, 1.05, 1.15, 1.12],
            "rnn,512": [1.29, 1.29, 1.26, 1.28],
        },
        split_ratio={  # "cell,H": M streams split on two threads / the model's one thread, at concurrent_rows
            "gru,64": [3.81, 2.39, 1.29, 0.923],
            "gru,128": [1.88, 1.28, 0.852, 0.704],
            "gru,256": [1.43, 0.972, 0.713, 0.681],
            "gru,512": [0.572, 0.612, 0.621, 0.638],
            "lstm,64": [3.1, 1.88, 1.09, 0.767],
            "lstm,128": [1.73, 1.07, 0.549, 0.642],
            "lstm,256": [1.47, 0.263, 0.588, 0.532],
            "lstm,512": [0.627, 0.693, 0.646, 0.652],
            "rnn,64": [8.05, 4.64, 2.17, 1.46],
            "rnn,128": [3.19, 2.38, 1.19, 0.819],
            "rnn,256": [1.9, 1.31, 0.617, 0.765],
            "rnn,512": [1.45, 0.301, 0.695, 0.695],
        },
    ),
}
# END BACKEND MEASURED


def model_key(blas_name, intel):
    """The cost model of kernels on `blas_name` ("openblas", "mkl") on an Intel CPU or not:
    "mkl"; "openblas-intel" for OpenBLAS on an Intel CPU; else "openblas" (MEASURED)."""
    return "openblas-intel" if blas_name == "openblas" and intel else blas_name


def cost_model(key):
    """The cost model named `key` (model_key): its fit in BACKEND_MEASURED, else MEASURED."""
    constants = BACKEND_MEASURED.get(key, MEASURED)
    return CostModel(**{name: value for name, value in constants.items() if name != "measured_on"})


def measured_on(key):
    """When and where the cost model named `key` was measured."""
    return BACKEND_MEASURED.get(key, {}).get("measured_on", MEASURED_ON)


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


BLAS = backend()["name"]  # the kernels' BLAS in this process
MODEL_KEY = model_key(BLAS, is_intel_cpu())
COST_MODEL = cost_model(MODEL_KEY)


def split_counts(hidden_size, cores):
    """Thread counts a hidden-block plan may use: 2..cores dividing H, MIN_BLOCK units each."""
    return [n for n in range(2, cores + 1) if hidden_size % n == 0 and hidden_size // n >= MIN_BLOCK]


def plan_times(cell, input_size, hidden_size, batch, num_layers=1, cores=None,
               steps=DEFAULT_STEPS, output_size=1, model=None, max_split=None):
    """{(shards, split): modelled seconds per step} of every plan the cores allow for
    chunks of `steps` steps of `batch` streams (arguments as in choose_plan)."""
    model = model or COST_MODEL
    cores = available_cores() if cores is None else cores
    max_split = cores if max_split is None else min(max_split, cores)
    times = {(shards, 1): model.step_seconds(cell, input_size, hidden_size, batch, num_layers, steps,
                                             shards, output_size)
             for shards in range(1, max(1, min(batch, cores)) + 1)}
    if times[1, 1] >= MIN_SPLIT_STEP_S:
        times.update({(1, n): model.split_step_seconds(cell, input_size, hidden_size, batch, num_layers, steps, n)
                      for n in split_counts(hidden_size, max_split)})
    return times


def ranked_plans(times):
    """The plans of `times` (plan_times), fastest first; ties go to fewer threads."""
    return sorted(times, key=lambda plan: (times[plan], plan[0] * plan[1], plan[1]))


def choose_plan(cell, input_size, hidden_size, batch, num_layers=1, cores=None,
                steps=DEFAULT_STEPS, output_size=1, model=None, max_split=None):
    """The plan for chunks of `steps` steps of `batch` streams: a JSON-able dict with
    "shards" (1 <= shards <= min(batch, cores)), "split" (threads sharing each step by
    hidden blocks; 1 = none, and then shards may be > 1), "rows_per_shard" (the largest
    shard), "cores", "modelled_step_s" and "modelled_speedup" (against one thread).
    max_split: the most threads a hidden-block plan may use (default: cores)."""
    cores = available_cores() if cores is None else cores
    times = plan_times(cell, input_size, hidden_size, batch, num_layers, cores, steps, output_size, model,
                       max_split)
    best = ranked_plans(times)[0]
    shards, split = best
    return {"shards": shards, "split": split, "rows_per_shard": max(shard_rows(batch, shards)),
            "cores": cores, "batch": batch, "steps": steps, "chosen_by": "model",
            "modelled_step_s": times[best], "modelled_speedup": times[1, 1] / times[best],
            "blas": BLAS, "cost_model": MODEL_KEY, "measured_on": measured_on(MODEL_KEY)}


def model_plan_times(model, steps, batch, cores=None):
    """plan_times for `model` (an engine.Model) on this machine."""
    return plan_times(model.cell, model.input_size, model.hidden_size, batch, model.num_layers, cores, steps,
                      model.output_size, max_split=_max_split(model))


def plan_for(model, steps, batch, shards=None, cores=None, split=None):
    """The plan of a Trainer's chunk: `shards` or `split` when given (an explicit choice;
    shards are capped at the batch), else the modelled best for `model` (an engine.Model)
    on this machine."""
    if shards is not None or split is not None:
        shards = 1 if shards is None else min(shards, batch)
        return {"shards": shards, "split": 1 if split is None else split,
                "rows_per_shard": max(shard_rows(batch, shards)),
                "cores": available_cores() if cores is None else cores, "batch": batch,
                "steps": steps, "chosen_by": "explicit"}
    return choose_plan(model.cell, model.input_size, model.hidden_size, batch, model.num_layers,
                       cores, steps, model.output_size, max_split=_max_split(model))


def _max_split(model):
    """The most hidden-block threads for `model`: as many as engine/split.py runs, none
    (1) for a bidirectional model."""
    from engine.split import max_split_threads

    return 1 if model.bidirectional else max_split_threads()


def plan_label(plan):
    """"2x32": two shards of 32 streams; "64/h2": one shard of 64 streams, its hidden units
    split between two threads."""
    if plan is None:
        return ""
    if plan.get("split", 1) > 1:
        return f"{plan['rows_per_shard']}/h{plan['split']}"
    return f"{plan['shards']}x{plan['rows_per_shard']}"
