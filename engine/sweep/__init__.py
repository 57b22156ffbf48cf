"""Hyper-parameter sweeps (docs/sweeps.md): many configurations and seeds trained on
the same prepared data, searched and pruned by Optuna, on this machine or a Ray cluster.

    engine.sweep.run("data.csv", {"lr": "1e-4..1e-1:log", "hidden": [16, 32, 64]},
                     trials=20, seeds=3, epochs=10, output_dir="sweep", cell="gru", k1=25)

Settings are `bptt train`'s options by name (engine/sweep/space.py; without a space,
default_space.py's); a trial is a call of engine.train_series per seed on a series or a
panel prepared once per data setting (engine/sweep/trial.py), scored by objective.py;
local.py and ray_tune.py execute the trials; report.py writes the folder. Optuna (extra
`sweep`) and Ray (extra `ray`) are imported only when a sweep runs.
"""
import contextlib
import os
import shutil
import threading

from engine.checkpoint import CheckpointError, read_metadata
from engine.options import OPTIONS
from engine.panel import Panel, as_panel
from engine.pipeline import is_panel_source
from engine.series import as_series
from engine.sweep import data_identity, folder, report
from engine.sweep.default_space import default_space
from engine.sweep.local import ExtraUnavailable, open_study, require_optuna, run_local
from engine.sweep.progress import SweepProgress
from engine.sweep.objective import METRICS, Objective
from engine.sweep.space import (NOT_SETTINGS, UNIT_CHANGING, Dimension, SweepError, check_setting,
                                default_settings, parse_space, train_arguments)
from engine.sweep.trial import Prepared, run_trial
from engine.validation import check_choice, check_int

SAMPLERS = ("tpe", "random", "grid")
EXECUTORS = ("local", "ray")

__all__ = ["run", "SweepError", "ExtraUnavailable", "Dimension", "parse_space", "SAMPLERS", "EXECUTORS", "METRICS"]


class Plan:
    """Everything a trial needs: the swept dimensions, every other setting, the seeds, the
    number of trials, pruning, and the prepared data."""

    def __init__(self, dimensions, settings, seeds, trials, prune, prepared, objective):
        self.dimensions, self.settings, self.seeds = dimensions, settings, seeds
        self.trials, self.prune, self.prepared, self.objective = trials, prune, prepared, objective


