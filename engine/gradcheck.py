"""Finite-difference check of loss_and_grad, for users who want to see it for themselves."""
import numpy as np

from engine.bptt import loss_and_grad
from engine.model import Model


def gradient_check(cell="lstm", input_size=3, hidden_size=8, output_size=2, num_layers=1,
                   steps=6, batch=2, loss="mse", nonlinearity="tanh", epsilon=1e-6, seed=0, bidirectional=False):
    """Compare every analytic gradient entry (parameters and initial state) with a float64
    central difference. Returns {"max_rel_error", "worst", "checked"}; the relative error
    of a tensor is max|numeric - analytic| / max(max|analytic|, 1e-12). bidirectional: of a
    bidirectional model (the loss on every step of the whole sequence)."""
    rng = np.random.default_rng(seed)
    model = Model(cell, input_size, hidden_size, output_size, num_layers, nonlinearity,
                  dtype="float64", seed=seed, bidirectional=bidirectional)
    x = rng.standard_normal((steps, batch, input_size))
    if loss == "mse":
        y = rng.standard_normal((steps, batch, output_size))
    else:
        y = rng.integers(0, output_size, (steps, batch))
    state = _random_state(model, batch, rng)
    _, grads = loss_and_grad(model, x, y, loss, state)

    def loss_at():
        return loss_and_grad(model, x, y, loss, state)[0]

    tensors = dict(model.views)
    parts = ("h_0", "c_0") if model.cell == "lstm" else ("h_0",)
    tensors.update(zip(parts, state if model.cell == "lstm" else (state,)))
    worst, worst_name, checked = 0.0, None, 0
    for name, tensor in tensors.items():
        numeric = np.empty(tensor.size)
        flat = tensor.reshape(-1)  # a view: the model (or state) sees every nudge
        for index in range(flat.size):
            original = flat[index]
            flat[index] = original + epsilon
            plus = loss_at()
            flat[index] = original - epsilon
            minus = loss_at()
            flat[index] = original
            numeric[index] = (plus - minus) / (2 * epsilon)
        analytic = grads[name].reshape(-1)
        error = np.max(np.abs(numeric - analytic)) / max(np.max(np.abs(analytic)), 1e-12)
        checked += flat.size
        if error >= worst:
            worst, worst_name = error, name
    return {"max_rel_error": float(worst), "worst": worst_name, "checked": checked}


def _random_state(model, batch, rng):
    shape = (model.num_layers * model.directions, batch, model.hidden_size)
    if model.cell == "lstm":
        return 0.5 * rng.standard_normal(shape), 0.5 * rng.standard_normal(shape)
    return 0.5 * rng.standard_normal(shape)
