"""Measuring the thread plan (engine/plan_probe.py): when the Trainer times its candidate
plans, that the choice follows the timings, that training equals the chosen plan given
explicitly, and that shards/split and a resumed checkpoint keep their plan. Timings and
the machine's load are faked where the test is about a decision."""
import numpy as np
import pytest

import engine
import engine.plan_probe as plan_probe
import engine.trainer as trainer_module
from engine.plan_probe import candidates, fastest, plan_mode, time_plans

QUIET_TIMES = {(1, 1): 1.0, (2, 1): 0.5}  # modelled s/step: two shards clearly best
NEAR_TIMES = {(1, 1): 0.53, (2, 1): 0.5}  # within NEAR


def _data(T=24, B=4):
    rng = np.random.default_rng(3)
    return rng.normal(size=(T, B, 2)).astype("float32"), rng.normal(size=(T, B, 1)).astype("float32")


def _trainer(**options):
    model = engine.Model("lstm", 2, 4, 1, seed=1, recurrent_dropout=0.25)  # masks: the generator matters
    return model, engine.Trainer(model, k1=4, k2=6, **options)


def _no_load(monkeypatch):
    def refuse():
        raise AssertionError("the machine's load was sampled")
    monkeypatch.setattr(plan_probe, "other_cores", refuse)


def _fake_timings(monkeypatch, per_plan):
    """The probe's timings: per_plan[(shards, split)] seconds for every pass. Records the
    plans it was asked to time."""
    asked = []

    def fake(build, run, plans, passes=plan_probe.TIMED_PASSES):
        asked.append(list(plans))
        for plan in plans:
            run(build(plan))  # the candidates' chunks are built and run as in a real probe
        return {plan: [per_plan[plan]] * passes for plan in plans}

    monkeypatch.setattr(trainer_module, "time_plans", fake)
    return asked


# ------------------------------------------------------------------- the rules

def test_a_near_tie_is_measured_without_sampling_the_load(monkeypatch):
    _no_load(monkeypatch)
    plans, reason, load = candidates("auto", NEAR_TIMES, plan_probe.MIN_RUN_UPDATES, 2)
    assert plans == [(2, 1), (1, 1)] and reason == "near tie" and load is None


def test_a_clear_best_is_measured_only_on_a_busy_machine(monkeypatch):
    updates = plan_probe.MIN_RUN_UPDATES
    monkeypatch.setattr(plan_probe, "other_cores", lambda: plan_probe.BUSY_CORES - 0.01)
    assert candidates("auto", QUIET_TIMES, updates, 2) is None
    monkeypatch.setattr(plan_probe, "other_cores", lambda: plan_probe.BUSY_CORES)
    assert candidates("auto", QUIET_TIMES, updates, 2) == ([(2, 1), (1, 1)], "busy", plan_probe.BUSY_CORES)
    assert candidates("auto", QUIET_TIMES, updates, 4) is None  # two cores of four still free for two threads
    monkeypatch.setattr(plan_probe, "other_cores", lambda: 2.5)
    assert candidates("auto", QUIET_TIMES, updates, 4) == ([(2, 1), (1, 1)], "busy", 2.5)


def test_no_probe_where_the_plan_is_obvious_or_the_run_short(monkeypatch):
    _no_load(monkeypatch)
    long = plan_probe.MIN_RUN_UPDATES
    assert candidates("auto", {(1, 1): 1.0}, long, 1) is None  # one core, or one stream
    assert candidates("measure", {(1, 1): 1.0}, long, 1) is None
    assert candidates("auto", {(1, 1): 0.5, (2, 1): 1.0}, long, 2) is None  # one thread, clear best: no load
    assert candidates("auto", NEAR_TIMES, long - 1, 2) is None  # the probe would cost over 2% of the run
    assert candidates("model", NEAR_TIMES, long, 2) is None


def test_measure_times_the_best_few_however_short_the_run(monkeypatch):
    _no_load(monkeypatch)
    times = {(1, 1): 4.0, (2, 1): 1.0, (3, 1): 2.0, (4, 1): 3.0, (1, 2): 1.5}
    plans, reason, _ = candidates("measure", times, 1, 4)
    assert plans == [(2, 1), (1, 2), (3, 1)] and len(plans) == plan_probe.MAX_CANDIDATES and reason == "asked"


