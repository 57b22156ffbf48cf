"""Waiting for new Ray actors (the workers) to start, by their progress rather than by a
fixed time: on a busy machine a worker may need a minute to import the engine, which is
no failure; workers that cannot be placed because the cluster's CPUs are held (by another
RayTrainer of this process, or by other Ray jobs) never start, which is said at once.

A worker is placed when Ray has given it a process (the actor table's Pid, read from the
GCS without the dashboard); where that cannot be read (another Ray version), the wait
falls back to a fixed timeout.
"""
import sys
import time

from engine.distributed.cluster import ClusterUnavailable

POLL = 0.5            # seconds between looks at the workers
TELL_AFTER = 5.0      # seconds before saying on stderr what the wait is for
BLOCKED_GRACE = 1.0   # seconds CPUs may stay short while another trainer holds them (just closed ones free theirs)
BUSY_GRACE = 4.0      # seconds CPUs may stay short for reasons not known here (before the stderr line)
FREEING_GRACE = 30.0  # the same after killing a worker, whose CPUs Ray frees once its process ended
STARTING_LIMIT = 600.0  # seconds placed workers may take to start (import the engine) on a loaded machine


def wait_started(ray, actors, cpus_each, held_elsewhere, timeout, busy_grace=BUSY_GRACE, stream=None):
    """Return once every actor answers (its pid). Raises ClusterUnavailable (the cause)
    when the workers cannot be placed or do not start, GetTimeoutError when placement
    cannot be observed and `timeout` passed, RayActorError when one died while starting.

    held_elsewhere(): CPUs held by other live trainers of this process. busy_grace:
    seconds the CPUs may stay short for reasons not known here."""
    stream = sys.stderr if stream is None else stream
    pending = {actor.pid.remote(): actor for actor in actors}
    started = time.monotonic()
    short_since, told = None, False
    while True:
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL)
        for reference in ready:
            ray.get(reference)  # raises if the actor died
            del pending[reference]
        if not pending:
            return
        waited = time.monotonic() - started
        placed = [_placed(ray, actor) for actor in pending.values()]
        if None in placed:
            if waited > timeout:
                raise ray.exceptions.GetTimeoutError(f"the workers did not answer within {timeout:g}s")
            continue
        unplaced = placed.count(False)
        cause = shortage(ray, unplaced * cpus_each, held_elsewhere()) if unplaced else None
        if cause is None:
            short_since = None
        else:
            short_since = short_since or time.monotonic()
            grace = BLOCKED_GRACE if cause[1] else busy_grace
            if time.monotonic() - short_since > grace:
                raise ClusterUnavailable(cause[0])
        if waited > STARTING_LIMIT:
            raise ClusterUnavailable(f"{len(pending)} of {len(actors)} Ray workers were placed but did not "
                                     f"start within {STARTING_LIMIT:g}s")
        if not told and waited > TELL_AFTER:
            told = True
            starting = len(pending) - unplaced
            doing = ([f"{starting} placed, starting (importing the engine)"] if starting else []) + \
                    ([f"{unplaced} waiting for CPUs"] if unplaced else [])
            stream.write(f"waiting for {len(pending)} of {len(actors)} Ray workers to start: {', '.join(doing)}\n")
            stream.flush()


def wait_for_cpus(ray, need, held_elsewhere):
    """Return once the cluster has `need` CPUs free; ClusterUnavailable naming the cause
    when they stay held past the grace (held_elsewhere(): CPUs of this process's trainers)."""
    short_since = time.monotonic()
    while True:
        cause = shortage(ray, need, held_elsewhere())
        if cause is None:
            return
        if time.monotonic() - short_since > (BLOCKED_GRACE if cause[1] else BUSY_GRACE):
            raise ClusterUnavailable(cause[0])
        time.sleep(POLL)


def shortage(ray, need, held_elsewhere):
    """(why, held by another trainer) when the cluster's free CPUs are fewer than `need`,
    else None. held_elsewhere: CPUs other live trainers of this process hold."""
    free = ray.available_resources().get("CPU", 0.0)
    if free >= need:
        return None
    total = ray.cluster_resources().get("CPU", 0.0)
    if held_elsewhere and free + held_elsewhere >= need:  # closing the other trainer would free enough
        held = (f"the cluster's {total:g} CPUs are" if held_elsewhere >= total else
                f"{held_elsewhere:g} of the cluster's {total:g} CPUs are")
        return f"{held} held by another RayTrainer; close() it first (or use each trainer in a `with` block)", True
    return (f"the Ray workers cannot be placed: they need {need:g} more CPUs and the cluster has {free:g} "
            f"of its {total:g} free (other Ray jobs or trainers hold the rest)", False)


def _placed(ray, actor):
    """True once Ray has given the actor a process, False before; None if not known."""
    try:
        from ray._private import state

        record = state.actors(actor._actor_id.hex())
        return bool(record.get("Pid")) or record.get("State") == "ALIVE"
    except Exception:  # a private table: its absence only costs the progress information
        return None
