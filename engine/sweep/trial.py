"""One trial of a sweep: a configuration trained with S initialisation seeds.

Each seed is a call of engine.train_series, the function behind `bptt train`, on data
prepared once for the whole sweep, single-shard (the sweep parallelises over trials).
The S seeds run in threads and advance in lockstep: after every epoch the trial reports
the mean over seeds of the best validation loss so far, and the executor (Optuna's pruner
or Ray Tune's scheduler) may stop all seeds together, so every configuration yields S
rows of results however early it was stopped.
"""
import itertools
import math
import threading
import time

from engine.forecasting.prepare import prepare
from engine.panel import Panel
from engine.pipeline import train_series
from engine.sweep.space import DATA_SETTINGS, train_arguments
from engine.trainer import TrainingDiverged

COMPLETE, PRUNED, FAILED = "complete", "pruned", "failed"
AHEAD = 16   # data settings a Ray sweep prepares before shipping (more: each trial prepares its own)


class Prepared:
    """The data of a sweep, read once (a Series, or a Panel of many series), and its training
    data prepared once per distinct data setting (the data options a trial may vary:
    streams, difference, scale), whatever the number of trials that use it. Thread-safe.

    data_options: train_series' data options of the first configuration (prepared now, so
    a bad fixed option fails before any trial). A panel's reading options (id_column,
    series_columns in data_options; time_column: as given, False for none) were used to
    read it; they stay in each recipe, so best.npz reads its data as train's checkpoints
    do."""

    def __init__(self, data, data_options, time_column=None):
        self.read, self.time_column = data, time_column
        self._lock = threading.Lock()
        self._data = {}
        self.data(data_options)

    def data(self, data_options):
        """The training data of `data_options` (TrainingData or PanelTrainingData), prepared
        on first use."""
        key = _key(data_options)
        with self._lock:
            if key not in self._data:
                self._data[key] = self._prepare(data_options)
            return self._data[key]

    def prepare_ahead(self, settings, dimensions):
        """Prepare now every data setting that the swept `dimensions` (those of DATA_SETTINGS,
        lists or integer ranges) give with the fixed `settings`, if there are at most
        AHEAD of them: a Ray sweep then ships them all to the object store once, instead of
        each trial preparing its own on a worker. A setting that cannot be prepared is left
        for its trials to fail on."""
        swept = [d for d in dimensions if d.name in DATA_SETTINGS]   # lists, or integer ranges (streams)
        grids = [[(d.name, value) for value in (d.choices if d.choices is not None
                                                else range(int(d.low), int(min(d.high, d.low + AHEAD)) + 1))]
                 for d in swept]
        if any(d.choices is None and d.high - d.low >= AHEAD for d in swept) \
                or math.prod(len(grid) for grid in grids) > AHEAD:
            return
        for combination in itertools.product(*grids):
            try:
                self.data(train_arguments({**settings, **dict(combination)})["data_options"])
            except ValueError:
                continue

    def _prepare(self, data_options):
        if not isinstance(self.read, Panel):
            return prepare(self.read, **data_options)
        reading = {name: data_options.get(name) for name in ("id_column", "series_columns")}
        options = {name: value for name, value in data_options.items() if name not in reading}
        data = prepare(self.read, panel=True, **options)   # the panel read already
        reading["time_column"] = self.read.time_name or self.time_column
        return data._replace(metadata={**data.metadata, **reading})

    def __getstate__(self):  # shipped to Ray workers: the lock stays behind
        return {"read": self.read, "time_column": self.time_column, "_data": self._data}

    def __setstate__(self, state):
        self.__dict__.update(state, _lock=threading.Lock())


def _key(data_options):
    """A hashable key of a data recipe (a column list as a tuple)."""
    return tuple(sorted((name, tuple(value) if isinstance(value, list) else value)
                        for name, value in data_options.items()))


