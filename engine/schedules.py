"""Learning-rate schedules: lr = schedule(step, base_lr), step counting updates from 0.

Each schedule is a closed-form function of the step (nothing to carry, so a resumed run
needs only the step counter) with a JSON-able `config`:
    "constant"   base_lr
    "step"       base_lr * gamma ** (step // step_size)                  (torch StepLR)
    "cosine"     min_lr + (base_lr - min_lr) * (1 + cos(pi * step / total_steps)) / 2,
                 held at min_lr after total_steps                 (torch CosineAnnealingLR)
and a linear warm-up in front of any of them (see Warmup).
"""
import math

from engine.validation import check_float, check_int


class Schedule:
    """Base class. Subclasses set `name`, `options` (constructor argument names), the
    `required` ones among them, and implement `_rate(step, base_lr)`."""

    name = None
    options = ()
    required = ()

    def __call__(self, step, base_lr):
        """The learning rate of update `step` (0, 1, ...) for the base rate `base_lr`."""
        if not (type(step) is int and step >= 0):  # fast paths for the trainer's plain numbers
            step = check_int("step", step, minimum=0)
        if not (type(base_lr) is float and 0.0 <= base_lr < math.inf):
            base_lr = check_float("base_lr", base_lr, minimum=0.0)
        return float(self._rate(step, base_lr))

    @property
    def config(self):
        """JSON-able {"name": ..., options}; schedule_from_config rebuilds it."""
        return {"name": self.name, **{key: getattr(self, key) for key in self.options}}

    def __eq__(self, other):
        return type(other) is type(self) and other.config == self.config

    def __repr__(self):
        settings = ", ".join(f"{key}={getattr(self, key)!r}" for key in self.options)
        return f"{type(self).__name__}({settings})"


class Constant(Schedule):
    name = "constant"

    def _rate(self, step, base_lr):
        return base_lr


class StepDecay(Schedule):
    """base_lr * gamma ** (step // step_size), like torch.optim.lr_scheduler.StepLR."""

    name = "step"
    options = ("step_size", "gamma")
    required = ("step_size",)

    def __init__(self, step_size, gamma=0.1):
        self.step_size = check_int("step_size", step_size)
        self.gamma = check_float("gamma", gamma, minimum=0.0, strictly_greater=True)

    def _rate(self, step, base_lr):
        return base_lr * self.gamma ** (step // self.step_size)


class Cosine(Schedule):
    """Half a cosine from base_lr down to min_lr over total_steps, then min_lr; the
    closed form of torch.optim.lr_scheduler.CosineAnnealingLR(T_max=total_steps,
    eta_min=min_lr) for steps up to total_steps (torch's rate rises again after)."""

    name = "cosine"
    options = ("total_steps", "min_lr")
    required = ("total_steps",)

    def __init__(self, total_steps, min_lr=0.0):
        self.total_steps = check_int("total_steps", total_steps)
        self.min_lr = check_float("min_lr", min_lr, minimum=0.0)

    def _rate(self, step, base_lr):
        progress = min(step, self.total_steps) / self.total_steps
        return self.min_lr + (base_lr - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2


class Warmup(Schedule):
    """Linear warm-up for warmup_steps updates, then the schedule `after`.

    During the warm-up (step < warmup_steps) the rate is base_lr times
        start_factor + (1 - start_factor) * step / warmup_steps,
    torch LinearLR(start_factor, end_factor=1, total_iters=warmup_steps); start_factor
    defaults to 1 / warmup_steps, so the first update uses base_lr / warmup_steps.
    Afterwards the rate is after(step - warmup_steps, base_lr): the wrapped schedule
    starts counting when the warm-up ends (torch SequentialLR with milestones
    [warmup_steps]), so e.g. a cosine's total_steps excludes the warm-up."""

    name = "warmup"
    options = ("warmup_steps", "start_factor")
    required = ("warmup_steps",)

    def __init__(self, after, warmup_steps, start_factor=None):
        if not isinstance(after, Schedule):
            raise TypeError(f"after must be a schedule object; got {type(after).__name__}")
        self.after = after
        self.warmup_steps = check_int("warmup_steps", warmup_steps)
        if start_factor is None:
            start_factor = 1.0 / self.warmup_steps
        self.start_factor = check_float("start_factor", start_factor, minimum=0.0,
                                        strictly_greater=True)
        if self.start_factor > 1.0:
            raise ValueError(f"start_factor must be in (0, 1]; got {self.start_factor}")

    @property
    def config(self):
        return {**super().config, "after": self.after.config}

    def _rate(self, step, base_lr):
        if step < self.warmup_steps:
            ramp = step / self.warmup_steps
            return base_lr * (self.start_factor + (1 - self.start_factor) * ramp)
        return self.after._rate(step - self.warmup_steps, base_lr)

    def __repr__(self):
        return f"Warmup({self.after!r}, warmup_steps={self.warmup_steps}, start_factor={self.start_factor!r})"


SCHEDULES = {cls.name: cls for cls in (Constant, StepDecay, Cosine)}


def make_schedule(name="constant", warmup_steps=0, warmup_start_factor=None, **options):
    """A schedule by name ("constant", "step", "cosine"; None means "constant") with its
    options, or a schedule object as is; warmup_steps > 0 puts a linear Warmup
    (warmup_start_factor) in front."""
    if name is None:
        name = Constant.name
    if isinstance(name, Schedule):
        if options:
            raise ValueError(f"options {sorted(options)} apply to schedule names only; "
                             f"got the schedule object {name!r}")
        schedule = name
    elif name in SCHEDULES:
        schedule = _build(SCHEDULES[name], options)
    else:
        raise ValueError(f"schedule must be one of {', '.join(map(repr, SCHEDULES))}; got {name!r}")
    warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
    if warmup_steps == 0:
        if warmup_start_factor is not None:
            raise ValueError("warmup_start_factor needs warmup_steps > 0")
        return schedule
    return Warmup(schedule, warmup_steps, warmup_start_factor)


def schedule_from_config(config):
    """Rebuild a schedule from its `config` dict (as stored in checkpoints)."""
    names = (*SCHEDULES, Warmup.name)
    if not isinstance(config, dict) or config.get("name") not in names:
        raise ValueError(f"schedule config must be a dict whose 'name' is one of "
                         f"{', '.join(map(repr, names))}; got {config!r}")
    options = {key: value for key, value in config.items() if key != "name"}
    if config["name"] == Warmup.name:
        if "after" not in options:
            raise ValueError(f"warmup schedule config needs 'after' (the wrapped schedule's config); got {config!r}")
        after = schedule_from_config(options.pop("after"))
        return _build(Warmup, options, after)
    return _build(SCHEDULES[config["name"]], options)


def _build(cls, options, *leading):
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        raise ValueError(f"schedule {cls.name!r} has no options {unknown}; it takes {list(cls.options)}")
    missing = [key for key in cls.required if key not in options]
    if missing:
        raise ValueError(f"schedule {cls.name!r} needs {missing}")
    return cls(*leading, **options)
