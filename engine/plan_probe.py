"""Measure the thread plan instead of trusting the model, where the model cannot tell.

The cost model (engine/thread_plan.py) is fitted on a quiet machine. Where it models
another plan within NEAR of its best, or where other processes leave fewer free cores
than the best plan has threads (by BUSY_CORES: on 2 cores, half a core used by others; a
hidden-block plan's threads meet every step, so one preempted thread stalls them all,
and a shard holds up the update's end), the Trainer times the candidates on the first
window of its data before its first update (once: a plan changed later would make the
run differ from the plan given explicitly): each candidate's chunk runs that window's
forward and backward once to warm up (and compile), then TIMED_PASSES times, the
candidates alternated in a rotating order; the lowest median wins (ties: the model's
order). The passes write into a scratch gradient from a zero state with masks drawn from
a copy of the trainer's generator, and no optimizer step is taken (clipping and the step
cost the same whatever the plan), so training is exactly that of the chosen plan given
explicitly.

Cost: at most MAX_CANDIDATES * (1 + TIMED_PASSES) window passes (12), and a 0.1 s sample
of the machine's load when there is no near tie (only for plans of several threads). In
mode "auto" the trainer's first fit or partial_fit call probes only when it makes at
least MIN_RUN_UPDATES updates, so the passes are at most 2% of its updates; a
hidden-block candidate's kernels also compile on first use (about 3 s for an LSTM in float32,
once: Numba caches them). Modes: "auto" (the default, or the environment variable
BPTT_PLAN), "model" (never measure) and "measure" (measure the best MAX_CANDIDATES plans
whenever there are two, however short the run).
"""
import os
import statistics
import time

from engine.machine_load import other_cores
from engine.thread_plan import plan_label, ranked_plans, shard_rows
from engine.validation import check_choice

MODES = ("auto", "model", "measure")
MODE_ENV = "BPTT_PLAN"
NEAR = 0.10             # a plan modelled within 10% of the best is a candidate
BUSY_CORES = 0.5        # busy: others leave a plan of n threads at most n - BUSY_CORES free cores
MAX_CANDIDATES = 3      # plans timed, at most (the model's best ones)
TIMED_PASSES = 3        # timed window passes per candidate, after one warm-up
MIN_RUN_UPDATES = 600   # "auto" probes a call that makes at least this many updates

clock = time.perf_counter  # the probe's timer (tests replace it)


def plan_mode(mode):
    """The Trainer's `plan` option: "auto", "model" or "measure"; None reads BPTT_PLAN
    (default "auto")."""
    if mode is None:
        return check_choice(MODE_ENV, os.environ.get(MODE_ENV, "auto"), MODES)
    return check_choice("plan", mode, MODES)


def candidates(mode, times, updates, cores):
    """(plans to time, reason, other processes' cores or None), or None to keep the
    model's best. times: {(shards, split): modelled seconds per step} (thread_plan.plan_times);
    updates: the updates the call about to train makes; cores: this process's cores."""
    ranked = ranked_plans(times)
    if mode == "model" or len(ranked) < 2:  # one core, or one stream and no hidden blocks
        return None
    if mode == "measure":
        return ranked[:MAX_CANDIDATES], "asked", None
    if updates < MIN_RUN_UPDATES:
        return None
    best = times[ranked[0]]
    near = [plan for plan in ranked if times[plan] <= best * (1 + NEAR)][:MAX_CANDIDATES]
    if len(near) > 1:
        return near, "near tie", None
    threads = ranked[0][0] * ranked[0][1]
    if threads == 1:  # one thread: nothing for a neighbour to stall
        return None
    load = other_cores()
    if cores - load <= threads - BUSY_CORES:
        return ranked[:MAX_CANDIDATES], "busy", load
    return None


def time_plans(build, run, plans, passes=TIMED_PASSES):
    """{plan: [seconds of each timed pass]}: build(plan) makes a plan's chunk, run(chunk)
    runs the window on it; one warm-up each, then `passes` rounds over the plans in a
    rotating order (drift on a shared machine affects them alike)."""
    chunks = {plan: build(plan) for plan in plans}
    for chunk in chunks.values():
        run(chunk)
    seconds = {plan: [] for plan in plans}
    for r in range(passes):
        for plan in plans[r % len(plans):] + plans[:r % len(plans)]:
            started = clock()
            run(chunks[plan])
            seconds[plan].append(clock() - started)
    return seconds


def fastest(seconds, plans):
    """The plan of lowest median seconds; ties go to the earlier of `plans`."""
    return min(plans, key=lambda plan: (statistics.median(seconds[plan]), plans.index(plan)))


def probe_record(plans, seconds, reason, load, batch):
    """What the thread plan records of a probe: chosen_by "measured", why, the load seen,
    the model's choice and each candidate's median seconds per window pass."""
    def label(plan):
        return plan_label({"shards": plan[0], "split": plan[1], "rows_per_shard": max(shard_rows(batch, plan[0]))})

    return {"chosen_by": "measured", "probe_reason": reason, "probe_other_cores": load,
            "model_choice": label(plans[0]),
            "probe_s": {label(plan): statistics.median(seconds[plan]) for plan in plans},
            "probe_passes": len(seconds[plans[0]])}
