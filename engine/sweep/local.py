"""Sweeps on this machine: an Optuna study (TPE, random or grid sampler; Hyperband pruner
on the validation loss after each epoch), trials run in parallel threads by
study.optimize(n_jobs=...), the study kept in an Optuna journal file in the output
folder so an interrupted sweep resumes where it stopped.

One Optuna trial is one configuration: its seeds train together (engine/sweep/trial.py),
its intermediate value after epoch e is the mean over seeds of their best validation loss
so far (what the pruner compares), its value the mean of their scores (the objective,
engine/sweep/objective.py); each seed is a row of the results, kept with the trial (user
attribute "rows")."""
import contextlib
import os

from engine.sweep.trial import COMPLETE, PRUNED, run_trial

JOURNAL = "study.journal"
STUDY = "bptt-sweep"


class ExtraUnavailable(RuntimeError):
    """An optional dependency of sweeps (the `sweep` or `ray` extra) is not installed."""


def require_optuna():
    try:
        import optuna
    except ImportError:
        raise ExtraUnavailable("bptt sweep needs Optuna: pip install 'bptt[sweep]' "
                               "(or pip install optuna)") from None
    return optuna


def make_sampler(name, dimensions, seed):
    """Optuna's sampler `name` ("tpe", "random" or "grid"), seeded."""
    optuna = require_optuna()
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.GridSampler({d.option: d.grid() for d in dimensions}, seed=seed)


def suggest(trial, dimensions):
    """{train parameter name: value} drawn for an Optuna trial (named by option spelling)."""
    values = {}
    for d in dimensions:
        if d.choices is not None:
            values[d.name] = trial.suggest_categorical(d.option, d.choices)
        elif d.integer:
            values[d.name] = trial.suggest_int(d.option, d.low, d.high, log=d.log)
        else:
            values[d.name] = trial.suggest_float(d.option, d.low, d.high, log=d.log)
    return values


def open_study(output_dir, sampler, pruner, meta, resume):
    """The sweep's study in `output_dir`'s journal: new, or (resume) the stored one, whose
    settings must equal `meta` (the space, fixed settings, seeds and epochs)."""
    optuna = require_optuna()
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = os.path.join(output_dir, JOURNAL)
    if resume and not os.path.exists(path):
        raise ValueError(f"--resume: {output_dir} holds no sweep to resume (no {JOURNAL})")
    storage = JournalStorage(JournalFileBackend(path))
    with quiet_optuna():
        if resume:  # loading writes nothing (create_study(load_if_exists=True) logs a creation)
            try:
                study = optuna.load_study(study_name=STUDY, storage=storage, sampler=sampler, pruner=pruner)
            except KeyError:
                raise ValueError(f"--resume: {path} holds no bptt sweep") from None
        else:
            study = optuna.create_study(study_name=STUDY, storage=storage, sampler=sampler, pruner=pruner,
                                        direction="minimize")
    stored = study.user_attrs.get("sweep")
    if stored is None:
        study.set_user_attr("sweep", meta)
    elif stored != meta:
        changed = sorted(key for key in set(stored) | set(meta) if stored.get(key) != meta.get(key))
        raise ValueError(f"--resume: the sweep in {output_dir} was started with other settings "
                         f"({', '.join(changed)} differ); resume with the same options or use a new -o")
    return study


def finished_trials(study):
    """Configurations of the study's finished trials, in order: (number, values, rows).
    A trial still marked running was cut off by an interruption: it is not counted, and a
    resumed sweep runs another in its place."""
    optuna = require_optuna()
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    return [(trial.number, trial.params, trial.user_attrs["rows"]) for trial in study.trials
            if trial.state in done and "rows" in trial.user_attrs]


def run_local(plan, study, workers, on_trial):
    """Run trials until the study holds plan.trials finished ones. on_trial(number, values,
    rows, runs) after each is recorded in the study (runs: {seed: (model, trainer, data)}
    of completed seeds)."""
    optuna = require_optuna()
    remaining = plan.trials - len(finished_trials(study))
    ended = {}  # trial number -> (values, rows, runs), handed on once the study has recorded it

    def objective(trial):
        values = suggest(trial, plan.dimensions)

        def report(epoch, value, seed_losses):
            trial.report(value, epoch)
            return plan.prune and trial.should_prune()

        rows, runs = run_trial({**plan.settings, **values}, plan.seeds, plan.prepared, report, plan.objective)
        trial.set_user_attr("rows", rows)
        ended[trial.number] = ({d.option: values[d.name] for d in plan.dimensions}, rows, runs)
        states = {row["state"] for row in rows}
        if states == {COMPLETE}:
            return sum(row["score"] for row in rows) / len(rows)   # nan (a failed trial) if one is not scored
        if PRUNED in states:
            raise optuna.TrialPruned()
        return float("nan")  # a seed failed: Optuna records the trial as failed

    def recorded(study, trial):
        """After the journal holds the trial's end: its outputs follow it, never precede
        it (a best.npz of a trial a resumed sweep would not know)."""
        if trial.number in ended:
            on_trial(trial.number, *ended.pop(trial.number))

    if remaining > 0:
        with quiet_optuna():
            study.optimize(objective, n_trials=remaining, n_jobs=workers, callbacks=[recorded])


@contextlib.contextmanager
def quiet_optuna():
    """Optuna's per-trial log lines off (the sweep prints its own progress)."""
    optuna = require_optuna()
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)
