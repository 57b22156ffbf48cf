"""The driver's side of the Ray workers: their actors, the data each holds, and one
update's round trip (parameters out once, every shard's gradient back).

The driver keeps what a worker needs to be rebuilt: the object-store reference of its
data, the state its next window starts from (the trainer's copy) and the current
update's request. A worker that dies is replaced and its part of the update sent again;
the result is the same as if it had never died.
"""
import gc
import time
import weakref

import numpy as np

from engine.distributed import startup
from engine.distributed.cluster import ClusterUnavailable
from engine.distributed.worker import Worker

START_TIMEOUT = 120.0  # seconds for a new worker to answer where its placement cannot be observed
_open_groups = weakref.WeakSet()  # the groups of this process whose workers hold CPUs


class WorkerFailed(RuntimeError):
    """A worker kept dying: an update could not be completed within the retries."""


def shard_slices(B, shards):
    """The shards' slices of the B streams, cut exactly as ShardedChunk cuts them."""
    bounds = np.linspace(0, B, shards + 1).round().astype(int)
    return [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:])]


class WorkerGroup:
    """`workers` Ray actors of `shards_per_worker` shards each; worker w holds shards
    w*s .. w*s+s-1 of the global order. cpus_per_worker: the CPUs each actor reserves
    (default one per shard). max_retries: replacements of one worker within one update
    before WorkerFailed. quantiles: the levels of loss "quantile" (None for the others)."""

    def __init__(self, ray, model, loss, memory, workers, shards_per_worker, cpus_per_worker=None,
                 max_retries=3, start_timeout=None, quantiles=None):
        self.ray = ray
        self.model_config, self.loss, self.memory, self.quantiles = model.config, loss, memory, quantiles
        self.shards_per_worker = shards_per_worker
        self.max_retries = max_retries
        self.start_timeout = START_TIMEOUT if start_timeout is None else start_timeout
        self.cpus = shards_per_worker if cpus_per_worker is None else cpus_per_worker
        available = ray.cluster_resources().get("CPU", 0)
        if workers * self.cpus > available:
            raise ClusterUnavailable(f"{workers} workers need {workers * self.cpus} CPUs ({self.cpus} each); "
                                     f"the Ray cluster has {available:g}")
        held = startup.shortage(ray, workers * self.cpus, held_elsewhere(self))
        if held is not None and held[1]:  # another trainer of this process holds them: it would wait forever
            gc.collect()  # unless it is garbage only a collection frees (its workers then stop)
            held = startup.shortage(ray, workers * self.cpus, held_elsewhere(self))
            if held is not None and held[1]:
                raise ClusterUnavailable(held[0])
        self.actor_class = ray.remote(Worker).options(num_cpus=self.cpus, max_restarts=0,
                                                      scheduling_strategy="SPREAD")
        self.failures = (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError)
        self.actors = [self._start() for _ in range(workers)]
        _open_groups.add(self)
        try:
            self._wait_ready(self.actors)
        except self.failures as error:
            self.close()
            raise ClusterUnavailable(f"the Ray workers did not start: {_first_line(error)}") from None
        except ClusterUnavailable:  # they cannot be placed: said by the wait
            self.close()
            raise
        self.forget_data()
        self.timing = {"updates": 0, "seconds": 0.0, "compute_seconds": 0.0}

    # ---------------------------------------------------------------- data, once per piece

    @property
    def has_data(self):
        return self.data is not None

    def forget_data(self):
        """Drop the workers' data (the next update sends a new piece)."""
        self.data = self.layout = self.loading = None
        self.held = []

    def send(self, x, y, resets=None):
        """Cut x (T, B, I), y (T, B, O) or (T, B), resets (T, B) into the shards, put
        each worker's shards in the object store once and have it load them."""
        if not self.actors:
            raise RuntimeError("this RayTrainer was closed: its workers are gone")
        B = x.shape[1]
        s = self.shards_per_worker
        slices = list(enumerate(shard_slices(B, min(len(self.actors) * s, B))))
        self.layout = [slices[w * s:(w + 1) * s] for w in range(len(self.actors)) if slices[w * s:(w + 1) * s]]
        self.data = [self.ray.put([tuple(None if part is None else np.ascontiguousarray(part[:, streams])
                                         for part in (x, y, resets)) for _, streams in shards])
                     for shards in self.layout]
        self.loading = [actor.load.remote(data) for actor, data in zip(self.actors, self.data)]
        self.held = [{} for _ in self.layout]  # per worker: step -> [state per shard] it holds

    # ---------------------------------------------------------------- one update

    def run(self, params, window, first_step, state, steps, diagnostics, update, masks=None):
        """Every shard's reply (see Worker.run) for one update, in the global shard order.

        params (P,) are put in the object store once for all workers. state: the full
        (L, B, H) state the window starts from; a worker that holds it already is told
        which of its states to use instead of being sent it. masks: the window's
        engine.masks.ChunkMasks of all B streams (or None); each worker gets its shards'."""
        started = time.perf_counter()
        params = self.ray.put(params)

        def call(w, worker_state):
            shard_masks = None if masks is None else [masks.streams(streams) for _, streams in self.layout[w]]
            return self.actors[w].run.remote(params, window, first_step, worker_state, steps, diagnostics,
                                             shard_masks)

        calls = [call(w, self._request(w, state)) for w in range(len(self.layout))]
        replies = []
        for w, pending in enumerate(calls):
            reply = self._result(w, pending, lambda w=w: call(w, self._states(w, state)), update)
            self.held[w] = reply["states"]
            replies.extend(_per_shard(reply))
        self.timing["updates"] += 1
        self.timing["seconds"] += time.perf_counter() - started
        self.timing["compute_seconds"] += max(reply["seconds"] for reply in replies)
        return replies

    def _result(self, w, pending, resend, update):
        """Worker w's reply; if it died, replace it and resend, up to max_retries times."""
        failures = 0
        while True:
            try:
                if pending is None:
                    self._replace(w)
                    pending = resend()
                if self.loading[w] is not None:
                    self.ray.get(self.loading[w])
                    self.loading[w] = None
                return self.ray.get(pending)
            except self.failures as error:
                failures += 1
                if failures > self.max_retries:
                    streams = [s for _, s in self.layout[w]]
                    raise WorkerFailed(
                        f"Ray worker {w} (streams {streams[0].start}..{streams[-1].stop - 1}) died "
                        f"{failures} times in update {update} ({_first_line(error)}); gave up after "
                        f"{self.max_retries} replacement{'' if self.max_retries == 1 else 's'}, the "
                        f"model keeps the parameters of update {update - 1}") from None
                pending = None
            except self.ray.exceptions.RayTaskError as error:  # the worker raised: retrying cannot help
                cause = getattr(error, "cause", None) or error
                raise WorkerFailed(f"Ray worker {w} failed in update {update}: {type(cause).__name__}: "
                                   f"{_first_line(cause)}") from error

    def _replace(self, w):
        """A new actor in place of worker w, loading w's data from the object store."""
        self.ray.kill(self.actors[w])
        self.actors[w] = self._start()
        self._wait_ready([self.actors[w]], startup.FREEING_GRACE)  # the killed one's CPUs come free
        self.loading[w] = self.actors[w].load.remote(self.data[w])
        self.held[w] = {}

    def _request(self, w, state):
        """What worker w starts from: the step of its last run whose states equal (bit for
        bit) its part of `state`, or else those states themselves."""
        parts = self._parts(w, state)
        for step, held in self.held[w].items():
            if all(_same_bits(part, kept) for part, kept in zip(parts, held)):
                return step
        return self._states(w, state)

    def _states(self, w, state):
        """Worker w's part of `state`: a contiguous state per shard."""
        return [_map_state(np.ascontiguousarray, part) for part in self._parts(w, state)]

    def _parts(self, w, state):
        return [_map_state(lambda array: array[:, streams], state) for _, streams in self.layout[w]]

    # ---------------------------------------------------------------- actors

    def _start(self):
        return self.actor_class.remote(self.model_config, self.loss, self.memory, self.shards_per_worker,
                                       self.quantiles)

    def _wait_ready(self, actors, busy_grace=startup.BUSY_GRACE):
        """Until the actors answer, as long as they make progress (engine/distributed/startup.py)."""
        startup.wait_started(self.ray, actors, self.cpus, lambda: held_elsewhere(self), self.start_timeout,
                             busy_grace)

    def pids(self):
        """Process ids of the workers (tests kill them to check recovery)."""
        return self.ray.get([actor.pid.remote() for actor in self.actors])

    def close(self):
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        _open_groups.discard(self)


