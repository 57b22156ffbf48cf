"""Optimizers against NumPy transcriptions of torch.optim's documented algorithms, and
against torch.optim itself when it is installed."""
import io
import itertools
import json

import numba
import numpy as np
import pytest

from engine.optim import (SGD, Adam, AdamW, RMSprop, make_optimizer, optimizer_from_config)
from kernels.config import JIT_OPTIONS
from kernels.optim import adam_update, rmsprop_update, sgd_update

P = 37  # parameters: odd, so vectorised loops also run their scalar tail
STEPS = 6
LR_FACTORS = (1.0, 0.5, 2.0, 1.0, 0.25, 1.5)  # a changing scheduled rate, times opt.lr


# --- NumPy transcriptions of the algorithms in torch.optim's documentation (float64) ---

def reference_sgd(p, grads, lrs, momentum, dampening, weight_decay, nesterov):
    p, b = p.astype(np.float64), None
    for g, lr in zip(grads, lrs):
        g = g + weight_decay * p
        if momentum != 0:
            b = g.copy() if b is None else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        p = p - lr * g
    return p, {"momentum_buffer": b}


def reference_adam(p, grads, lrs, betas, eps, weight_decay, amsgrad, decoupled):
    beta1, beta2 = betas
    p = p.astype(np.float64)
    m, v, v_max = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** t)
        if amsgrad:
            v_max = np.maximum(v_max, v)
            v_hat = v_max / (1 - beta2 ** t)
        else:
            v_hat = v / (1 - beta2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p, {"exp_avg": m, "exp_avg_sq": v, "max_exp_avg_sq": v_max}


def reference_rmsprop(p, grads, lrs, alpha, eps, weight_decay, momentum, centered):
    p = p.astype(np.float64)
    s, a, b = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for g, lr in zip(grads, lrs):
        g = g + weight_decay * p
        s = alpha * s + (1 - alpha) * g * g
        s_tilde = s
        if centered:
            a = alpha * a + (1 - alpha) * g
            s_tilde = s - a * a
        if momentum > 0:
            b = momentum * b + g / (np.sqrt(s_tilde) + eps)
            p = p - lr * b
        else:
            p = p - lr * g / (np.sqrt(s_tilde) + eps)
    return p, {"square_avg": s, "grad_avg": a, "momentum_buffer": b}


def reference(opt, p, grads, lrs):
    if isinstance(opt, SGD):
        return reference_sgd(p, grads, lrs, opt.momentum, opt.dampening, opt.weight_decay,
                             opt.nesterov)
    if isinstance(opt, Adam):
        return reference_adam(p, grads, lrs, opt.betas, opt.eps, opt.weight_decay, opt.amsgrad,
                              isinstance(opt, AdamW))
    return reference_rmsprop(p, grads, lrs, opt.alpha, opt.eps, opt.weight_decay, opt.momentum,
                             opt.centered)


def _sgd_cases():
    for momentum, dampening, weight_decay, nesterov in itertools.product(
            (0.0, 0.9), (0.0, 0.3), (0.0, 0.05), (False, True)):
        if not nesterov or (momentum > 0 and dampening == 0):
            yield SGD(lr=0.1, momentum=momentum, dampening=dampening,
                      weight_decay=weight_decay, nesterov=nesterov)


OPTIMIZERS = [
    *_sgd_cases(),
    *(cls(lr=0.01, weight_decay=weight_decay, amsgrad=amsgrad)
      for cls, weight_decay, amsgrad in itertools.product((Adam, AdamW), (0.0, 0.1), (False, True))),
    Adam(lr=0.05, betas=(0.5, 0.8), eps=1e-3),
    *(RMSprop(lr=0.01, weight_decay=weight_decay, momentum=momentum, centered=centered)
      for weight_decay, momentum, centered in itertools.product((0.0, 0.1), (0.0, 0.5), (False, True))),
    RMSprop(lr=0.02, alpha=0.5, eps=1e-4),
]


def problem(dtype, seed=0):
    """Initial params (P,) and STEPS gradients (P,), all exactly representable in dtype."""
    rng = np.random.default_rng(seed)
    params = rng.standard_normal(P).astype(dtype)
    grads = [rng.standard_normal(P).astype(dtype) for _ in range(STEPS)]
    grads[3][:5] = 0  # zero gradients: amsgrad's maximum and the eps guard matter
    return params, grads


def run(opt, params, grads, lrs):
    params = params.copy()
    state = opt.init(params)
    for g, lr in zip(grads, lrs):
        opt.step(params, g, state, lr)
    return params, state


def lrs_for(opt):
    return [opt.lr * factor for factor in LR_FACTORS]


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=repr)
def test_matches_reference_float64(opt):
    params, grads = problem(np.float64)
    lrs = lrs_for(opt)
    ours, state = run(opt, params, grads, lrs)
    expected, moments = reference(opt, params, grads, lrs)
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-13)
    assert set(state) == {*opt.buffer_names(), "step"} and int(state["step"]) == STEPS
    for key in opt.buffer_names():
        np.testing.assert_allclose(state[key], moments[key], rtol=1e-12, atol=1e-13, err_msg=key)


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=repr)
def test_float32_stays_float32_and_close(opt):
    params, grads = problem(np.float32)
    lrs = lrs_for(opt)
    ours, state = run(opt, params, grads, lrs)
    assert ours.dtype == np.float32
    assert all(state[key].dtype == np.float32 for key in opt.buffer_names())
    expected, _ = reference(opt, params, grads, lrs)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel, arguments", [
    (sgd_update, lambda x, e, c: (x, x.copy(), x.copy(), c(1), c(0), c(.9), c(1), True, False)),
    (adam_update, lambda x, e, c: (x, x.copy(), x.copy(), x.copy(), x.copy(), *[c(.5)] * 9)),
    (rmsprop_update, lambda x, e, c: (x, x.copy(), x.copy(), x.copy(), x.copy(), *[c(.5)] * 6)),
])
@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="inspects compiled code")
def test_float32_kernels_have_no_float64_arithmetic(kernel, arguments):
    # A fresh, uncached compilation (cached code cannot be inspected): a float64
    # constant or promotion in the float32 code would show as an fpext instruction.
    options = {key: value for key, value in JIT_OPTIONS.items() if key != "cache"}
    fresh = numba.njit(**options)(kernel.py_func)
    x = np.ones(8, np.float32)
    fresh(*arguments(x, x[:0], np.float32))
    (llvm_ir,) = fresh.inspect_llvm().values()
    assert "fpext" not in llvm_ir


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=repr)
def test_matches_torch(opt):
    torch = pytest.importorskip("torch")
    torch_classes = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam,
                     "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}
    for dtype, tolerance in ((np.float64, dict(rtol=1e-12, atol=1e-13)),
                             (np.float32, dict(rtol=1e-5, atol=1e-6))):
        params, grads = problem(dtype, seed=1)
        lrs = lrs_for(opt)
        ours, state = run(opt, params, grads, lrs)
        tensor = torch.nn.Parameter(torch.from_numpy(params.copy()))
        options = {key: value for key, value in opt.config.items() if key != "name"}
        if "betas" in options:
            options["betas"] = tuple(options["betas"])
        reference_opt = torch_classes[opt.name]([tensor], **options)
        for g, lr in zip(grads, lrs):
            tensor.grad = torch.from_numpy(g.copy())
            reference_opt.param_groups[0]["lr"] = lr
            reference_opt.step()
        np.testing.assert_allclose(ours, tensor.detach().numpy(), **tolerance)
        torch_state = reference_opt.state[tensor]
        for key in opt.buffer_names():
            np.testing.assert_allclose(state[key], torch_state[key].numpy(), **tolerance, err_msg=key)


