"""What a sweep leaves in its folder, each file written atomically (engine/files.py):
results.csv (one row per trial and seed), summary.json (best settings, best validation
loss, per-setting importance), best.npz (a checkpoint evaluate/forecast use as they are)
and, with matplotlib, sensitivity.png (best validation loss against each swept setting)."""
import csv
import io
import json
import math
import statistics

import numpy as np

from engine.checkpoint import save
from engine.files import atomic_write
from engine.sweep.trial import COMPLETE, FAILED, PRUNED

MIN_TRIALS_FOR_IMPORTANCE = 4  # fANOVA on fewer completed configurations says little


def configuration(number, values, rows):
    """A trial's record: its number, swept values by option spelling, per-seed rows, and
    over the seeds the state (failed if any failed, pruned if stopped), mean and spread
    (standard deviation, 0 for one seed) of the best validation losses and of the scores
    (engine/sweep/objective.py; a row of an earlier version without one: its loss)."""
    states = {row["state"] for row in rows}
    state = FAILED if FAILED in states else PRUNED if PRUNED in states else COMPLETE
    loss, loss_spread = _mean_and_spread([row["best_val_loss"] for row in rows])
    score, score_spread = _mean_and_spread([row.get("score", row["best_val_loss"]) for row in rows])
    return {"trial": number, "values": dict(values), "state": state, "mean_val_loss": loss,
            "std_val_loss": loss_spread, "mean_score": score, "std_score": score_spread, "rows": rows}


def _mean_and_spread(numbers):
    """Mean and population standard deviation (0 for one) of the numbers that are not nan."""
    numbers = [number for number in numbers if not math.isnan(number)]
    return (statistics.fmean(numbers) if numbers else math.nan,
            statistics.pstdev(numbers) if len(numbers) > 1 else 0.0)


def best_row(record):
    """The row of a configuration's best seed: the lowest score."""
    return min(record["rows"], key=lambda row: _ranked(row.get("score", row["best_val_loss"])))


def _ranked(number):
    return math.inf if math.isnan(number) else number


def best_configuration(configurations):
    """The completed configuration with the lowest mean score, or None (none completed
    with a score)."""
    complete = [c for c in configurations if c["state"] == COMPLETE and not math.isnan(c["mean_score"])]
    return min(complete, key=lambda c: c["mean_score"]) if complete else None


def write_results(path, dimensions, configurations):
    """results.csv: trial, every swept setting under its option name, seed, epochs,
    best_val_loss, score, state, seconds, error."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["trial"] + [d.option for d in dimensions]
                    + ["seed", "epochs", "best_val_loss", "score", "state", "seconds", "error"])
    for c in configurations:
        for row in c["rows"]:
            writer.writerow([c["trial"]] + [c["values"][d.option] for d in dimensions]
                            + [row["seed"], row["epochs"], _number(row["best_val_loss"]),
                               _number(row.get("score", row["best_val_loss"])), row["state"],
                               f"{row['seconds']:.3f}", row["error"] or ""])
    with atomic_write(path, "w", newline="") as file:
        file.write(buffer.getvalue())


def summary(dimensions, configurations, best, settings, seeds, epochs, objective):
    """The summary.json record; best: the configuration best.npz holds (or None);
    objective: the Objective that ranked them."""
    importance, reason = importances(dimensions, configurations)
    counts = {state: sum(c["state"] == state for c in configurations) for state in (COMPLETE, PRUNED, FAILED)}
    return {"trials": len(configurations), "seeds": list(seeds), "epochs": epochs, **counts,
            "objective": {"name": objective.label, "description": objective.describe(),
                          "pruned_on": "the validation loss after each epoch"},
            "space": {d.option: d.spec() for d in dimensions},
            "fixed": {name: value for name, value in settings.items()
                      if name not in {d.name for d in dimensions}},
            "best": None if best is None else {
                "trial": best["trial"], "settings": best["values"], "val_loss": best["mean_val_loss"],
                "val_loss_std": best["std_val_loss"],
                "val_loss_per_seed": {row["seed"]: row["best_val_loss"] for row in best["rows"]},
                "score": best["mean_score"], "score_std": best["std_score"],
                "score_per_seed": {row["seed"]: row.get("score", row["best_val_loss"]) for row in best["rows"]}},
            "importance": importance, "importance_note": reason}


def importances(dimensions, configurations):
    """Optuna's fANOVA importance of each swept setting for the mean score over the
    completed configurations: ({option: share}, None), or (None, why not)."""
    import optuna

    complete = [c for c in configurations if c["state"] == COMPLETE and not math.isnan(c["mean_score"])]
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return None, (f"{len(complete)} completed trial(s); importance needs at least "
                      f"{MIN_TRIALS_FOR_IMPORTANCE}")
    varied = [d for d in dimensions if len({repr(c["values"][d.option]) for c in complete}) > 1]
    if not varied:
        return None, "no swept setting took more than one value among the completed trials"
    from engine.sweep.local import quiet_optuna

    distributions = {d.option: d.distribution() for d in dimensions}
    with quiet_optuna():
        study = optuna.create_study(direction="minimize")
        for c in complete:
            study.add_trial(optuna.trial.create_trial(params=c["values"], distributions=distributions,
                                                      value=c["mean_score"]))
        shares = optuna.importance.get_param_importances(study, params=[d.option for d in varied])
    return {name: float(share) for name, share in shares.items()}, None


def write_summary(path, record):
    with atomic_write(path, "w") as file:
        json.dump(json_ready(record), file, indent=2, default=_json_default)
        file.write("\n")


def save_best(path, run, configuration_record, seed):
    """best.npz: the best run's model and trainer with the data recipe, as `bptt train`
    writes it, plus the sweep's record of it (trial, swept settings, seed)."""
    model, trainer, data = run
    save(path, model, trainer, {"data": data.metadata, "sweep": {
        "trial": configuration_record["trial"], "settings": configuration_record["values"], "seed": seed}})