def held_elsewhere(group):
    """CPUs the workers of this process's other open groups hold."""
    return sum(len(other.actors) * other.cpus for other in list(_open_groups) if other is not group)


def _per_shard(reply):
    """A worker's reply split into one record per shard."""
    dh_norm_sq = reply["dh_norm_sq"] or [None] * len(reply["values"])
    return [{"grad": reply["grads"][k], "value": reply["values"][k], "count": reply["counts"][k],
             "states": {step: states[k] for step, states in reply["states"].items()},
             "dh_norm_sq": dh_norm_sq[k], "seconds": reply["seconds"]}
            for k in range(len(reply["values"]))]


def _map_state(function, state):
    """function applied to each part of a state: h, or the pair (h, c)."""
    if state is None:
        return None
    return tuple(function(part) for part in state) if isinstance(state, tuple) else function(state)


def _same_bits(a, b):
    """a and b are the same state, bit for bit (a NaN equals itself, -0.0 differs from 0.0)."""
    if a is None or b is None:
        return a is b
    parts_a, parts_b = (a, b) if isinstance(a, tuple) else ((a,), (b,))
    return len(parts_a) == len(parts_b) and all(
        x.shape == y.shape and x.dtype == y.dtype and np.array_equal(_bits(x), _bits(y))
        for x, y in zip(parts_a, parts_b))


def _bits(array):
    """The array's values as unsigned integers of the same width."""
    return np.ascontiguousarray(array).view(f"u{array.itemsize}")


def _first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__