@pytest.mark.parametrize("opt", [SGD(lr=0.1, momentum=0.9, nesterov=True),
                                 AdamW(amsgrad=True), RMSprop(momentum=0.5, centered=True)], ids=repr)
def test_state_survives_npz_round_trip(opt):
    params, grads = problem(np.float32)
    lrs = lrs_for(opt)
    uninterrupted, _ = run(opt, params, grads, lrs)
    resumed = params.copy()
    state = opt.init(resumed)
    for g, lr in zip(grads[:3], lrs[:3]):
        opt.step(resumed, g, state, lr)
    buffer = io.BytesIO()
    np.savez(buffer, **state)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as archive:
        state = {key: archive[key] for key in archive.files}
    for g, lr in zip(grads[3:], lrs[3:]):
        opt.step(resumed, g, state, lr)
    np.testing.assert_array_equal(resumed, uninterrupted)
    assert int(state["step"]) == STEPS


def test_zero_learning_rate_changes_nothing():
    params, grads = problem(np.float64)
    for opt in (SGD(momentum=0.9), Adam(), AdamW(), RMSprop(centered=True)):
        ours = params.copy()
        opt.step(ours, grads[0], opt.init(ours), 0.0)
        np.testing.assert_array_equal(ours, params)


def test_defaults_are_torchs():
    assert SGD().config == dict(name="sgd", lr=1e-3, momentum=0.0, dampening=0.0,
                                weight_decay=0.0, nesterov=False)
    assert Adam().config == dict(name="adam", lr=1e-3, betas=[0.9, 0.999], eps=1e-8,
                                 weight_decay=0.0, amsgrad=False)
    assert AdamW().config == dict(Adam().config, name="adamw", weight_decay=1e-2)
    assert RMSprop().config == dict(name="rmsprop", lr=1e-2, alpha=0.99, eps=1e-8,
                                    weight_decay=0.0, momentum=0.0, centered=False)


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=repr)
def test_config_round_trips_through_json(opt):
    config = json.loads(json.dumps(opt.config))
    rebuilt = optimizer_from_config(config)
    assert rebuilt == opt and type(rebuilt) is type(opt) and rebuilt.config == opt.config


