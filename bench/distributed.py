"""Entry point `python -m bench.distributed`: time per update of RayTrainer(workers=2)
against Trainer(shards=2) on a local two-node Ray cluster on loopback (nodes of one CPU),
for small / medium / large LSTMs and several steps per update; the Ray time is split
into the slowest worker's computation and the rest (parameters out, gradients back,
Ray's per-call overhead). Checks first that both end with the same parameters."""
import argparse
import os
import time

import numpy as np

# Read when Ray is imported: without them Ray 2.60 leaves loopback (docs/ray.md).
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}

MODELS = {"small": 16, "medium": 64, "large": 256}  # LSTM hidden size, I = O = 1
STREAMS = 8
STEPS = (10, 100, 1000)  # k1: steps per stream per update
UPDATES = 5               # timed updates per configuration (after one warm-up fit)


def measure(name, hidden, k1, updates):
    """(local, ray) seconds per update and the RayTrainer's timing of the timed fit."""
    import engine
    from engine.distributed import RayTrainer

    rng = np.random.default_rng(0)
    x = rng.standard_normal((k1 * updates, STREAMS, 1)).astype(np.float32)
    y = rng.standard_normal((k1 * updates, STREAMS, 1)).astype(np.float32)
    models = [engine.Model("lstm", 1, hidden, 1) for _ in range(2)]
    local = engine.Trainer(models[0], k1=k1, shards=2)
    with RayTrainer(models[1], workers=2, k1=k1) as distributed:
        seconds = {}
        for label, trainer in (("local", local), ("ray", distributed)):
            trainer.fit(x, y)  # warm-up: kernels loaded, buffers allocated, data sent
            before = dict(trainer.timing) if label == "ray" else None
            started = time.perf_counter()
            trainer.fit(x, y)
            seconds[label] = (time.perf_counter() - started) / updates
        after = distributed.timing
        assert np.array_equal(models[0].params, models[1].params), f"{name} k1={k1}: results differ"
    timing = {key: (after[key] - before[key]) / updates for key in ("seconds", "compute_seconds")}
    return models[0].num_parameters, seconds, timing


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--steps", nargs="*", type=int, default=list(STEPS), help="k1 values")
    parser.add_argument("--updates", type=int, default=UPDATES)
    args = parser.parse_args()
    os.environ.update(LOOPBACK)
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, node_ip_address="127.0.0.1",
                                                                include_dashboard=False))
    try:
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        ray.init(address=cluster.address, log_to_driver=False)
        print(f"LSTM, I=O=1, B={STREAMS} streams in 2 shards; ms per update over {args.updates} updates "
              f"(one machine: 2 threads; Ray: 2 workers on 2 loopback nodes)")
        print(f"{'model':>6} {'H':>4} {'params':>8} {'k1':>5} {'one machine':>11} {'Ray':>8} "
              f"{'compute':>8} {'comm.':>7} {'MB/update':>9}")
        for name in args.models:
            for k1 in args.steps:
                hidden = MODELS[name]
                params, seconds, timing = measure(name, hidden, k1, args.updates)
                traffic = 2 * 2 * params * 4 / 1e6  # parameters to 2 workers, 2 gradients back
                print(f"{name:>6} {hidden:>4} {params:>8} {k1:>5} {seconds['local'] * 1e3:>11.2f} "
                      f"{seconds['ray'] * 1e3:>8.2f} {timing['compute_seconds'] * 1e3:>8.2f} "
                      f"{(timing['seconds'] - timing['compute_seconds']) * 1e3:>7.2f} {traffic:>9.3f}",
                      flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
