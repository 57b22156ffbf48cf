"""Sweeps on a Ray cluster: Ray Tune runs the same trials (engine/sweep/trial.py) with
OptunaSearch choosing configurations and an ASHA scheduler stopping poor ones on the
validation loss after each epoch. One CPU per trial, as many trials at once as the
cluster has CPUs; the prepared data go to the object store once (tune.with_parameters).
Each trial sets Numba's and the kernels' BLAS threads to its one CPU (Ray sets only
OMP_NUM_THREADS). Results come back in the local sweep's format."""
import contextlib
import json
import math
import os
import shutil
import tempfile
import time

from engine.sweep.local import ExtraUnavailable, make_sampler, quiet_optuna
from engine.sweep.space import SweepError
from engine.sweep.trial import COMPLETE, PRUNED, run_trial

def require_ray():
    try:
        import ray
        from ray import tune
        from ray.tune.search.optuna import OptunaSearch  # noqa: F401 (needs optuna too)
    except ImportError:
        raise ExtraUnavailable("bptt sweep --ray needs Ray Tune: pip install 'bptt[ray]' "
                               "(or pip install 'ray[tune]' optuna)") from None
    return ray, tune


def run_ray(plan, sampler, seed, on_trial):
    """Run plan.trials trials on the cluster connected to (connected()); on_trial(number,
    values, rows, None) in the driver as each one ends (the models stay on the workers)."""
    ray, tune = require_ray()
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    storage = tempfile.mkdtemp(prefix="bptt-sweep-ray-")
    try:
        epochs = plan.settings["epochs"]
        with quiet_optuna():
            search = OptunaSearch(space={d.option: d.distribution() for d in plan.dimensions}, metric="val_loss",
                                  mode="min", sampler=make_sampler(sampler, plan.dimensions, seed))
        scheduler = (ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=1, reduction_factor=3)
                     if plan.prune else None)
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, prepared=plan.prepared, settings=plan.settings,
                                 seeds=plan.seeds, names={d.option: d.name for d in plan.dimensions},
                                 objective=plan.objective),
            {"cpu": 1})
        cpus = max(int(ray.cluster_resources().get("CPU", 1)), 1)
        tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
            metric="val_loss", mode="min", search_alg=search, scheduler=scheduler,
            num_samples=plan.trials, max_concurrent_trials=cpus, reuse_actors=True),
            run_config=tune.RunConfig(name="bptt-sweep", storage_path=storage, verbose=0,
                                      callbacks=[_Finished(plan, on_trial, tune)]))
        with _quiet_tune():
            tuner.fit()
    finally:
        shutil.rmtree(storage, ignore_errors=True)


@contextlib.contextmanager
def _quiet_tune():
    """Tune's console report off (the sweep prints its own progress): its new output
    engine ignores verbose=0, the classic one honours it."""
    previous = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["RAY_AIR_NEW_OUTPUT"]
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = previous


@contextlib.contextmanager
def connected(address):
    """Connected to the cluster for the body (entered before the sweep writes anything),
    disconnected after it if this call connected; an unreachable cluster fails within
    seconds, as for training on a cluster (engine/distributed/cluster.py)."""
    from engine.distributed.cluster import ClusterUnavailable, connect

    ray, _ = require_ray()
    if ray.is_initialized():
        _check_cpus(ray, address)
        yield
        return
    if address is None:
        raise SweepError("--ray needs an address: auto, or the head node's host:port")
    try:
        connect(address)
    except ClusterUnavailable as error:
        raise SweepError(f"--ray {address}: {error}") from None
    try:
        _check_cpus(ray, address)
        yield
    finally:
        ray.shutdown()


def _check_cpus(ray, address):
    """A CPU free for a trial, or a SweepError naming who holds them (Tune would wait)."""
    from engine.distributed.cluster import ClusterUnavailable
    from engine.distributed.group import held_elsewhere
    from engine.distributed.startup import wait_for_cpus

    try:
        wait_for_cpus(ray, 1, lambda: held_elsewhere(None))
    except ClusterUnavailable as error:
        raise SweepError(f"--ray {address or 'connected'}: {error}") from None


def _trainable(config, prepared, settings, seeds, names, objective):
    """One trial on a worker: its CPU share of threads, the seeds in lockstep, a report to
    Tune after each epoch (ASHA may stop the trial there), the rows and the mean score (the
    value OptunaSearch learns from) in the last report."""
    import numba
    from ray import tune

    from engine.blas import set_blas_threads

    numba.set_num_threads(1)
    set_blas_threads(1)
    started = time.perf_counter()

    def report(epoch, value, seed_losses):
        tune.report({"val_loss": value, "epoch": epoch, "seed_losses": json.dumps(seed_losses),
                     "seconds": time.perf_counter() - started})
        return False

    values = {names[option]: value for option, value in config.items()}
    rows, _ = run_trial({**settings, **values}, seeds, prepared, report, objective)
    finite = [row["score"] for row in rows if not math.isnan(row["score"])]
    tune.report({"val_loss": sum(finite) / len(finite) if finite else math.inf,
                 "epoch": max(row["epochs"] for row in rows), "rows": json.dumps(rows), "finished": True})


def _rows(result, seeds, epochs, objective):
    """Per-seed rows from a trial's last result: its own rows when it finished, else the
    seeds' best losses at the last reported epoch, complete if that was the last epoch
    (ASHA stops every trial at max_t) and pruned before it; such a complete row's score is
    its loss under the default objective, unknown (nan) under a metric."""
    if result.get("finished"):
        return json.loads(result["rows"])
    if "seed_losses" not in result:  # stopped before its first epoch ended
        return [{"seed": seed, "epochs": 0, "best_val_loss": math.nan, "score": math.nan, "state": PRUNED,
                 "seconds": 0.0, "error": None} for seed in seeds]
    losses = json.loads(result["seed_losses"])
    state = COMPLETE if result["epoch"] >= epochs else PRUNED
    return [{"seed": seed, "epochs": result["epoch"], "best_val_loss": loss,
             "score": loss if state == COMPLETE and objective.metric is None else math.nan, "state": state,
             "seconds": result["seconds"], "error": None} for seed, loss in zip(seeds, losses)]


def _Finished(plan, on_trial, tune):
    """A Tune callback passing each ended trial to on_trial, in the local sweep's format."""

    class Finished(tune.Callback):
        def __init__(self, plan, on_trial):
            self.plan, self.on_trial = plan, on_trial
            self.numbers = {}  # trial id -> number, in the order Tune created the trials

        def on_trial_add(self, iteration, trials, trial, **info):
            self.numbers.setdefault(trial.trial_id, len(self.numbers))

        def __getstate__(self):  # Tune pickles its settings for restoring: the live object stays here
            return {}

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._ended(trial)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._ended(trial, failed=True)

        def _ended(self, trial, failed=False):
            result = trial.last_result or {}
            rows = _rows(result, self.plan.seeds, self.plan.settings["epochs"], self.plan.objective)
            if failed:
                rows = [dict(row, state="failed", error="the Ray trial raised an error") for row in rows]
            values = {d.option: trial.config[d.option] for d in self.plan.dimensions}
            self.on_trial(self.numbers.setdefault(trial.trial_id, len(self.numbers)), values, rows, None)

    return Finished(plan, on_trial)
