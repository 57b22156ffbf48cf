"""Entry point `python -m bench.small_steps [CONFIG ...]`: where the time of a small LSTM
training update goes (default single and tiny), on the process's BLAS backend
(BPTT_BLAS=openblas|mkl), float32, one thread.

For one shard of M streams as the Trainer runs it (M = B / the shards of the Trainer's
plan for the whole batch: single 1, tiny 8), microseconds per update, the fastest of
ROUNDS rounds in which every measurement takes its turn (bench.gemm_rate; on a shared
machine other processes only add time, and medians of single-threaded updates there
came out twice the quiet figures, erratically, piece by piece):
- update: Trainer.partial_fit on the M streams, as `bptt bench` times a step;
- forward, backward (head and loss included), clip + optimize: the step taken apart
  (bench.workloads.EngineWorkload; backward is forward + backward minus forward, as it
  needs the forward's caches); update minus them is the Trainer's own Python;
- in forward and backward, T times each per-step piece, timed alone in a jitted loop:
  the recurrent products through kernels.gemm.gemm ((M, H) x (H, 4H) forward,
  (M, 4H) x (4H, H) and the head's dL/dh (M, O) x (O, H) backward) and the LSTM cell's
  element-wise step (backward: with a copy of its 5H inputs per stream, which the cell
  overwrites); the phase minus its pieces is the rest: the whole-chunk products
  (input projection, weight gradients, head), the loops' bookkeeping and the Python
  and dispatch of the calls.
Prints a Markdown table, one row per configuration."""
import argparse

import numba
import numpy as np

from bench.configs import OUTPUT_SIZE, get_config
from bench.gemm_rate import alternated_medians, repeat_gemm
from bench.workloads import EngineWorkload, make_data
from kernels.gemm import BACKEND
from kernels.lstm import _cell_backward, _cell_forward

CONFIGS = ("single", "tiny")
ROUNDS = 31
ROUND_S = 0.05


@numba.njit(nogil=True, error_model="numpy")
def _cells_forward(h, c, gates, recurrent, bias, n):
    """n steps of the cell's forward on every stream: h, c (2, M, H), gates (M, 4H)."""
    H = h.shape[2]
    for _ in range(n):
        for b in range(h.shape[1]):
            _cell_forward(h[1, b], c[1, b], gates[b], c[0, b], recurrent[b], bias, bias, H)


@numba.njit(nogil=True, error_model="numpy")
def _cells_backward(gates, activated, dh, dh_state, dc_state, c, n):
    """n steps of the cell's backward on every stream: gates (M, 4H) overwritten from
    `activated` at each step (the cell turns them into gradients), the rest (M, H);
    dc_state shrinks by f at each step, so it is set back to c too (no subnormals)."""
    H = dh.shape[1]
    for _ in range(n):
        for b in range(dh.shape[0]):
            for j in range(4 * H):
                gates[b, j] = activated[b, j]
            for j in range(H):
                dc_state[b, j] = c[b, j]
            _cell_backward(gates[b], dh[b], dh_state[b], dc_state[b], c[b], c[b], H)


def _product(M, K, N, rng):
    a = rng.standard_normal((M, K), dtype=np.float32)
    b = rng.standard_normal((K, N), dtype=np.float32) / np.float32(np.sqrt(K))
    out = np.empty((M, N), np.float32)
    return lambda n: repeat_gemm(a, b, out, n)


def pieces(M, H, rng):
    """{name: call(n)}: n steps of each per-step piece of an LSTM of H units, M streams."""
    state = (0.5 * rng.standard_normal((2, M, H))).astype(np.float32)
    gates = (0.5 * rng.standard_normal((M, 4 * H))).astype(np.float32)
    activated = (0.5 + 0.4 * np.tanh(gates)).astype(np.float32)
    recurrent, bias = np.zeros_like(gates), np.zeros(4 * H, np.float32)
    dh, dh_state, dc_state = ((0.1 * rng.standard_normal((M, H))).astype(np.float32) for _ in range(3))

    def cells_backward(n):
        _cells_backward(gates.copy(), activated, dh.copy(), dh_state, dc_state, state[0], n)

    return {"forward product": _product(M, H, 4 * H, rng),
            "forward cell": lambda n: _cells_forward(state.copy(), state.copy(), gates.copy(), recurrent, bias, n),
            "backward product": _product(M, 4 * H, H, rng),
            "head dL/dh": _product(M, OUTPUT_SIZE, H, rng),
            "backward cell": cells_backward}


def shard_streams(config):
    """M: the streams of one shard in the Trainer's plan for the whole batch."""
    x, y = make_data(config)
    trainer = EngineWorkload(config, x, y).trainer
    trainer.partial_fit(x, y)
    return config.batch // trainer.thread_plan["shards"]


def breakdown(config, rounds, round_s):
    """{name: microseconds per update} of one shard of `config` (see the module docstring)."""
    M = shard_streams(config)
    x, y = make_data(config)
    workload = EngineWorkload(config, np.ascontiguousarray(x[:, :M]), np.ascontiguousarray(y[:, :M]))

    def repeated(call):
        def run(n):
            for _ in range(n):
                call()
        return run

    phases = {"update": workload.step, "forward": workload.forward,
              "forward + backward": lambda: (workload.forward(), workload.backward()),  # backward needs its caches
              "clip + optimize": lambda: (workload.clip(), workload.optimize())}
    calls = {name: repeated(call) for name, call in phases.items()}
    steps = pieces(M, config.hidden_size, np.random.default_rng(0))
    calls.update({name: (lambda call: lambda n: call(n * config.chunk))(call) for name, call in steps.items()})
    seconds = alternated_medians(calls, rounds, round_s, statistic=min)
    us = {name: value * 1e6 for name, value in seconds.items()}
    us["backward"] = us.pop("forward + backward") - us["forward"]
    us["M"] = M
    return us


def row(name, us):
    forward_pieces = us["forward product"] + us["forward cell"]
    backward_pieces = us["backward product"] + us["head dL/dh"] + us["backward cell"]
    python = us["update"] - us["forward"] - us["backward"] - us["clip + optimize"]
    cells = [us["update"], us["forward"], us["forward product"], us["forward cell"], us["forward"] - forward_pieces,
             us["backward"], us["backward product"], us["head dL/dh"], us["backward cell"],
             us["backward"] - backward_pieces, us["clip + optimize"], python]
    return f"| {name} | {us['M']} | " + " | ".join(f"{value:.1f}" for value in cells) + " |"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", default=CONFIGS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    configs = [get_config(name) for name in args.configs]
    print(f"{BACKEND.name} {BACKEND.version}, microseconds per update, fastest of {args.rounds} rounds\n")
    print("| config | M | update | forward | T x product | T x cell | rest | backward | T x product | "
          "T x head dL/dh | T x cell | rest | clip + optimize | Trainer Python |")
    print("|---|---|" + "---|" * 12)
    for config in configs:
        if config.cell != "lstm":
            raise SystemExit(f"bench.small_steps times LSTM configurations, not {config.name}")
        print(row(config.name, breakdown(config, args.rounds, ROUND_S)), flush=True)


if __name__ == "__main__":
    main()