def test_time_plans_warms_up_then_alternates(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(plan_probe, "clock", lambda: now[0])
    order = []

    def run(chunk):
        order.append(chunk)
        now[0] += {"a": 2.0, "b": 1.0, "c": 3.0}[chunk]

    seconds = time_plans(lambda plan: plan, run, ["a", "b", "c"], passes=3)
    assert order == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert seconds == {"a": [2.0] * 3, "b": [1.0] * 3, "c": [3.0] * 3}
    assert fastest(seconds, ["a", "b", "c"]) == "b"
    assert fastest({"a": [1.0, 5.0, 1.0], "b": [1.0, 1.0, 1.0]}, ["b", "a"]) == "b"  # medians tie: order


def test_plan_mode_reads_the_environment(monkeypatch):
    monkeypatch.delenv(plan_probe.MODE_ENV, raising=False)
    assert plan_mode(None) == "auto"
    monkeypatch.setenv(plan_probe.MODE_ENV, "model")
    assert plan_mode(None) == "model" and plan_mode("measure") == "measure"
    monkeypatch.setenv(plan_probe.MODE_ENV, "fastest")
    with pytest.raises(ValueError, match="BPTT_PLAN must be one of"):
        engine.Trainer(engine.Model("lstm", 1, 4))
    with pytest.raises(ValueError, match="plan must be one of"):
        engine.Trainer(engine.Model("lstm", 1, 4), plan="fastest")


# ------------------------------------------------------------------- the Trainer

@pytest.mark.parametrize("winner", [(1, 1), (2, 1)])
def test_the_trainer_keeps_the_faster_plan_and_records_the_timings(monkeypatch, winner):
    timings = {(1, 1): 2e-3, (2, 1): 2e-3}
    timings[winner] = 1e-3
    asked = _fake_timings(monkeypatch, timings)
    monkeypatch.setattr(trainer_module, "model_plan_times", lambda *args: NEAR_TIMES)
    monkeypatch.setattr(plan_probe, "MIN_RUN_UPDATES", 12)
    _no_load(monkeypatch)
    x, y = _data()
    _, trainer = _trainer()
    trainer.fit(x, y, epochs=2)  # 12 updates
    assert asked == [[(2, 1), (1, 1)]]
    plan = trainer.thread_plan
    assert (plan["shards"], plan["split"]) == winner and plan["chosen_by"] == "measured"
    assert plan["probe_reason"] == "near tie" and plan["model_choice"] == "2x2"
    assert plan["probe_s"] == {"2x2": timings[2, 1], "1x4": timings[1, 1]} and plan["probe_passes"] == 3
    assert all(len(chunk.slices) == winner[0] for chunk in trainer._chunks.values())


def test_auto_measures_a_busy_machine_only(monkeypatch):
    asked = _fake_timings(monkeypatch, {(1, 1): 1e-3, (2, 1): 2e-3})
    monkeypatch.setattr(trainer_module, "model_plan_times", lambda *args: QUIET_TIMES)
    monkeypatch.setattr(plan_probe, "MIN_RUN_UPDATES", 6)
    monkeypatch.setattr(trainer_module, "available_cores", lambda: 2)
    x, y = _data()
    monkeypatch.setattr(plan_probe, "other_cores", lambda: 0.0)
    _, quiet = _trainer()
    quiet.fit(x, y)
    assert asked == [] and quiet.thread_plan["chosen_by"] == "model"
    monkeypatch.setattr(plan_probe, "other_cores", lambda: 1.0)
    _, busy = _trainer()
    busy.fit(x, y)
    assert asked == [[(2, 1), (1, 1)]] and busy.thread_plan["probe_reason"] == "busy"
    assert busy.thread_plan["shards"] == 1 and busy.thread_plan["probe_other_cores"] == 1.0
    _, model_only = _trainer(plan="model")
    model_only.fit(x, y)
    _, short = _trainer()
    short.fit(x[:20], y[:20])  # 5 updates
    assert len(asked) == 1


def test_no_probe_when_the_candidates_do_not_fit_in_memory(monkeypatch):
    asked = _fake_timings(monkeypatch, {(1, 1): 1e-3, (2, 1): 2e-3})
    monkeypatch.setattr(trainer_module, "available_bytes", lambda: 1024)  # the probe's view only
    x, y = _data()
    _, trainer = _trainer(plan="measure")
    trainer.fit(x, y)
    assert asked == [] and trainer.thread_plan["chosen_by"] == "model"


def _same_training(trainer, reference):
    """Parameters, optimizer state, generator and update records alike, bit for bit."""
    return (np.array_equal(trainer.model.params, reference.model.params)
            and all(np.array_equal(trainer.optimizer_state[key], reference.optimizer_state[key])
                    for key in reference.optimizer_state)
            and trainer.rng.bit_generator.state == reference.rng.bit_generator.state
            and trainer.history.updates == reference.history.updates)


@pytest.mark.parametrize("winner", [(1, 1), (2, 1), (1, 2)])
def test_training_equals_the_measured_plan_given_explicitly(monkeypatch, winner):
    """Whichever candidate the probe keeps (its chunks built and run on the first window,
    the timings faked), the run equals that plan given explicitly."""
    timings = {(1, 1): 2e-3, (2, 1): 2e-3, (1, 2): 2e-3}
    timings[winner] = 1e-3
    _fake_timings(monkeypatch, timings)
    monkeypatch.setattr(trainer_module, "model_plan_times", lambda *args: dict.fromkeys(timings, 1.0))
    x, y = _data()
    _, measured = _trainer(plan="measure")
    measured.fit(x, y, epochs=2)
    assert (measured.thread_plan["shards"], measured.thread_plan["split"]) == winner
    _, reference = _trainer(shards=winner[0], split=winner[1])
    reference.fit(x, y, epochs=2)
    assert _same_training(measured, reference)


def test_a_real_probe_leaves_training_as_the_chosen_plan_given_explicitly():
    """Timed for real: whichever plan wins, the run is that plan's, and not the other's
    (one shard and two differ in their last bits, so the comparison can fail)."""
    x, y = _data()
    _, measured = _trainer(plan="measure")
    measured.fit(x, y, epochs=2)
    plan = measured.thread_plan
    assert plan["chosen_by"] == "measured" and set(plan["probe_s"]) == {"1x4", "2x2"}
    for shards in (1, 2):
        _, reference = _trainer(shards=shards)
        reference.fit(x, y, epochs=2)
        assert _same_training(measured, reference) == (shards == plan["shards"])


def test_explicit_shards_or_split_are_never_measured(monkeypatch):
    asked = _fake_timings(monkeypatch, {(1, 1): 1e-3, (2, 1): 2e-3})
    x, y = _data()
    for option in ({"shards": 2}, {"split": 2}, {"shards": 1}):
        _, trainer = _trainer(plan="measure", **option)
        trainer.fit(x, y)
        assert trainer.thread_plan["chosen_by"] == "explicit"
    assert asked == []


def test_a_resumed_run_keeps_its_measured_plan(monkeypatch, tmp_path):
    asked = _fake_timings(monkeypatch, {(1, 1): 2e-3, (2, 1): 1e-3})
    x, y = _data()
    model, trainer = _trainer(plan="measure")
    trainer.fit(x, y)
    assert asked == [[(1, 1), (2, 1)]] and trainer.thread_plan["shards"] == 2  # the model's best is 1x4
    engine.save(tmp_path / "run.npz", model, trainer)
    monkeypatch.setenv(plan_probe.MODE_ENV, "measure")
    _, resumed = engine.load(tmp_path / "run.npz")
    resumed.fit(x, y)
    assert len(asked) == 1  # not measured again
    assert resumed.thread_plan["chosen_by"] == "measured" and resumed.thread_plan["shards"] == 2
    assert all(len(chunk.slices) == 2 for chunk in resumed._chunks.values())
    _, other = engine.load(tmp_path / "run.npz")
    other.fit(x[:, :3], y[:, :3])  # another batch size: the model's plan, still not measured
    assert len(asked) == 1 and other.thread_plan["chosen_by"] == "model"


# ------------------------------------------------------------------- the benchmark

def test_busy_records_time_every_plan_quiet_and_busy():
    from bench import format_table
    from bench.plans import busy_records

    records = busy_records("tiny", rounds=2, round_s=0.01)  # 16 streams, H 32: 1x16, 2x8 on 2 cores
    assert [r["plan"] for r in records] == [f"{s}x{-(-16 // s)}" for s in range(1, len(records) + 1)]
    for r in records:
        assert r["kind"] == "busy_core" and r["ratio"] == r["busy_s"] / r["quiet_s"] and r["rounds"] == 2
        assert r["quiet_s"] > 0 and r["busy_s"] > 0 and r["modelled_s"] > 0
    table = format_table(records)
    assert "Thread plans beside a busy core" in table and all(r["plan"] in table for r in records)


def test_the_busy_neighbour_burns_only_inside_its_block():
    from bench.plans import BusyNeighbour

    with BusyNeighbour() as neighbour:
        assert neighbour.process.poll() is None  # running
    assert neighbour.process.returncode is not None  # stopped and reaped
    with BusyNeighbour(active=False) as idle:
        assert idle.process is None


def test_a_bad_BPTT_PLAN_stops_bptt_train_before_any_work(tmp_path):
    from click.testing import CliRunner

    from cli import main

    series = tmp_path / "s.csv"
    series.write_text("y\n" + "\n".join(str(np.sin(t / 5)) for t in range(100)) + "\n")
    result = CliRunner().invoke(main, ["train", str(series), "-o", str(tmp_path / "m.npz"), "--epochs", "1",
                                       "--hidden", "4"], env={plan_probe.MODE_ENV: "fastest"})
    assert result.exit_code == 2 and result.output.strip().startswith("Error: BPTT_PLAN must be one of")
    assert "Traceback" not in result.output and not (tmp_path / "m.npz").exists()
