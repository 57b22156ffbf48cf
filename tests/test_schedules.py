"""Learning-rate schedules against their formulas and torch.optim.lr_scheduler."""
import json
import math
import warnings

import pytest

from engine.schedules import (Constant, Cosine, StepDecay, Warmup, make_schedule,
                              schedule_from_config)

BASE_LR = 0.1


def rates(schedule, steps, base_lr=BASE_LR):
    return [schedule(step, base_lr) for step in range(steps)]


def test_constant():
    assert rates(make_schedule("constant"), 5) == [BASE_LR] * 5
    assert make_schedule() == Constant() == make_schedule(None)


@pytest.mark.parametrize("step_size, gamma", [(1, 0.5), (3, 0.1), (7, 0.9)])
def test_step_decay_formula(step_size, gamma):
    schedule = make_schedule("step", step_size=step_size, gamma=gamma)
    for step, lr in enumerate(rates(schedule, 30)):
        assert lr == BASE_LR * gamma ** (step // step_size)
    assert StepDecay(4).gamma == 0.1


@pytest.mark.parametrize("total_steps, min_lr", [(1, 0.0), (10, 0.0), (25, 0.01)])
def test_cosine_formula_and_hold(total_steps, min_lr):
    schedule = make_schedule("cosine", total_steps=total_steps, min_lr=min_lr)
    values = rates(schedule, total_steps + 5)
    for step, lr in enumerate(values[:total_steps + 1]):
        expected = min_lr + (BASE_LR - min_lr) * (1 + math.cos(math.pi * step / total_steps)) / 2
        assert lr == pytest.approx(expected, rel=1e-15, abs=1e-18)
    assert values[0] == BASE_LR
    assert values[total_steps:] == [min_lr] * 5  # held at min_lr after total_steps
    assert all(a >= b for a, b in zip(values, values[1:]))  # never rises


def test_warmup_ramps_linearly_then_hands_over():
    schedule = make_schedule("step", step_size=2, gamma=0.5, warmup_steps=4)
    assert isinstance(schedule, Warmup) and schedule.start_factor == 0.25
    values = rates(schedule, 9)
    factors = [0.25 + 0.75 * step / 4 for step in range(4)]
    assert values[:4] == pytest.approx([BASE_LR * f for f in factors], rel=1e-15)
    assert values[0] == pytest.approx(BASE_LR / 4)  # base_lr / warmup_steps by default
    # then the wrapped schedule, counted from the end of the warm-up
    assert values[4:] == [BASE_LR, BASE_LR, BASE_LR / 2, BASE_LR / 2, BASE_LR / 4]


def test_warmup_start_factor_and_object_specs():
    cosine = Cosine(total_steps=10)
    schedule = make_schedule(cosine, warmup_steps=5, warmup_start_factor=0.6)
    assert schedule == Warmup(cosine, 5, start_factor=0.6)
    assert schedule(0, 1.0) == 0.6 and schedule(5, 1.0) == 1.0 and schedule(15, 1.0) == 0.0
    assert make_schedule(cosine) is cosine
    assert make_schedule("constant", warmup_steps=0) == Constant()


@pytest.mark.parametrize("schedule", [
    Constant(), StepDecay(5, gamma=0.3), Cosine(100, min_lr=1e-4),
    make_schedule("cosine", total_steps=50, warmup_steps=10),
    Warmup(Warmup(StepDecay(2), 3), 2, start_factor=0.1),
], ids=repr)
def test_config_round_trips_through_json(schedule):
    config = json.loads(json.dumps(schedule.config))
    rebuilt = schedule_from_config(config)
    assert rebuilt == schedule and rebuilt.config == schedule.config
    assert rates(rebuilt, 40) == rates(schedule, 40)


@pytest.mark.parametrize("build, error, match", [
    (lambda: make_schedule("linear"), ValueError, "'constant', 'step', 'cosine'"),
    (lambda: make_schedule("step"), ValueError, "step_size"),
    (lambda: make_schedule("step", step_size=0), ValueError, "step_size"),
    (lambda: make_schedule("step", step_size=2.5), TypeError, "step_size"),
    (lambda: make_schedule("step", step_size=2, gamma=0), ValueError, "gamma"),
    (lambda: make_schedule("cosine"), ValueError, "total_steps"),
    (lambda: make_schedule("cosine", total_steps=10, min_lr=-1), ValueError, "min_lr"),
    (lambda: make_schedule("cosine", total_steps=10, step_size=3), ValueError, "step_size"),
    (lambda: make_schedule("constant", warmup_steps=-1), ValueError, "warmup_steps"),
    (lambda: make_schedule("constant", warmup_steps=3, warmup_start_factor=0), ValueError, "start_factor"),
    (lambda: make_schedule("constant", warmup_steps=3, warmup_start_factor=1.5), ValueError, "start_factor"),
    (lambda: make_schedule("constant", warmup_start_factor=0.5), ValueError, "warmup_steps"),
    (lambda: make_schedule(Constant(), gamma=0.5), ValueError, "gamma"),
    (lambda: Warmup("cosine", 3), TypeError, "after"),
    (lambda: Constant()(-1, 0.1), ValueError, "step"),
    (lambda: Constant()(1.5, 0.1), TypeError, "step"),
    (lambda: Constant()(1, -0.1), ValueError, "base_lr"),
    (lambda: schedule_from_config({"name": "warmup", "warmup_steps": 3}), ValueError, "after"),
    (lambda: schedule_from_config({"name": "poly"}), ValueError, "name"),
    (lambda: schedule_from_config({"name": "step", "step_size": 2, "size": 3}), ValueError, "size"),
])
def test_bad_arguments(build, error, match):
    with pytest.raises(error, match=match):
        build()


def torch_rates(make_scheduler, steps):
    """The rate of each of `steps` updates under a torch scheduler (read before its step)."""
    torch = pytest.importorskip("torch")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    scheduler = make_scheduler(torch.optim.lr_scheduler, optimizer)
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scheduler.step() before optimizer.step()
        for _ in range(steps):
            values.append(optimizer.param_groups[0]["lr"])
            scheduler.step()
    return values


@pytest.mark.parametrize("schedule, make_scheduler, steps", [
    (StepDecay(3, gamma=0.5), lambda s, o: s.StepLR(o, step_size=3, gamma=0.5), 20),
    (Cosine(12, min_lr=0.01), lambda s, o: s.CosineAnnealingLR(o, T_max=12, eta_min=0.01), 13),
    (Warmup(Constant(), 5, start_factor=0.2),
     lambda s, o: s.LinearLR(o, start_factor=0.2, end_factor=1.0, total_iters=5), 10),
    (make_schedule("cosine", total_steps=8, min_lr=0.001, warmup_steps=4),
     lambda s, o: s.SequentialLR(o, [s.LinearLR(o, start_factor=0.25, total_iters=4),
                                     s.CosineAnnealingLR(o, T_max=8, eta_min=0.001)], milestones=[4]), 13),
], ids=repr)
def test_matches_torch(schedule, make_scheduler, steps):
    assert rates(schedule, steps) == pytest.approx(torch_rates(make_scheduler, steps), rel=1e-12)
