"""RayTrainer: the Trainer with its batch shards in Ray workers (docs/ray.md)."""
from engine.checkpoint import load
from engine.distributed.chunk import RemoteChunk
from engine.distributed.cluster import connect
from engine.distributed.group import WorkerGroup
from engine.trainer import Trainer
from engine.validation import check_int


class RayTrainer(Trainer):
    """Synchronous data-parallel truncated BPTT on a Ray cluster.

    The Trainer itself (its TBPTT loop, clipping, optimizer step, history, callbacks,
    early stopping, divergence handling) runs in this process, the driver; only the
    forward and backward passes of the S = workers * shards_per_worker batch shards run
    in `workers` Ray actors. Each worker receives its shards' streams once per fit or
    partial_fit call (through the object store) and keeps its carried state; per update
    the driver puts the parameters once, each worker returns its shards' gradients and
    target counts, and the driver combines them in the global shard order exactly as
    ShardedChunk does, then clips and steps once. The result is bit-identical to
    Trainer(model, shards=S, ...) with the same options.

    address: "host:port" of the Ray head; None uses the connection this process already
    has (ray.init), else Ray's default. cpus_per_worker: CPUs each actor reserves
    (default shards_per_worker). max_retries: replacements of a dying worker within one
    update before WorkerFailed. trainer_options: those of Trainer (shards, if given,
    must equal workers * shards_per_worker).
    """

    def __init__(self, model, workers, address=None, shards_per_worker=1, cpus_per_worker=None,
                 max_retries=3, **trainer_options):
        self.workers = check_int("workers", workers)
        self.shards_per_worker = check_int("shards_per_worker", shards_per_worker)
        shards = trainer_options.pop("shards", None)
        if trainer_options.get("gradient", "bptt") != "bptt":
            raise ValueError(f"gradient={trainer_options['gradient']!r} runs on one machine; RayTrainer "
                             "spreads truncated BPTT's batch shards")
        if trainer_options.get("split", 1) not in (None, 1):
            raise ValueError("split (hidden blocks) runs on one machine; RayTrainer spreads batch shards")
        if shards is not None and shards != self.workers * self.shards_per_worker:
            raise ValueError(f"shards ({shards}) must equal workers * shards_per_worker "
                             f"({self.workers} * {self.shards_per_worker})")
        super().__init__(model, shards=self.workers * self.shards_per_worker, **trainer_options)
        self.max_retries = check_int("max_retries", max_retries, minimum=0)
        cpus = None if cpus_per_worker is None else check_int("cpus_per_worker", cpus_per_worker)
        self.address = address
        self._group = WorkerGroup(connect(address), model, self.loss, self.memory, self.workers,
                                  self.shards_per_worker, cpus, self.max_retries, quantiles=self.quantiles)

    @classmethod
    def from_config(cls, model, config, workers, address=None, shards_per_worker=None, **options):
        """A RayTrainer with the settings of a Trainer's `config`. shards_per_worker None:
        keep the config's shard count when `workers` divides it (a bit-identical
        continuation), else one shard per worker."""
        settings = dict(config)
        shards = settings.pop("shards")
        if shards_per_worker is None:
            shards_per_worker = shards // workers if shards and shards % workers == 0 else 1
        return super().from_config(model, dict(settings, workers=workers, address=address,
                                               shards_per_worker=shards_per_worker, **options))

    @classmethod
    def from_checkpoint(cls, path, workers, address=None, **options):
        """(model, trainer) of a checkpoint written by engine.save, the trainer continuing
        on the cluster (options as in from_config)."""
        connect(address)  # a cluster error is not reported as a damaged checkpoint
        return load(path, trainer_factory=lambda model, config: cls.from_config(
            model, config, workers, address, **options))

    @property
    def timing(self):
        """{"updates", "seconds", "compute_seconds"}: the updates run on the cluster, their
        wall time at the driver and the slowest worker's computing time within it (the
        rest is communication and Ray's per-call overhead)."""
        return dict(self._group.timing)

    def worker_pids(self):
        """Process ids of the workers, in shard order (for monitoring, and for tests that
        kill one to check recovery)."""
        return self._group.pids()

    def close(self):
        """Stop the workers (they also stop when the trainer is garbage collected)."""
        self._group.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # ---------------------------------------------------------------- Trainer hooks

    def fit(self, x, y, *args, **kwargs):
        self._group.forget_data()  # this call's data goes to the workers at its first update
        return super().fit(x, y, *args, **kwargs)

    def partial_fit(self, x, y, *args, **kwargs):
        self._group.forget_data()
        return super().partial_fit(x, y, *args, **kwargs)

    def _chunk(self, T, B):
        if (T, B) not in self._chunks:
            overhang = 0 if self.k1 is None else self.k2 - self.k1
            # The loop asks for the states at the window's end and where the next window starts.
            self._chunks[T, B] = RemoteChunk(self._group, self.model, T, B, min(self.shards, B), self.grad,
                                             kept_steps=(T, max(0, T - overhang)))
        return self._chunks[T, B]

    def _forward_backward(self, chunk, x, y, window, state, first_step, resets=None):
        if not self._group.has_data:
            self._group.send(x, y, resets)
        # The window's masks come from the driver's generator, as on one machine; each
        # worker gets its shards' streams of them.
        options = self._window_options(x, window, resets)
        chunk.fetch(self.model.params, window, first_step, state, self.diagnostics, self.step + 1,
                    options.get("masks"))
        start, end = window
        return chunk.forward_backward(x[start:end], y[start:end], self.loss, state, first_step, **options)