def run(source, space=None, trials=20, seeds=1, epochs=None, executor="local", address=None,
        output_dir="sweep", sampler="tpe", prune=True, resume=False, workers=None, progress=None,
        key=None, time_column=None, metric=None, season=1, **train_options):
    """Sweep `space` ({train option: SPEC or list}, see engine/sweep/space.py; None: the
    default space of engine/sweep/default_space.py, sized to the data) over a series
    (path, Series or array) or a panel of series (a Panel, a directory or glob of files, or
    a table read with id_column= (long) or series_columns= (wide), as train_series reads
    it); key: the array of an .npz file, time_column: the column of time stamps (None: the
    first of dates; False or "none": none), as for train. trials: configurations to try
    (with --resume: in all); seeds: each configuration is trained with initialisation seeds seed, seed + 1, ... (train's
    `seed`, default 0); epochs: per trial (train's `epochs` otherwise); executor "local"
    (threads, `workers` trials at a time, default one per core and seed) or "ray" (Ray
    Tune on the cluster at `address`, "auto" or host:port); sampler "tpe", "random" or
    "grid"; prune: Optuna's Hyperband pruner (Ray: ASHA) on the validation loss after each
    epoch. metric: what ranks the configurations (engine/sweep/objective.py): None, the
    validation loss averaged over series, or "mase", "smape", "rmse" on the validation
    tails in original units, averaged over series (MASE against the seasonal naive
    forecast of period `season`); pruning uses the validation loss either way.
    train_options: any other `bptt train` option by parameter name, fixed.
    progress: a file for progress lines (None: none).

    Writes results.csv, summary.json, best.npz and sensitivity.png (with matplotlib) in
    output_dir, with the journal of the study, data.json (the data it runs on, which
    --resume must be given again) and, while it runs, the lock sweep.lock
    (engine/sweep/folder.py). Every value, setting and output file is checked before the
    first trial. Returns {"results": one dict per trial and seed, "configurations": one
    per trial with mean and spread over seeds, "best": the configuration best.npz holds
    (the best completed one) or None, "summary": the summary.json record}."""
    trials = check_int("trials", trials)
    seed_count = check_int("seeds", seeds)
    check_choice("sampler", sampler, SAMPLERS)
    check_choice("executor", executor, EXECUTORS)
    if workers is not None:
        workers = check_int("workers", workers)
    for name, flag in (("prune", prune), ("resume", resume)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False; got {type(flag).__name__} {flag!r}")
    if metric is not None:
        check_choice("metric", metric, METRICS)
    objective = Objective(metric, check_int("season", season))
    require_optuna()
    dimensions = parse_space(space) if space is not None else []   # None: the default space, sized below
    if space is None and sampler == "grid":
        raise SweepError("--sampler grid visits lists of values; the default space has ranges (lr, k1): "
                         "give the values with --space, or use --sampler tpe or random")
    _check_comparable(dimensions, objective, prune)
    _check_grid(sampler, dimensions)
    settings = _settings(train_options, dimensions, epochs)
    seed_list = [settings["seed"] + index for index in range(seed_count)]
    arguments = _check_settings(settings, dimensions)
    if executor == "ray" and resume:
        raise SweepError("--resume continues local sweeps (Optuna's journal); a Ray sweep starts afresh")
    if executor == "ray" and workers is not None:
        raise SweepError("--workers sets the local trials run at a time; a Ray sweep runs one trial per CPU "
                         "of the cluster")
    if executor == "local" and address is not None:
        raise SweepError(f"address {address!r} applies to executor 'ray' (--ray ADDRESS); a local sweep has none")
    _check_output_dir(output_dir, resume)
    folder.check_outputs(output_dir, inputs=[data_identity.source_path(source)])
    time_column = OPTIONS["time_column"].parse(time_column)
    read = _read(source, key, time_column, arguments["data_options"])
    if space is None:
        lengths = read.lengths if isinstance(read, Panel) else [len(read.values)]
        dimensions = parse_space(default_space(lengths, settings["val_fraction"], train_options))
    data = data_identity.identity(source, read, arguments["data_options"])
    if resume:
        data_identity.check_same(output_dir, data)
    prepared = Prepared(read, arguments["data_options"], time_column)
    if executor == "ray":
        prepared.prepare_ahead(settings, dimensions)   # shipped once, all of them
    plan = Plan(dimensions, settings, seed_list, trials, bool(prune), prepared, objective)
    meta = {"space": {d.option: d.spec() for d in dimensions}, "seeds": seed_list,
            "epochs": settings["epochs"], "sampler": sampler, "prune": bool(prune),
            **({"metric": objective.metric, "season": objective.season} if objective.metric else {}),
            "fixed": {name: repr(value) for name, value in sorted(settings.items())}}
    study = _open_study(plan, meta, sampler, output_dir, resume) if resume else None  # reads only
    with contextlib.ExitStack() as stack:
        if executor == "ray":
            from engine.sweep.ray_tune import connected, run_ray

            stack.enter_context(connected(address))  # an unreachable cluster fails before any write
        stack.enter_context(_claimed(output_dir, resume, data))
        writer = _Outputs(output_dir, plan, progress)
        if executor == "local":
            _run_local(plan, study or _open_study(plan, meta, sampler, output_dir, resume), workers, writer)
        else:
            writer.start(0)
            run_ray(plan, sampler, settings["seed"], writer.on_trial)
        return writer.finish()


def _read(source, key, time_column, data_options):
    """The data, read once: a Panel when train_series would read a panel (a Panel, files,
    id_column / series_columns / scale given), else a Series."""
    if is_panel_source(source, data_options):
        return as_panel(source, data_options.get("id_column"), data_options.get("series_columns"),
                        time_column, key)
    return as_series(source, key, time_column)


def _settings(train_options, dimensions, epochs):
    """Every train option's value: train's defaults, then the fixed options given."""
    settings = default_settings()
    for name, value in train_options.items():
        if name not in settings:
            why = "not a setting of a sweep" if name in NOT_SETTINGS else "not a bptt train option"
            raise SweepError(f"{name}: {why}")
        settings[name] = check_setting(name, value)
    swept_and_fixed = sorted({d.name for d in dimensions} & set(train_options))
    if swept_and_fixed:
        raise SweepError(f"--{swept_and_fixed[0].replace('_', '-')} is both swept (--space) and fixed")
    if len({d.name for d in dimensions}) != len(dimensions):
        raise SweepError("a setting is given twice in --space")
    if epochs is not None:
        settings["epochs"] = check_int("epochs", epochs)
    return settings


def _check_grid(sampler, dimensions):
    if sampler == "grid":
        for dimension in dimensions:
            dimension.grid()  # raises unless a list or an integer range


def _check_comparable(dimensions, objective, prune):
    """Settings that change the units of the prepared targets (UNIT_CHANGING: differencing,
    the panel's scaling) are swept only where trials still compare: ranked by a metric in
    original units, without pruning (which compares validation losses)."""
    changing = [d for d in dimensions if d.name in UNIT_CHANGING and len(d.choices) > 1]
    if not changing:
        return
    where = f"--space {changing[0].option}={changing[0].spec()}"
    if objective.metric is None:
        raise SweepError(f"{where}: it changes the units of the validation loss, so the losses of its "
                         f"values do not compare; rank the trials with --metric {'|'.join(METRICS)} "
                         "(original units)")
    if prune:
        raise SweepError(f"{where}: it changes the units of the validation loss that pruning compares; "
                         "give --no-prune")


def _check_settings(settings, dimensions):
    """train_series arguments of the first point of the space: bad fixed settings fail now,
    not in every trial."""
    first = {d.name: d.choices[0] if d.choices is not None else d.low for d in dimensions}
    arguments = train_arguments({**settings, **first})
    if not arguments["data_options"]["val_fraction"]:
        raise SweepError("--val-fraction 0: a sweep compares validation losses, it needs a validation tail")
    return arguments


def _check_output_dir(path, resume):
    """The output folder may be created, or is empty, or (resume) holds a sweep."""
    path = os.fspath(path)
    if not path:
        raise SweepError("-o: the output folder path is empty; give a folder name")
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        raise SweepError(f"-o {path}: exists and is not a directory")
    if os.path.isdir(path):
        if not os.access(path, os.W_OK | os.X_OK):
            raise SweepError(f"-o {path}: directory is not writable")
        if set(os.listdir(path)) - {folder.LOCK} and not resume:
            raise SweepError(f"-o {path}: directory is not empty; continue the sweep there with "
                             "--resume or choose a new directory")
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise SweepError(f"-o {path}: cannot create it, directory {parent} does not exist")
    if resume:
        raise SweepError(f"--resume: {path} does not exist, there is no sweep to resume")


@contextlib.contextmanager
def _claimed(output_dir, resume, data):
    """The output folder, created if need be and locked for the body: a new sweep's folder
    still empty once no other sweep can start there, the data it runs on recorded (a
    resumed sweep keeps the record it was started with)."""
    os.makedirs(output_dir, exist_ok=True)
    with folder.locked(output_dir):
        if not resume:
            _check_output_dir(output_dir, resume)
        if not resume or not os.path.exists(os.path.join(output_dir, data_identity.FILE_NAME)):
            data_identity.write(output_dir, data)
        yield


def _open_study(plan, meta, sampler, output_dir, resume):
    from engine.sweep.local import make_sampler

    optuna = require_optuna()
    pruner = (optuna.pruners.HyperbandPruner(min_resource=1, max_resource=plan.settings["epochs"])
              if plan.prune else optuna.pruners.NopPruner())
    return open_study(output_dir, make_sampler(sampler, plan.dimensions, plan.settings["seed"]),
                      pruner, meta, resume)


def _run_local(plan, study, workers, writer):
    from engine.sweep.local import finished_trials

    done = finished_trials(study)
    writer.start(len(done))
    for number, values, rows in done:
        writer.add(report.configuration(number, values, rows))
    if workers is None:
        workers = max(1, (os.cpu_count() or 1) // len(plan.seeds))
    run_local(plan, study, workers, writer.on_trial)


class _Outputs:
    """Collects finished trials and keeps the folder current after each one: summary.json,
    results.csv, and best.npz whenever a configuration beats the best so far.

    summary.json's best is always the configuration best.npz holds: both are written from
    the same record, best.npz first and summary.json right after it (its record computed
    before either is written), so a failed write leaves the pair as it was. A best whose
    models are not here (trained on a Ray worker, or before an interruption) is saved by
    finish(), retrained."""

    def __init__(self, output_dir, plan, stream):
        self.paths = {name: os.path.join(output_dir, name) for name in folder.RESULTS}
        self.plan = plan
        self.configurations = []
        self.saved_trial = _saved_trial(self.paths["best.npz"])  # the trial best.npz holds
        self.saved = None  # its record, once known
        self.progress = SweepProgress(plan.trials, stream, plan.objective) if stream is not None else None
        self._lock = threading.Lock()

    def start(self, done):
        """After the earlier trials were added: the folder rewritten from them (a summary
        left behind by an interruption is made to agree with best.npz again)."""
        with self._lock:
            self._publish()
        if self.progress is not None:
            self.progress.start(done)

    def add(self, record):
        self.configurations.append(record)
        if record["trial"] == self.saved_trial:
            self.saved = record

    def on_trial(self, number, values, rows, runs):
        """A finished trial (from the executor's threads): record, report, save."""
        record = report.configuration(number, values, rows)
        with self._lock:
            self.configurations.append(record)
            best = report.best_configuration(self.configurations)
            self._publish(best if best is record and runs is not None else None, runs)
            if self.progress is not None:
                self.progress.on_trial(record, best)

    def _publish(self, best=None, runs=None):
        """summary.json and results.csv; with `best` (a configuration and its runs) first
        best.npz, its best seed's model."""
        self.configurations.sort(key=lambda record: record["trial"])
        saved = best if best is not None else self.saved
        summary = report.summary(self.plan.dimensions, self.configurations, saved, self.plan.settings,
                                 self.plan.seeds, self.plan.settings["epochs"], self.plan.objective)
        if best is None:
            report.write_summary(self.paths["summary.json"], summary)
        else:
            row = report.best_row(best)
            with _restored_on_failure(self.paths["best.npz"]):
                report.save_best(self.paths["best.npz"], runs[row["seed"]], best, row["seed"])
                report.write_summary(self.paths["summary.json"], summary)
            self.saved = best
        self.summary = summary
        report.write_results(self.paths["results.csv"], self.plan.dimensions, self.configurations)

    def _retrain(self, record):
        """The runs of the configuration's best seed, trained here as the sweep trained it
        (same settings, seed, one shard), or None if that run does not complete now."""
        row = report.best_row(record)
        values = {d.name: record["values"][d.option] for d in self.plan.dimensions}
        _, runs = run_trial({**self.plan.settings, **values}, [row["seed"]], self.plan.prepared,
                            lambda *report: False, self.plan.objective)
        return runs if row["seed"] in runs else None

    def finish(self):
        """The last outputs (with the sensitivity plot) and the results."""
        from engine.plots import PlotUnavailable

        with self._lock:
            best = report.best_configuration(self.configurations)
            runs = self._retrain(best) if best is not None and best is not self.saved else None
            self._publish(best if runs is not None else None, runs)
            try:
                report.plot_sensitivity(self.paths["sensitivity.png"], self.plan.dimensions, self.configurations)
                self.summary["plot"] = "sensitivity.png"
            except PlotUnavailable:
                self.summary["plot"] = "not drawn: matplotlib is not installed (pip install matplotlib)"
            report.write_summary(self.paths["summary.json"], self.summary)
        if self.progress is not None:
            self.progress.finish()
        results = [{"trial": c["trial"], **c["values"], **row}
                   for c in self.configurations for row in c["rows"]]
        return {"results": results, "configurations": self.configurations,
                "best": self.saved, "summary": self.summary}


@contextlib.contextmanager
def _restored_on_failure(path):
    """The file at `path` as it was before the body, if the body fails (a hard link to it
    kept beside it meanwhile, a copy where links are not supported)."""
    previous = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.previous")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(previous)  # left by a killed sweep
    existed = os.path.exists(path)
    if existed:
        try:
            os.link(path, previous)
        except OSError:
            shutil.copy2(path, previous)
    try:
        yield
    except BaseException:
        if existed:
            os.replace(previous, path)  # (a no-op when path was not replaced: the same file)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(previous)


def _saved_trial(path):
    """The trial number of the best model an earlier (resumed) sweep saved, or None."""
    try:
        return read_metadata(path)["user"]["sweep"]["trial"]
    except (CheckpointError, KeyError, TypeError):
        return None
