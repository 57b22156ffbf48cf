"""How exactly the engine agrees with PyTorch's autograd, in float64: outputs, loss and
every gradient (the initial state's included) of the same model, as the largest
difference relative to each tensor's largest entry, over every cell, 1 and 2 layers,
both losses, with and without missing targets, several seeds (needs torch: extra bench).

    python -m bench.exactness
"""
import numpy as np
import torch

import engine

MODULES = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}
VARIANTS = [("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh"), ("rnn", "relu")]


def torch_model(model):
    """The torch twin of `model`: (recurrent module, linear head), float64, its weights."""
    options = dict(nonlinearity=model.nonlinearity) if model.cell == "rnn" else {}
    recurrent = MODULES[model.cell](model.input_size, model.hidden_size, model.num_layers,
                                    batch_first=False, dtype=torch.float64, bidirectional=model.bidirectional,
                                    **options)
    head = torch.nn.Linear(model.directions * model.hidden_size, model.output_size, dtype=torch.float64)
    weights, head_weights = engine.export.split_state_dict(model.state_dict())
    recurrent.load_state_dict({name: torch.from_numpy(value) for name, value in weights.items()}, strict=True)
    head.load_state_dict({name: torch.from_numpy(value) for name, value in head_weights.items()}, strict=True)
    return recurrent, head


def torch_loss(loss, y_hat, y):
    """PyTorch's reduction="mean" over the counted targets (NaN / -1 left out)."""
    if loss == "mse":
        y = torch.from_numpy(y)
        counted = torch.isfinite(y)
        return torch.nn.functional.mse_loss(y_hat[counted], y[counted], reduction="mean")
    return torch.nn.functional.cross_entropy(y_hat.reshape(-1, y_hat.shape[-1]),
                                             torch.from_numpy(y.reshape(-1)), ignore_index=-1,
                                             reduction="mean")


def torch_results(model, x, y, loss, state):
    """PyTorch's y_hat (T, B, O), final state, loss and gradients keyed as loss_and_grad's
    (the parameters' names, h_0 and for LSTM c_0) for the engine's model and data."""
    recurrent, head = torch_model(model)
    parts = state if model.cell == "lstm" else (state,)
    torch_state = tuple(torch.tensor(part, requires_grad=True) for part in parts)
    outputs, final = recurrent(torch.from_numpy(x), torch_state if model.cell == "lstm" else torch_state[0])
    y_hat = head(outputs)
    value = torch_loss(loss, y_hat, y)
    value.backward()
    grads = {name: p.grad.numpy() for name, p in recurrent.named_parameters()}
    grads.update({f"head.{name}": p.grad.numpy() for name, p in head.named_parameters()})
    grads.update(zip(("h_0", "c_0"), (part.grad.numpy() for part in torch_state)))
    final = tuple(part.detach().numpy() for part in final) if model.cell == "lstm" else final.detach().numpy()
    return y_hat.detach().numpy(), final, value.item(), grads


def relative_difference(actual, expected):
    """max |actual - expected| over the largest entry of either (a tensor-relative error)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(np.abs(actual).max(initial=0.0), np.abs(expected).max(initial=0.0), 1e-300)
    return np.abs(actual - expected).max(initial=0.0) / scale


def case(cell, nonlinearity, layers, loss, masked, seed, T=50, B=4, I=3, H=16, O=3):
    """A float64 model, data (x, y) and a random initial state; masked: a third of the
    targets missing."""
    rng = np.random.default_rng(seed)
    model = engine.Model(cell, I, H, O, num_layers=layers, nonlinearity=nonlinearity, dtype="float64", seed=seed)
    x = rng.standard_normal((T, B, I))
    if loss == "mse":
        y = rng.standard_normal((T, B, O))
        y[masked & (rng.random(y.shape) < 0.35)] = np.nan
    else:
        y = rng.integers(0, O, size=(T, B))
        y[masked & (rng.random(y.shape) < 0.35)] = -1
    state = tuple(0.5 * rng.standard_normal((layers, B, H)) for _ in range(2 if cell == "lstm" else 1))
    return model, x, y, state if cell == "lstm" else state[0]


def largest_difference(seeds=3):
    """(largest tensor-relative difference, cases compared) over every variant."""
    worst, count = 0.0, 0
    for cell, nonlinearity in VARIANTS:
        for layers in (1, 2):
            for loss in ("mse", "cross_entropy"):
                for masked in (False, True):
                    for seed in range(seeds):
                        model, x, y, state = case(cell, nonlinearity, layers, loss, masked, seed)
                        y_hat, final, value, grads = torch_results(model, x, y, loss, state)
                        ours, _ = model.forward(x, state)
                        our_value, our_grads = engine.loss_and_grad(model, x, y, loss, state)
                        differences = [relative_difference(ours, y_hat), relative_difference(our_value, value)]
                        differences += [relative_difference(our_grads[name], grads[name]) for name in grads]
                        worst, count = max(worst, *differences), count + 1
    return worst, count


if __name__ == "__main__":
    worst, count = largest_difference()
    print(f"engine against PyTorch {torch.__version__} autograd, float64, {count} cases (T=50, B=4, "
          f"H=16): largest difference {worst:.2g} of a tensor's largest entry")