def test_make_optimizer():
    assert make_optimizer("adam") == Adam()
    assert make_optimizer("adamw", lr=0.5) == AdamW(lr=0.5)
    assert make_optimizer("sgd", lr=0.1) == SGD(lr=0.1)
    assert make_optimizer("rmsprop") == RMSprop()
    custom = RMSprop(lr=0.3, momentum=0.5)
    assert make_optimizer(custom) is custom
    overridden = make_optimizer(custom, lr=0.01)
    assert overridden == RMSprop(lr=0.01, momentum=0.5) and custom.lr == 0.3


@pytest.mark.parametrize("build, error, match", [
    (lambda: SGD(lr=-0.1), ValueError, "lr"),
    (lambda: SGD(lr=float("nan")), ValueError, "lr"),
    (lambda: SGD(momentum=-0.5), ValueError, "momentum"),
    (lambda: SGD(weight_decay=-1), ValueError, "weight_decay"),
    (lambda: SGD(nesterov=True), ValueError, "nesterov"),
    (lambda: SGD(momentum=0.9, dampening=0.1, nesterov=True), ValueError, "nesterov"),
    (lambda: SGD(nesterov=1), TypeError, "nesterov"),
    (lambda: SGD(lr="0.1"), TypeError, "lr"),
    (lambda: Adam(betas=(1.0, 0.9)), ValueError, r"betas\[0\]"),
    (lambda: Adam(betas=(0.9, -0.1)), ValueError, r"betas\[1\]"),
    (lambda: Adam(betas=0.9), TypeError, "betas"),
    (lambda: Adam(eps=-1e-8), ValueError, "eps"),
    (lambda: AdamW(weight_decay=-0.01), ValueError, "weight_decay"),
    (lambda: Adam(amsgrad="yes"), TypeError, "amsgrad"),
    (lambda: RMSprop(alpha=-0.9), ValueError, "alpha"),
    (lambda: RMSprop(momentum=-1), ValueError, "momentum"),
    (lambda: RMSprop(centered=None), TypeError, "centered"),
    (lambda: make_optimizer("adagrad"), ValueError, "'sgd', 'adam', 'adamw', 'rmsprop'"),
    (lambda: make_optimizer(None), TypeError, "optimizer"),
    (lambda: make_optimizer("adam", lr=-1), ValueError, "lr"),
    (lambda: optimizer_from_config({"name": "adam", "momentum": 0.9}), ValueError, "momentum"),
    (lambda: optimizer_from_config({"lr": 0.1}), ValueError, "name"),
])
def test_bad_arguments(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_bad_step_arguments():
    params = np.zeros(P, np.float32)
    opt = SGD(momentum=0.9)
    state = opt.init(params)
    with pytest.raises(ValueError, match="grads"):
        opt.step(params, np.zeros(P + 1, np.float32), state, 0.1)
    with pytest.raises(ValueError, match="grads"):
        opt.step(params, np.zeros(P, np.float64), state, 0.1)
    with pytest.raises(ValueError, match="lr"):
        opt.step(params, params.copy(), state, -0.1)
    with pytest.raises(ValueError, match="state"):
        opt.step(params, params.copy(), Adam().init(params), 0.1)  # no momentum_buffer
    with pytest.raises(TypeError, match="params"):
        opt.init(np.zeros(P, np.int64))
    with pytest.raises(ValueError, match="params"):
        opt.init(np.zeros((P, 2), np.float32)[:, 0])
    assert int(state["step"]) == 0  # nothing was updated