def run_trial(settings, seeds, prepared, report, objective):
    """Train the configuration `settings` (every train option by name) once per seed in
    `seeds`. report(epoch, mean_best_val_loss, seed_best_val_losses) is called in this
    thread after each epoch of all seeds; it returns True to stop the trial there (pruning).
    objective: the Objective (engine/sweep/objective.py) scoring each completed seed.

    Returns (rows, runs): rows one dict per seed {"seed", "epochs", "best_val_loss",
    "score", "state", "seconds", "error"} (score nan unless complete); runs {seed: (model,
    trainer, data)} of completed seeds."""
    lockstep = _Lockstep(len(seeds))
    rows, runs = [None] * len(seeds), {}

    def train_seed(index, seed):
        started, losses = time.perf_counter(), []
        state, error, score = COMPLETE, None, math.nan

        def on_epoch(record):
            losses.append(record["val_loss"])
            lockstep.arrive(index, min(losses))

        try:
            # one shard: the sweep runs trials in parallel instead. patience = epochs when not
            # set: never stops early, but restores the best epoch's parameters, so a saved
            # model has the best validation loss reported for it
            options = dict(settings, seed=seed, shards=1, patience=settings["patience"] or settings["epochs"])
            data = prepared.data(train_arguments(options)["data_options"])  # a SweepError is a ValueError
            run = train_series(data, None, **options, on_epoch=on_epoch)
            trainer = run[1]   # the best epoch's model (restored), scored as it was trained
            score = objective.score(run[0], data, prepared.read, trainer.loss, getattr(trainer, "quantiles", None))
            runs[seed] = run
        except _Stopped:
            state = PRUNED
        except (TrainingDiverged, ValueError, TypeError) as failure:
            state, error = FAILED, str(failure)
        finally:
            lockstep.leave(index)
        rows[index] = {"seed": seed, "epochs": len(losses),
                       "best_val_loss": min(losses) if losses and state != FAILED else math.nan,
                       "score": score if state == COMPLETE else math.nan, "state": state, "seconds": time.perf_counter() - started, "error": error}

    threads = [threading.Thread(target=train_seed, args=(index, seed), daemon=True)
               for index, seed in enumerate(seeds)]
    for thread in threads:
        thread.start()
    lockstep.follow(report)
    for thread in threads:
        thread.join()
    return rows, runs


class _Stopped(Exception):
    """Raised in a seed's on_epoch when the trial is pruned."""


class _Lockstep:
    """S seed runs meet after every epoch; the trial's own thread reports each epoch's mean
    of the seeds' best losses and decides whether they go on. A seed that ends (done, early
    stopping, failure) leaves; its best loss still counts in later epochs' means."""

    def __init__(self, count):
        self._condition = threading.Condition()
        self._best = [[] for _ in range(count)]   # per seed: best loss after each epoch
        self._left = [False] * count
        self._decided = 0                         # epochs released
        self._stop = False

    def arrive(self, index, best_loss):
        """From seed `index`'s thread after its epoch: wait for the decision on that epoch."""
        with self._condition:
            self._best[index].append(best_loss)
            epoch = len(self._best[index])
            self._condition.notify_all()
            self._condition.wait_for(lambda: self._decided >= epoch)
            if self._stop:
                raise _Stopped()

    def leave(self, index):
        with self._condition:
            self._left[index] = True
            self._condition.notify_all()

    def follow(self, report):
        """Run in the trial's thread until every seed has left."""
        epoch = 0
        while True:
            epoch += 1
            with self._condition:
                self._condition.wait_for(lambda: all(len(best) >= epoch or left
                                                     for best, left in zip(self._best, self._left)))
                reached = [best[min(epoch, len(best)) - 1] for best in self._best if best]
                arrived = any(len(best) >= epoch for best in self._best)
            if not arrived:
                return
            stop = True  # if report raises, the seeds are released to stop, not left waiting
            try:
                stop = bool(report(epoch, sum(reached) / len(reached), reached))
            finally:
                with self._condition:
                    self._stop, self._decided = stop, epoch
                    self._condition.notify_all()
            if stop:
                return
