"""Optimizers with torch.optim's update rules, defaults and argument names.

An optimizer is a pair of functions over flat buffers, after optax:
    state = opt.init(params)              # moments shaped like params (P,), and "step"
    opt.step(params, grads, state, lr)    # in place, one fused kernel pass
The state holds arrays only (torch's buffer names and a 0-d int64 "step", the number of
updates made), so a checkpoint stores it with np.savez. The learning rate of each update
comes from the caller (the scheduled rate); `opt.lr` is the base rate.

Composition stops at "clip, then optimize" (engine.clip): splitting an optimizer into
chained pieces (weight decay, moment scaling, learning rate) would cost a pass over the
buffers per piece, so each optimizer is one fused kernel from kernels.optim.
"""
import math
import numbers

import numpy as np

from engine.validation import check_float
from kernels.optim import adam_update, rmsprop_update, sgd_update

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Optimizer:
    """Base class: hyper-parameters, validation and the (init, step) protocol.

    Subclasses set `name`, `hyperparameters` (constructor argument names, in order),
    `buffer_names()` (the moment buffers their settings need) and `_update`."""

    name = None
    hyperparameters = ()

    @property
    def config(self):
        """JSON-able {"name": ..., hyper-parameters}; optimizer_from_config rebuilds it."""
        config = {"name": self.name}
        for key in self.hyperparameters:
            value = getattr(self, key)
            config[key] = list(value) if isinstance(value, tuple) else value
        return config

    def buffer_names(self):
        return ()

    def init(self, params):
        """Fresh state for `params` (P,): zero moment buffers of its shape and dtype."""
        params = _check_buffer("params", params)
        state = {key: np.zeros_like(params) for key in self.buffer_names()}
        state["step"] = np.zeros((), np.int64)
        return state

    def step(self, params, grads, state, lr):
        """One update of `params` (P,) in place from `grads` (P,), the moments in `state`
        (updated in place, "step" incremented) and the learning rate `lr` of this update."""
        params = _check_buffer("params", params)
        grads = _check_buffer("grads", grads, like=params, in_place=False)
        if not (type(lr) is float and 0.0 <= lr < math.inf):  # fast path for plain floats
            lr = check_float("lr", lr, minimum=0.0)
        names = self.buffer_names()
        counter = state.get("step") if isinstance(state, dict) else None
        if (not isinstance(counter, np.ndarray) or counter.shape != () or counter.dtype.kind != "i"
                or any(key not in state for key in names)):
            raise ValueError(f"state must be the dict made by {self!r}.init(params): buffers "
                             f"{list(names)} and a 0-d integer array 'step'")
        buffers = {key: _check_buffer(f"state[{key!r}]", state[key], like=params) for key in names}
        step = int(counter) + 1  # torch counts from 1 at the first update
        self._update(params.reshape(-1), grads.reshape(-1), buffers, lr, step, params.dtype.type)
        counter[...] = step

    def __eq__(self, other):
        return type(other) is type(self) and other.config == self.config

    def __repr__(self):
        settings = ", ".join(f"{key}={getattr(self, key)!r}" for key in self.hyperparameters)
        return f"{type(self).__name__}({settings})"