def plot_sensitivity(path, dimensions, configurations):
    """sensitivity.png: per swept setting, each configuration's mean best validation loss
    (seeds' standard deviation as error bars), completed in blue, pruned (their best
    before stopping) in grey; log axes where the range is log-scaled."""
    from engine.plots import require_matplotlib

    plt = require_matplotlib(path)
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
    figure, axes = plt.subplots(1, len(dimensions), figsize=(4.2 * len(dimensions), 3.6), squeeze=False)
    for axis, d in zip(axes[0], dimensions):
        categories = list(d.choices) if d.choices is not None and not _numeric(d.choices) else None
        for state, color, label in ((COMPLETE, "tab:blue", "complete"), (PRUNED, "0.6", "pruned (when stopped)")):
            shown = [c for c in configurations if c["state"] == state and not math.isnan(c["mean_val_loss"])]
            if not shown:
                continue
            x = [c["values"][d.option] for c in shown]
            x = [categories.index(value) for value in x] if categories else x
            axis.errorbar(x, [c["mean_val_loss"] for c in shown], yerr=[c["std_val_loss"] for c in shown],
                          fmt="o", color=color, capsize=3, label=label)
        best = best_configuration(configurations)
        if best is not None:
            value = best["values"][d.option]
            axis.plot(categories.index(value) if categories else value, best["mean_val_loss"], "*",
                      color="tab:red", markersize=13, label="best")
        if categories:
            axis.set_xticks(range(len(categories)), [str(value) for value in categories])
        elif d.log:
            axis.set_xscale("log")
            axis.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 1-2-5 ticks, even in one decade
            axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            axis.xaxis.set_minor_formatter(NullFormatter())
        if d.choices is not None and not categories:
            axis.set_xticks(sorted(d.choices))
        elif d.integer and not d.log:
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set(xlabel=d.option, ylabel="best validation loss", yscale="log")
        axis.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:   # no trial drawn (all failed): no legend
        axes[0][0].legend(fontsize=8)
    figure.suptitle("validation loss against each swept setting (mean over seeds, bars: std)")
    figure.tight_layout()
    with atomic_write(path) as file:
        figure.savefig(file, dpi=110, format="png")
    plt.close(figure)


def _numeric(values):
    return all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values)


def _number(value):
    return "" if math.isnan(value) else f"{value:.8g}"


def json_ready(value):
    """The record with NaN and infinities as null (JSON has no NaN)."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_default(value):
    return value.item() if isinstance(value, np.generic) else str(value)
