"""The training step in PyTorch: nn.LSTM / nn.GRU / nn.RNN (time-major) and an nn.Linear
head, MSE, truncation by detaching the carried state, clip_grad_norm_, Adam."""
import torch

from bench.configs import OUTPUT_SIZE
from bench.workloads import CLIP_NORM, LR

LAYERS = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}
THREADS = 2


class Workload:
    impl = "torch"

    def __init__(self, config, x, y, state_dict):
        torch.set_num_threads(THREADS)
        self.rnn = LAYERS[config.cell](config.input_size, config.hidden_size, config.num_layers)
        self.head = torch.nn.Linear(config.hidden_size, OUTPUT_SIZE)
        weights = {name: torch.from_numpy(value) for name, value in state_dict.items()}
        self.head.load_state_dict({"weight": weights.pop("head.weight"), "bias": weights.pop("head.bias")})
        self.rnn.load_state_dict(weights)  # the engine's names are torch's
        self.params = [*self.rnn.parameters(), *self.head.parameters()]
        self.optimizer = torch.optim.Adam(self.params, lr=LR)
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)  # (T, B, I), (T, B, O)
        self.state = None  # zeros on the first step

    def step(self):
        output, state = self.rnn(self.x, self.state)  # output (T, B, H)
        loss = torch.nn.functional.mse_loss(self.head(output), self.y)
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, CLIP_NORM)
        self.optimizer.step()
        # Truncation: the next chunk starts from this state as a constant.
        self.state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        return loss.item()
