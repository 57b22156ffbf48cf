"""Our state dict loaded into torch.nn.LSTM/GRU/RNN (batch_first=False) + nn.Linear:
outputs, final state, loss and every gradient agree in float64. Skipped without torch."""
import numpy as np
import pytest

import engine

torch = pytest.importorskip("torch")
from bench.exactness import torch_loss, torch_model  # noqa: E402  (after torch is known to be there)

REL = 1e-10  # float64 on both sides; relative to each tensor's largest entry


@pytest.mark.parametrize("masked", [False, True], ids=["all-targets", "masked"])
def test_matches_torch(make_case, assert_close, variant, num_layers, loss_name, masked):
    cell, nonlinearity = variant
    case = make_case(cell=cell, nonlinearity=nonlinearity, num_layers=num_layers, loss=loss_name,
                     masked=masked, T=6, B=3, I=2, H=4, O=3, seed=3)
    model, x, y, state = case["model"], case["x"], case["y"], case["state"]
    recurrent, head = torch_model(model)

    if cell == "lstm":
        torch_state = tuple(torch.tensor(part, requires_grad=True) for part in state)
    else:
        torch_state = torch.tensor(state, requires_grad=True)
    outputs, torch_final = recurrent(torch.from_numpy(x), torch_state)
    torch_y_hat = head(outputs)
    loss = torch_loss(loss_name, torch_y_hat, y)
    loss.backward()

    # Forward: outputs and final state.
    y_hat, final = model.forward(x, state)
    assert_close(y_hat, torch_y_hat.detach().numpy(), REL, "y_hat")
    if cell == "lstm":
        assert_close(final[0], torch_final[0].detach().numpy(), REL, "final h")
        assert_close(final[1], torch_final[1].detach().numpy(), REL, "final c")
    else:
        assert_close(final, torch_final.detach().numpy(), REL, "final h")

    # Loss and every gradient, the initial state's included.
    value, grads = engine.loss_and_grad(model, x, y, loss_name, state)
    assert_close(value, loss.item(), REL, "loss")
    torch_grads = {name: p.grad.numpy() for name, p in recurrent.named_parameters()}
    torch_grads.update({f"head.{name}": p.grad.numpy() for name, p in head.named_parameters()})
    if cell == "lstm":
        torch_grads["h_0"], torch_grads["c_0"] = (part.grad.numpy() for part in torch_state)
    else:
        torch_grads["h_0"] = torch_state.grad.numpy()
    assert set(grads) == set(torch_grads)
    for name, expected in torch_grads.items():
        assert_close(grads[name], expected, REL, name)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_torch_weights_load_into_model(cell, assert_close):
    # The other direction: a torch module's own initial weights, given as tensors.
    torch.manual_seed(0)
    modules = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}
    recurrent = modules[cell](3, 5, 2, dtype=torch.float64)
    head = torch.nn.Linear(5, 2, dtype=torch.float64)
    state_dict = dict(recurrent.state_dict())
    state_dict.update({f"head.{name}": value for name, value in head.state_dict().items()})
    model = engine.Model(cell=cell, input_size=3, hidden_size=5, output_size=2, num_layers=2,
                         dtype="float32")
    model.load_state_dict(state_dict)  # torch tensors, float64 -> float32
    x = np.random.default_rng(0).standard_normal((7, 2, 3))
    with torch.no_grad():
        expected = head(recurrent(torch.from_numpy(x))[0]).numpy()
    y_hat, _ = model.forward(x)
    assert y_hat.dtype == np.float32
    assert_close(y_hat, expected, 1e-5, "y_hat")