class SGD(Optimizer):
    """torch.optim.SGD: g = grad + weight_decay * p; with momentum, b = g on the first
    step, then b = momentum * b + (1 - dampening) * g, and g = g + momentum * b (nesterov)
    or g = b; p -= lr * g."""

    name = "sgd"
    hyperparameters = ("lr", "momentum", "dampening", "weight_decay", "nesterov")  # torch's order

    def __init__(self, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        self.lr = check_float("lr", lr, minimum=0.0)
        self.momentum = check_float("momentum", momentum, minimum=0.0)
        self.dampening = check_float("dampening", dampening)
        self.weight_decay = check_float("weight_decay", weight_decay, minimum=0.0)
        self.nesterov = _check_bool("nesterov", nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov=True requires momentum > 0 and dampening = 0; "
                             f"got momentum={self.momentum}, dampening={self.dampening}")

    def buffer_names(self):
        return ("momentum_buffer",) if self.momentum != 0 else ()

    def _update(self, params, grads, buffers, lr, step, cast):
        sgd_update(params, buffers.get("momentum_buffer", params[:0]), grads, cast(lr),
                   cast(self.weight_decay), cast(self.momentum), cast(1 - self.dampening),
                   self.nesterov, step == 1)


class Adam(Optimizer):
    """torch.optim.Adam: g = grad + weight_decay * p (L2); m = beta1 m + (1 - beta1) g;
    v = beta2 v + (1 - beta2) g^2; vmax = max(vmax, v) with amsgrad;
    p -= lr / (1 - beta1^t) * m / (sqrt(v or vmax) / sqrt(1 - beta2^t) + eps)."""

    name = "adam"
    hyperparameters = ("lr", "betas", "eps", "weight_decay", "amsgrad")
    decoupled_weight_decay = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        self.lr = check_float("lr", lr, minimum=0.0)
        self.betas = _check_betas(betas)
        self.eps = check_float("eps", eps, minimum=0.0)
        self.weight_decay = check_float("weight_decay", weight_decay, minimum=0.0)
        self.amsgrad = _check_bool("amsgrad", amsgrad)

    def buffer_names(self):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.amsgrad else ())

    def _update(self, params, grads, buffers, lr, step, cast):
        beta1, beta2 = self.betas
        if self.decoupled_weight_decay:
            weight_decay, decay_factor = 0.0, 1 - lr * self.weight_decay
        else:
            weight_decay, decay_factor = self.weight_decay, 1.0
        adam_update(params, buffers["exp_avg"], buffers["exp_avg_sq"],
                    buffers.get("max_exp_avg_sq", params[:0]), grads,
                    cast(lr / (1 - beta1 ** step)), cast(beta1), cast(1 - beta1), cast(beta2),
                    cast(1 - beta2), cast((1 - beta2 ** step) ** 0.5), cast(self.eps),
                    cast(weight_decay), cast(decay_factor))


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay, p *= 1 - lr * weight_decay
    before the Adam step (the gradient is not changed)."""

    name = "adamw"
    decoupled_weight_decay = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(lr, betas, eps, weight_decay, amsgrad)


class RMSprop(Optimizer):
    """torch.optim.RMSprop: g = grad + weight_decay * p; s = alpha s + (1 - alpha) g^2;
    centered: a = alpha a + (1 - alpha) g, s~ = s - a^2 (else s~ = s);
    d = g / (sqrt(s~) + eps); with momentum b = momentum b + d, p -= lr b; else p -= lr d."""

    name = "rmsprop"
    hyperparameters = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        self.lr = check_float("lr", lr, minimum=0.0)
        self.alpha = check_float("alpha", alpha, minimum=0.0)
        self.eps = check_float("eps", eps, minimum=0.0)
        self.weight_decay = check_float("weight_decay", weight_decay, minimum=0.0)
        self.momentum = check_float("momentum", momentum, minimum=0.0)
        self.centered = _check_bool("centered", centered)

    def buffer_names(self):
        return (("square_avg",) + (("grad_avg",) if self.centered else ())
                + (("momentum_buffer",) if self.momentum > 0 else ()))

    def _update(self, params, grads, buffers, lr, step, cast):
        rmsprop_update(params, buffers["square_avg"], buffers.get("grad_avg", params[:0]),
                       buffers.get("momentum_buffer", params[:0]), grads, cast(lr),
                       cast(self.alpha), cast(1 - self.alpha), cast(self.eps),
                       cast(self.weight_decay), cast(self.momentum))


OPTIMIZERS = {cls.name: cls for cls in (SGD, Adam, AdamW, RMSprop)}


def make_optimizer(spec, lr=None):
    """An optimizer from a name ("sgd", "adam", "adamw", "rmsprop": torch's defaults, and
    `lr` when given) or an Optimizer object (a copy with `lr` replaced when given)."""
    if isinstance(spec, Optimizer):
        return spec if lr is None else optimizer_from_config({**spec.config, "lr": lr})
    if not isinstance(spec, str):
        raise TypeError(f"optimizer must be a name or an engine.optim optimizer object; "
                        f"got {type(spec).__name__}")
    if spec not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(map(repr, OPTIMIZERS))}; got {spec!r}")
    return OPTIMIZERS[spec]() if lr is None else OPTIMIZERS[spec](lr=lr)


def optimizer_from_config(config):
    """Rebuild an optimizer from its `config` dict (as stored in checkpoints)."""
    if not isinstance(config, dict) or config.get("name") not in OPTIMIZERS:
        raise ValueError(f"optimizer config must be a dict whose 'name' is one of "
                         f"{', '.join(map(repr, OPTIMIZERS))}; got {config!r}")
    cls = OPTIMIZERS[config["name"]]
    options = {key: value for key, value in config.items() if key != "name"}
    unknown = sorted(set(options) - set(cls.hyperparameters))
    if unknown:
        raise ValueError(f"optimizer config for {cls.name!r} has unknown keys {unknown}; "
                         f"expected some of {list(cls.hyperparameters)}")
    return cls(**options)


def _check_buffer(name, array, like=None, in_place=True):
    """A C-contiguous float32/float64 ndarray, of `like`'s shape and dtype if given, and
    writeable if it is updated `in_place`."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array; got {type(array).__name__}")
    if like is not None and (array.shape != like.shape or array.dtype != like.dtype):
        raise ValueError(f"{name} must have the shape {like.shape} and dtype {like.dtype} of params; "
                         f"got {array.shape} {array.dtype}")
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64; got {array.dtype}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if in_place and not array.flags.writeable:
        raise ValueError(f"{name} must be writeable (it is updated in place)")
    return array


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {type(value).__name__} {value!r}")
    return bool(value)


def _check_betas(betas):
    if (not isinstance(betas, (tuple, list)) or len(betas) != 2
            or not all(isinstance(b, numbers.Real) and not isinstance(b, bool) for b in betas)):
        raise TypeError(f"betas must be a pair (beta1, beta2) of numbers; got {betas!r}")
    for index, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"betas[{index}] must be in [0, 1); got {beta}")
    return (float(betas[0]), float(betas[1]))
